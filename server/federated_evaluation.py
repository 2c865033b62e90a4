"""Evaluation without a shared test set (a node-local run without ``server-test-path``).

After training, the server sends the reported model (and the last one, when they differ)
to every party in one evaluate message; each party answers the loss and accuracy of each
on its own held-out test part and the sizes of its parts. The run's test accuracy is the
size-weighted mean over the parties that answered; each party's figures are kept too. The
same rule serves both protocols (one-shot after central training, FedProx/FedAvg after the
last round), and the extra round's bytes are metered like every other message.

What the server learns from a party here: the sizes of its training, validation and test
parts, its data's format, how many rows it dropped, and one loss and accuracy per model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from server.metered_grid import MeteredGrid

__all__ = ["FederatedTest", "federated_test", "weighted_test"]

log = logging.getLogger("flwr.mixupfl.federated-test")


@dataclass
class FederatedTest:
    """Size-weighted ``(loss, accuracy)`` per model step, each party's answer, who refused,
    and what the round cost."""

    per_step: dict[int, tuple[float, float]]
    parties: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(int(p["num-test"]) for p in self.parties)


def weighted_test(replies: list[Mapping[str, float]], steps: list[int]) -> dict[int, tuple[float, float]]:
    """Size-weighted mean test loss and accuracy per step over the replies."""
    total = sum(float(r["num-examples"]) for r in replies)
    return {step: (sum(float(r["num-examples"]) * float(r[f"test-loss-{step}"]) for r in replies) / total,
                   sum(float(r["num-examples"]) * float(r[f"test-accuracy-{step}"]) for r in replies) / total)
            for step in steps}


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _valid_reply(metrics: Mapping[str, object], steps: list[int]) -> str | None:
    """Why a party's answer cannot be used, or ``None``."""
    count = metrics.get("num-examples")
    if not _number(count) or count != int(count) or count < 1:
        return f"num-examples {count!r} is not a positive integer"
    for step in steps:
        loss, acc = metrics.get(f"test-loss-{step}"), metrics.get(f"test-accuracy-{step}")
        if not _number(loss) or loss < 0:
            return f"test-loss-{step} = {loss!r} is not a finite, non-negative number"
        if not _number(acc) or not 0 <= acc <= 1:
            return f"test-accuracy-{step} = {acc!r} is not in [0, 1]"
    return None


def _described(node: int, metrics: Mapping[str, object], data: Mapping[str, object], steps: list[int]) -> dict:
    party = {"node-id": node, "partition-id": int(metrics.get("partition-id", -1)),
             "num-test": int(metrics["num-examples"])}
    for key in ("source", "num-train", "num-val", "dropped"):
        value = data.get(key)
        if key == "source" and isinstance(value, str) and len(value) <= 32:
            party["data-format"] = value
        elif key != "source" and _number(value) and value >= 0:
            party[key] = int(value)
    for step in steps:
        party[f"test-loss-{step}"] = float(metrics[f"test-loss-{step}"])
        party[f"test-accuracy-{step}"] = float(metrics[f"test-accuracy-{step}"])
    return party


def federated_test(grid: MeteredGrid, node_ids: list[int], models: Mapping[int, ArrayRecord], *,
                   timeout: float) -> FederatedTest:
    """Send every model to every party in one message; the size-weighted test figures.

    Raises
    ------
    RuntimeError
        No party answered with usable figures.
    """
    steps = sorted(models)
    started = time.perf_counter()
    sent_before, received_before = grid.total_bytes_sent, grid.total_bytes_received
    content = {f"model-{step}": models[step] for step in steps}
    messages = [Message(RecordDict({**content, "config": ConfigRecord({"test-steps": steps})}), dst_node_id=nid,
                        message_type=MessageType.EVALUATE) for nid in node_ids]
    answers, refused = [], []
    for reply in grid.iter_replies(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            refused.append({"node-id": node, "reason": reply.error.reason})
            log.error("federated test: node %s failed: %s", node, reply.error.reason)
            continue
        metrics = dict(reply.content["metrics"]) if "metrics" in reply.content else {}
        reason = _valid_reply(metrics, steps)
        if reason is not None:
            refused.append({"node-id": node, "reason": reason})
            log.error("federated test answer of node %s rejected: %s", node, reason)
            continue
        data = dict(reply.content["data"]) if "data" in reply.content else {}
        answers.append((metrics, _described(node, metrics, data, steps)))
    if not answers:
        raise RuntimeError(f"no party answered the federated test round: {refused}")
    # A fixed order of the sums: the same run gives the same figures whatever the arrival order.
    answers.sort(key=lambda a: (a[1]["partition-id"], a[1]["node-id"]))
    per_step = weighted_test([m for m, _ in answers], steps)
    figures = {"models": steps, "parties_answered": len(answers), "refused": refused,
               "bytes_downloaded": grid.total_bytes_sent - sent_before,
               "bytes_uploaded": grid.total_bytes_received - received_before,
               "seconds": time.perf_counter() - started}
    result = FederatedTest(per_step=per_step, parties=[d for _, d in answers], refused=refused, figures=figures)
    log.info("federated test: %d parties, %d test rows, accuracy %s", len(answers), result.rows,
             ", ".join(f"{100 * acc:.2f} % (step {s})" for s, (_, acc) in per_step.items()))
    return result
