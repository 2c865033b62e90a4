"""Every FedProx / FedAvg reply screened before Flower aggregates it, and every round's
participation accounted for.

:class:`ScreenedReplies` is a mixin placed before a Flower strategy (FedAvg, FedProx,
FedMedian, FedTrimmedAvg, Krum) in the class bases. It overrides only the hooks Flower
provides:

* ``configure_train`` / ``configure_evaluate``: remember the global model's layout and which
  of the run's parties the round's messages go to; a round starts only while at least
  ``quorum`` of the run's parties are connected (Flower's own sampling would wait forever for
  its minimum), else :class:`QuorumLost`.
* ``aggregate_train`` / ``aggregate_evaluate``: each reply is attributed to the node the
  message went to (an error reply may come from the SuperLink on a dead node's behalf),
  checked by :class:`server.update_check.UpdateCheck`, and only the accepted ones, in party
  order, are handed to the Flower strategy. Fewer than ``quorum`` accepted replies fail the
  run with :class:`QuorumLost`.

Each round and stage is recorded as a :class:`common.run_summary.RoundParticipation`: who
contributed, and who did not with the true reason (not connected, no reply within the round
timeout, an error reply and its text, or a rejection and its reason).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from common.run_summary import LeftOut, RoundParticipation
from server.update_check import ArrayLayout, UpdateCheck, UpdateRejected, agreeing_key_set, layout_of

__all__ = ["QuorumLost", "ScreenedReplies"]

log = logging.getLogger("flwr.mixupfl.server")  # child of flwr: shown in run logs


class QuorumLost(RuntimeError):
    """Fewer than ``quorum`` parties were connected for, or contributed to, a round. Carries
    the participation recorded so far, for the failed run's summary; whoever ran the strategy
    adds the rounds it completed and their test figures (``completed_rounds``, ``history``)."""

    def __init__(self, message: str, *, rounds: list[RoundParticipation]) -> None:
        super().__init__(message)
        self.rounds = rounds
        self.completed_rounds = 0
        self.history: list[dict] = []


class ScreenedReplies:
    """Mixin for a Flower strategy: screen every reply, keep party order, enforce the quorum.

    Parameters
    ----------
    update_check : UpdateCheck
        What a valid reply of this run looks like.
    node_ids : sequence of int
        The run's parties (the nodes connected when it started); messages go to those of them
        still connected, never to a node that joined later.
    quorum : int
        Fewest accepted replies a round proceeds with (and fewest connected parties it starts with).
    round_timeout : float
        Seconds a round waits for replies (Flower's ``timeout``); named in "no reply" reasons.

    Notes
    -----
    Replies are checked against the global model as first sent (the initial model: names,
    shapes, dtypes of the run's classifier). Flower's aggregators return float64 for an
    integer buffer (BatchNorm's batch count), which the parties cast back when they load the
    global model, so their replies keep the model's own dtypes every round.
    """

    rounds: list[RoundParticipation]

    def __init__(self, *args, update_check: UpdateCheck, node_ids: Sequence[int], quorum: int,  # noqa: ANN002
                 round_timeout: float, **kwargs) -> None:  # noqa: ANN003
        super().__init__(*args, **kwargs)
        self.update_check = update_check
        self.node_ids = tuple(sorted(node_ids))
        self.quorum = quorum
        self.round_timeout = round_timeout
        self.rounds = []
        self._layout: ArrayLayout | None = None
        self._sent: dict[tuple[int, str], tuple[list[int], list[int]]] = {}
        self._partition_of: dict[int, int] = {}
        self._grid: Grid | None = None

    # -- configure: to the run's connected parties only, never below quorum --------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self._layout is None:  # the model's definition, as first sent (see the class docstring)
            self._layout = layout_of(arrays)
        return self._addressed(server_round, "train", grid,
                               lambda: super(ScreenedReplies, self).configure_train(server_round, arrays, config, grid))

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if getattr(self, "fraction_evaluate", 1.0) == 0.0:  # Flower's switch: no federated evaluation
            return super().configure_evaluate(server_round, arrays, config, grid)
        return self._addressed(server_round, "evaluate", grid,
                               lambda: super(ScreenedReplies, self).configure_evaluate(server_round, arrays, config,
                                                                                       grid))

    def _addressed(self, server_round: int, stage: str, grid: Grid,
                   configure: Callable[[], Iterable[Message]]) -> list[Message]:
        self._grid = grid
        connected = sorted(set(grid.get_node_ids()) & set(self.node_ids))
        absent = [nid for nid in self.node_ids if nid not in connected]
        if len(connected) < self.quorum:
            self._record(server_round, stage, [], [self._left_out(nid, "not connected", "left the federation")
                                                   for nid in absent])
            raise QuorumLost(f"round {server_round} ({stage}): only {len(connected)} of the run's {len(self.node_ids)} "
                             f"parties are connected; quorum is {self.quorum}", rounds=list(self.rounds))
        messages = [m for m in configure() if m.metadata.dst_node_id in connected]
        self._sent[(server_round, stage)] = ([m.metadata.dst_node_id for m in messages], absent)
        return messages

    # -- aggregate: screened replies in party order ----------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]):  # noqa: ANN201
        layout = self._layout
        accepted = self._screen(server_round, "train", replies,
                                lambda content: self.update_check.check_train(content, layout))
        return super().aggregate_train(server_round, accepted)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if (server_round, "evaluate") not in self._sent:  # no evaluate messages this round
            return super().aggregate_evaluate(server_round, replies)
        accepted = self._screen(server_round, "evaluate", replies, self.update_check.check_evaluate)
        return super().aggregate_evaluate(server_round, accepted)

    def _screen(self, server_round: int, stage: str, replies: Iterable[Message],
                check: Callable[[RecordDict], int]) -> list[Message]:
        sent, absent = self._sent.pop((server_round, stage))
        left_out = [self._left_out(nid, "not connected", "left the federation") for nid in absent]
        candidates: list[tuple[int, int, Message]] = []
        answered: set[int] = set()
        for msg in replies:
            node = self._destination(msg)
            if node not in sent or node in answered:
                log.warning("round %d (%s): ignored an unexpected reply for node %s", server_round, stage, node)
                continue
            answered.add(node)
            if msg.has_error():
                log.debug("round %d (%s): error reply for node %s in full: %s", server_round, stage, node,
                          msg.error.reason)
                left_out.append(self._left_out(node, "error reply", short_error(msg.error.reason)))
                continue
            try:
                pid = check(msg.content)
            except UpdateRejected as err:
                left_out.append(self._left_out(node, "rejected", str(err), claimed=_claimed_partition(msg)))
                continue
            candidates.append((pid, node, msg))
        candidates.sort(key=lambda c: (c[0], c[1]))
        candidates = self._consistent(candidates, left_out)
        for nid in sent:
            if nid not in answered:
                left_out.append(self._left_out(nid, "no reply", f"no reply within {self.round_timeout:g} s"))
        for pid, node, _ in candidates:
            self._partition_of[node] = pid
        self._record(server_round, stage, candidates, left_out)
        for entry in left_out:
            log.error("round %d (%s): node %s (party %s) left out, %s: %s", server_round, stage, entry.node_id,
                      entry.partition_id, entry.outcome, entry.reason)
        if len(candidates) < self.quorum:
            raise QuorumLost(f"round {server_round} ({stage}): {len(candidates)} accepted replies of "
                             f"{len(sent)} sent; quorum is {self.quorum}", rounds=list(self.rounds))
        return [msg for _, _, msg in candidates]

    def _consistent(self, candidates: list[tuple[int, int, Message]],
                    left_out: list[LeftOut]) -> list[tuple[int, int, Message]]:
        """Checks across the replies of one round: one node per partition (both claimants of a
        shared partition are rejected), a node keeps its partition across rounds, and every
        reply carries the metric keys most replies carry (Flower aggregates only alike records)."""
        claimants: dict[int, list[int]] = defaultdict(list)
        for pid, node, _ in candidates:
            claimants[pid].append(node)
        kept = []
        for pid, node, msg in candidates:
            known = self._partition_of.get(node)
            if len(claimants[pid]) > 1:
                reason = f"partition-id {pid} claimed by nodes {', '.join(map(str, claimants[pid]))} in one round"
            elif known is not None and known != pid:
                reason = f"partition-id {pid}, but this node answered as party {known} before"
            else:
                kept.append((pid, node, msg))
                continue
            left_out.append(self._left_out(node, "rejected", reason, claimed=pid))
        keys = agreeing_key_set(frozenset(msg.content.metric_records["metrics"].keys()) for _, _, msg in kept)
        agreeing = []
        for pid, node, msg in kept:
            own = frozenset(msg.content.metric_records["metrics"].keys())
            if own == keys:
                agreeing.append((pid, node, msg))
            else:
                left_out.append(self._left_out(node, "rejected", f"metric keys {sorted(own)} differ from the other "
                                               f"parties' {sorted(keys or ())}", claimed=pid))
        return agreeing

    # -- accounting ------------------------------------------------------------------------
    def _destination(self, msg: Message) -> int:
        """The node a reply answers for: the one its message went to (the SuperLink answers
        with an error of its own for a node that is gone), else the reply's sender."""
        destination_of = getattr(self._grid, "destination_of", None)
        node = destination_of(msg) if destination_of is not None else None
        return int(node if node is not None else msg.metadata.src_node_id)

    def _left_out(self, node: int, outcome: str, reason: str, *, claimed: int | None = None) -> LeftOut:
        known = self._partition_of.get(node)
        return LeftOut(node_id=node, partition_id=known if known is not None else claimed, outcome=outcome,
                       reason=reason)

    def _record(self, server_round: int, stage: str, accepted: list[tuple[int, int, Message]],
                left_out: list[LeftOut]) -> None:
        self.rounds.append(RoundParticipation(
            round=server_round, stage=stage, contributed_partitions=[pid for pid, _, _ in accepted],
            contributed_nodes=[node for _, node, _ in accepted],
            left_out=sorted(left_out, key=lambda e: (e.partition_id is None, e.partition_id or 0, e.node_id)),
        ))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_error(reason: str, *, limit: int = 300) -> str:
    """An error reply's text for the summary: its last non-empty line without terminal colour
    codes (a simulated party's reply carries the whole Ray traceback; its last line names the
    exception), at most ``limit`` characters."""
    lines = [line.strip() for line in _ANSI.sub("", reason or "").splitlines() if line.strip(" '>")]
    text = lines[-1].strip(" '>") if lines else "error reply without a reason"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _claimed_partition(msg: Message) -> int | None:
    """The partition id a (rejected) reply claims, when it is an integer at all."""
    try:
        value = msg.content.metric_records["metrics"]["partition-id"]
    except (KeyError, TypeError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
