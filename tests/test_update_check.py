"""FedProx / FedAvg replies are screened before aggregation; robust rules give the known
robust results; a round goes on without a bad, silent or crashed party and stops below quorum.

The strategies run here through Flower's own ``Strategy.start`` on an in-process grid whose
parties answer by a script (no SuperLink, no ClientApp): every case is exact and fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.run_summary import RunSummary
from server.metered_grid import MeteredGrid
from server.strategies.federated import federated_strategy
from server.strategies.screening import QuorumLost
from server.update_check import UpdateCheck, UpdateRejected, agreeing_key_set, layout_of
from tests.fake_grid import RecordingGrid

GLOBAL = ArrayRecord({"w": Array(np.zeros((2, 3), np.float32)), "count": Array(np.array(0, np.int64))})
LAYOUT = layout_of(GLOBAL)
CHECK = UpdateCheck(max_examples=1000, num_partitions=5)


def _weights(value: float = 1.0, **changes) -> dict[str, np.ndarray]:
    arrays = {"w": np.full((2, 3), value, np.float32), "count": np.array(3, np.int64)}
    arrays.update(changes)
    return arrays


def _train_reply(arrays=None, *, pid=0, n=100, **metrics) -> RecordDict:
    arrays = _weights() if arrays is None else arrays
    record = {"num-examples": n, "partition-id": pid, "train-loss": 0.5, **metrics}
    return RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                       "metrics": MetricRecord({k: v for k, v in record.items() if v is not None})})


def _evaluate_reply(*, pid=0, n=10, loss=0.3, **metrics) -> RecordDict:
    return RecordDict({"metrics": MetricRecord({"num-examples": n, "partition-id": pid, "val-loss": loss,
                                                "val-accuracy": 0.9, **metrics})})


# -- the checks, one reply at a time ---------------------------------------------------------
def test_a_valid_update_is_accepted_unchanged():
    content = _train_reply(pid=3)
    before = {k: v.numpy().tobytes() for k, v in content["arrays"].items()}
    assert CHECK.check_train(content, LAYOUT) == 3
    assert {k: v.numpy().tobytes() for k, v in content["arrays"].items()} == before
    assert CHECK.check_evaluate(_evaluate_reply(pid=4)) == 4


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (_train_reply(_weights(math.nan)), "w holds NaN or inf"),
        (_train_reply(_weights(math.inf)), "w holds NaN or inf"),
        (_train_reply(_weights(w=np.zeros((3, 2), np.float32))),
         r"w has shape \(3, 2\), the global model's is \(2, 3\)"),
        (_train_reply(_weights(w=np.zeros((2, 3), np.float64))), "w has dtype float64, the global model's is float32"),
        (_train_reply(_weights(count=np.array(3.0, np.float32))), "count has dtype float32"),
        (_train_reply({"w": np.zeros((2, 3), np.float32)}), r"missing \['count'\]"),
        (_train_reply(_weights(extra=np.zeros(1, np.float32))), r"unexpected \['extra'\]"),
        (_train_reply(n=-50), r"num-examples = -50 is not in \[1, 1000\]"),
        (_train_reply(n=0), r"num-examples = 0 is not in \[1, 1000\]"),
        (_train_reply(n=10**9), r"num-examples = 1000000000 is not in \[1, 1000\]"),
        (_train_reply(n=2.5), "num-examples = 2.5 is not an integer"),
        (_train_reply(n=None), "num-examples = None is not an integer"),
        (_train_reply(pid=5), r"partition-id 5 is not in \[0, 5\)"),
        (_train_reply(pid=-1), r"partition-id -1 is not in \[0, 5\)"),
        (_train_reply(**{"train-loss": math.nan}), "metric train-loss = nan is not a number"),
        (_train_reply(**{"train-loss": math.inf}), "metric train-loss = inf is not finite"),
        (_train_reply(**{"node-id": 7}), "may not set the server's own fields: node-id"),
    ],
)
def test_a_bad_update_is_rejected_with_its_reason(content, reason):
    with pytest.raises(UpdateRejected, match=reason):
        CHECK.check_train(content, LAYOUT)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (_evaluate_reply(loss=-1e6), r"metric val-loss = -1e\+06 is outside \[0, inf\]"),
        (_evaluate_reply(loss=math.nan), "metric val-loss = nan is not a number"),
        (_evaluate_reply(loss=math.inf), "metric val-loss = inf is not finite"),
        (_evaluate_reply(**{"val-accuracy": 1.5}), r"val-accuracy = 1.5 is outside \[0, 1\]"),
        (_evaluate_reply(n=-3), "num-examples = -3"),
        (RecordDict({"metrics": MetricRecord({"num-examples": 3, "partition-id": 0})}), "no val-loss"),
    ],
)
def test_a_bad_validation_report_is_rejected_with_its_reason(content, reason):
    with pytest.raises(UpdateRejected, match=reason):
        CHECK.check_evaluate(content)


def test_the_agreeing_metric_keys_are_the_majoritys():
    a, b = frozenset({"x", "y"}), frozenset({"x", "z"})
    assert agreeing_key_set([b, a, a]) == a
    assert agreeing_key_set([b, a]) == b  # a tie: the first (callers sort by party)
    assert agreeing_key_set([]) is None


# -- the strategies through Flower's loop on a scripted grid ----------------------------------
@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)


class ScriptedGrid(RecordingGrid):
    """Nodes 11, 12, ... answer by ``script(node, msg)``: a RecordDict, an ``Error``, or ``None``
    (no reply). ``error_sender`` sends error replies from another node (as the SuperLink does
    for a node that is gone). ``leave`` maps a round to the nodes that disconnect before it."""

    def __init__(self, script, *, nodes=4, error_sender=None, leave=None):
        self.script, self.nodes = script, [11 + i for i in range(nodes)]
        self.error_sender, self.leave = error_sender, leave or {}
        super().__init__()
        self.round = 0

    def get_node_ids(self):
        gone = {n for r, nodes in self.leave.items() if r <= self.round + 1 for n in nodes}
        return [n for n in self.nodes if n not in gone]

    def pull_messages(self, message_ids):
        replies = []
        for mid in message_ids:
            msg = self.pushed[mid]
            answer = self.script(msg.metadata.dst_node_id, msg)
            if answer is None:
                continue
            reply = Message(answer, reply_to=msg)
            reply.metadata.__dict__["_reply_to_message_id"] = mid
            if isinstance(answer, Error) and self.error_sender is not None:
                reply.metadata.__dict__["_src_node_id"] = self.error_sender
            replies.append(reply)
        return replies

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(self.pull_messages(self.push_messages(messages)))
        self.round += 1
        return replies


def _strategy(grid, aggregation="mean", *, validating=False, quorum=2, **kw):
    return federated_strategy(
        proximal=True, aggregation=aggregation, validating=validating, proximal_mu=0.01,
        trim_fraction=kw.pop("trim_fraction", 0.25), krum_malicious=kw.pop("krum_malicious", 1),
        update_check=CHECK, node_ids=list(grid.get_node_ids()), quorum=quorum,
        round_timeout=kw.pop("round_timeout", 5.0),
        fraction_evaluate=1.0 if validating else 0.0, min_available_nodes=quorum, min_train_nodes=quorum,
        min_evaluate_nodes=quorum, **kw)


def _honest(values):
    """Parties that train to ``values[k]`` everywhere, with partition id = position."""
    def script(node, msg):
        pid = node - 11
        if msg.metadata.message_type == "train":
            return _train_reply(_weights(values[pid]), pid=pid, n=100 + pid)
        return _evaluate_reply(pid=pid)
    return script


@pytest.mark.parametrize(
    ("aggregation", "nodes", "expected"),
    [
        ("median", 4, np.median([1.0, 2.0, 3.0, 1e6])),  # 2.5: the outlier moves it by half a step only
        ("trimmed-mean", 4, 2.5),  # cut 1 of 4 at each end: mean of 2 and 3
        ("krum", 5, 2.5),  # f = 1: the model closest to its 2 nearest others (2.0 and 3.0)
    ],
)
def test_robust_rules_ignore_one_huge_model(aggregation, nodes, expected):
    values = [1.0, 2.0, 3.0, 1e6, 2.5][:nodes]
    grid = ScriptedGrid(_honest(values), nodes=nodes)
    strategy = _strategy(grid, aggregation)
    assert "FedProx" in type(strategy).__name__
    result = strategy.start(grid=grid, initial_arrays=GLOBAL, num_rounds=1, timeout=5.0)
    np.testing.assert_allclose(result.arrays["w"].numpy(), expected, rtol=1e-6)
    assert int(result.arrays["count"].numpy()) == 3
    mean = _strategy(ScriptedGrid(_honest(values), nodes=nodes), "mean").start(
        grid=ScriptedGrid(_honest(values), nodes=nodes), initial_arrays=GLOBAL, num_rounds=1, timeout=5.0)
    assert float(mean.arrays["w"].numpy().max()) > 1e5  # the plain mean is dragged away


def test_fedprox_sends_mu_with_a_robust_rule():
    seen = []

    def script(node, msg):
        seen.append(msg.content["config"].get("proximal-mu"))
        return _honest([1.0, 2.0, 3.0, 4.0])(node, msg)

    grid = ScriptedGrid(script)
    _strategy(grid, "median").start(grid=grid, initial_arrays=GLOBAL, num_rounds=1, timeout=5.0)
    assert seen == [0.01] * 4


def test_one_accepted_update_passes_bit_identically():
    odd = _weights(w=np.array([[0.1, 1e-30, -3.3], [7.0, 2.0 / 3.0, 5e-8]], np.float32))

    def script(node, msg):
        return _train_reply(odd, pid=0) if node == 11 else _train_reply(_weights(math.nan), pid=1)

    grid = ScriptedGrid(script, nodes=2)
    result = _strategy(grid, quorum=1).start(grid=grid, initial_arrays=GLOBAL, num_rounds=1, timeout=5.0)
    assert result.arrays["w"].numpy().tobytes() == odd["w"].tobytes()


def test_bad_silent_and_crashed_parties_are_left_out_with_the_true_reason():
    """Party 1 sends NaN, party 2 a negative size, party 3 crashes in round 2 (its error
    reply sent by the SuperLink, node 1), party 4 reports a validation loss of -1e6, party 5
    never answers; the rounds go on with the rest and every left-out reply is listed."""
    def script(node, msg):
        pid, stage = node - 11, msg.metadata.message_type
        rnd = int(msg.content["config"]["server-round"])
        if pid == 5 or (pid == 3 and rnd == 2):
            return None if pid == 5 else Error(code=0, reason="ClientApp crashed: boom")
        if stage == "evaluate":
            return _evaluate_reply(pid=pid, loss=-1e6 if pid == 4 else 0.3)
        if pid == 1:
            return _train_reply(_weights(math.nan), pid=pid)
        return _train_reply(_weights(1.0 + pid), pid=pid, n=-5 if pid == 2 else 100)

    grid = MeteredGrid(ScriptedGrid(script, nodes=6, error_sender=1))
    strategy = _strategy(grid, "median", validating=True, round_timeout=0.3)
    result = strategy.start(grid=grid, initial_arrays=GLOBAL, num_rounds=2, timeout=0.3)
    assert np.isfinite(result.arrays["w"].numpy()).all()
    rows = {(r.round, r.stage): r for r in strategy.rounds}
    assert rows[(1, "train")].contributed_partitions == [0, 3, 4]
    assert rows[(2, "train")].contributed_partitions == [0, 4]
    assert rows[(1, "evaluate")].contributed_partitions == [0, 1, 2, 3]
    why = {(r.round, r.stage, e.partition_id): (e.node_id, e.outcome, e.reason) for r in strategy.rounds
           for e in r.left_out}
    assert why[(1, "train", 1)][1:] == ("rejected", "w holds NaN or inf")
    assert why[(1, "train", 2)][1] == "rejected" and "num-examples = -5" in why[(1, "train", 2)][2]
    assert why[(2, "train", 3)] == (14, "error reply", "ClientApp crashed: boom")  # its node, not the SuperLink
    assert why[(1, "evaluate", 4)][1] == "rejected" and "val-loss = -1e+06" in why[(1, "evaluate", 4)][2]
    assert why[(1, "train", None)] == (16, "no reply", "no reply within 0.3 s")
    np.testing.assert_allclose(result.arrays["w"].numpy(), 1.0 + np.median([0, 4]))  # round 2: parties 0 and 4
    assert strategy.selected is not None and strategy.selected.val_loss == pytest.approx(0.3)


def test_a_round_below_quorum_fails_with_the_participation_so_far():
    def script(node, msg):
        rnd = int(msg.content["config"]["server-round"])
        return None if (node != 11 and rnd == 2) else _honest([1.0, 2.0, 3.0])(node, msg)

    grid = ScriptedGrid(script, nodes=3)
    strategy = _strategy(grid, quorum=2)
    with pytest.raises(QuorumLost, match=r"round 2 \(train\): 1 accepted replies of 3 sent; quorum is 2") as err:
        strategy.start(grid=grid, initial_arrays=GLOBAL, num_rounds=3, timeout=5.0)
    assert [(r.round, r.contributed_partitions) for r in err.value.rounds] == [(1, [0, 1, 2]), (2, [0])]
    assert {e.outcome for e in err.value.rounds[-1].left_out} == {"no reply"}


def test_parties_that_left_are_not_waited_for():
    """A SuperNode gone mid-run: Flower's sampling would wait for min_available_nodes forever;
    the round goes on with the connected parties, and below quorum the run stops at once."""
    grid = ScriptedGrid(_honest([1.0, 2.0, 3.0]), nodes=3, leave={2: [13]})
    strategy = _strategy(grid, quorum=2)
    strategy.start(grid=grid, initial_arrays=GLOBAL, num_rounds=2, timeout=5.0)
    last = strategy.rounds[-1]
    assert last.contributed_partitions == [0, 1]
    assert [(e.node_id, e.partition_id, e.outcome) for e in last.left_out] == [(13, 2, "not connected")]
    grid = ScriptedGrid(_honest([1.0, 2.0, 3.0]), nodes=3, leave={2: [12, 13]})
    with pytest.raises(QuorumLost, match="only 1 of the run's 3 parties are connected"):
        _strategy(grid, quorum=2).start(grid=grid, initial_arrays=GLOBAL, num_rounds=2, timeout=5.0)


def test_a_shared_partition_flags_both_claimants():
    def script(node, msg):
        return _train_reply(_weights(1.0), pid=0 if node in (11, 12) else node - 11)

    grid = ScriptedGrid(script, nodes=4)
    strategy = _strategy(grid)
    strategy.start(grid=grid, initial_arrays=GLOBAL, num_rounds=1, timeout=5.0)
    row = strategy.rounds[0]
    assert row.contributed_partitions == [2, 3]
    assert sorted(e.node_id for e in row.left_out) == [11, 12]
    assert all("claimed by nodes 11, 12" in e.reason for e in row.left_out)


def test_old_summaries_read_without_the_new_fields():
    fields = RunSummary.model_fields
    assert fields["aggregation"].default is None and fields["round_participation"].default_factory() == []


def test_an_error_replys_reason_is_its_last_line_without_colour_codes():
    from server.strategies.screening import short_error

    ray = ("<class 'ray.exceptions.RayTaskError'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m\n  File x\n"
           "Exception ClientAppException occurred. Message: party crashed in round 2'>")
    assert short_error(ray) == "Exception ClientAppException occurred. Message: party crashed in round 2"
    assert short_error("") == "error reply without a reason"
    assert len(short_error("x" * 1000)) == 300


def test_a_run_below_quorum_writes_a_failed_summary_under_its_own_name(tmp_path):
    import json
    import time

    from common.config import parse_run_config
    from common.run_summary import LeftOut, RoundParticipation
    from server.run_files import write_failed as _write_failed

    cfg = parse_run_config({"strategy": "fedprox", "output-dir": str(tmp_path), "run-name": "lost"})
    rounds = [RoundParticipation(round=1, stage="train", contributed_partitions=[0], contributed_nodes=[11],
                                 left_out=[LeftOut(node_id=12, partition_id=1, outcome="no reply", reason="no reply")])]
    err = QuorumLost("round 1 (train): 1 accepted replies of 2 sent; quorum is 2", rounds=rounds)
    _write_failed(cfg, err, [11, 12], started=time.perf_counter(), started_utc="now")
    assert not (tmp_path / "lost.json").exists()  # a sweep never mistakes it for a finished run
    failed = json.loads((tmp_path / "lost.failed.json").read_text())
    assert failed["status"] == "failed" and "quorum is 2" in failed["reason"]
    assert failed["round_participation"][0]["left_out"][0]["outcome"] == "no reply"
