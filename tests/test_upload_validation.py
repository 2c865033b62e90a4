"""Server-side checks on one-shot uploads: bad ones are rejected with a reason, the rest is used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from server.metered_grid import MeteredGrid
from common.encodings import get_encoding
from server.collection import collect_releases
from server.validation import PartitionConflict, UploadCheck, UploadRejected

SINGULARIZED, INSTAHIDE = get_encoding("singularized"), get_encoding("instahide")
FIRST_RELEASE_METRICS = SINGULARIZED.required_metrics("exact", first=True)

ROWS, DIM, CLASSES = 6, 4, 3


def _release(rows=ROWS, *, pid=0, dtype=np.float32, val=True, **changes):
    rng = np.random.default_rng(pid)
    y = rng.dirichlet(np.ones(CLASSES), size=rows).astype(np.float32)
    arrays = {"x": rng.random((rows, DIM)).astype(dtype), "y": y}
    if val:
        arrays["val-x"] = rng.random((2, DIM)).astype(dtype)
        arrays["val-y"] = np.full((2, CLASSES), 1 / CLASSES, np.float32)
    metrics = {"partition-id": pid, "num-examples": rows, "num-val": 2 if val else 0,
               **{key: 1.0 for key in FIRST_RELEASE_METRICS}}
    for key, value in changes.items():
        (metrics if key in metrics else arrays)[key] = value
    return arrays, metrics


def _check(**kwargs):
    defaults = dict(row_shape=(DIM,), num_classes=CLASSES, input_dtype="float32", num_partitions=4, max_bytes=10_000,
                    encoding=SINGULARIZED)
    return UploadCheck(**{**defaults, **kwargs})


def test_a_valid_upload_passes_and_marks_its_party():
    check = _check()
    arrays, metrics = _release(pid=2)
    assert check.check(node_id=7, arrays=arrays, metrics=metrics, with_validation=True) == 2
    assert check.seen_parties == {2} and check.seen_nodes == {7}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"x": np.zeros((ROWS, DIM + 1), np.float32)}, "rows must be"),
        ({"x": np.zeros((ROWS, DIM), np.float64)}, "dtype float64"),
        ({"y": np.zeros((ROWS, CLASSES), np.float16)}, "soft labels are float32"),
        ({"x": np.full((ROWS, DIM), np.nan, np.float32)}, "NaN or inf"),
        ({"y": np.full((ROWS, CLASSES), np.inf, np.float32)}, "NaN or inf"),
        ({"y": np.full((ROWS, CLASSES), 0.5, np.float32)}, "simplex"),
        ({"y": np.tile(np.array([[1.5, -0.5, 0.0]], np.float32), (ROWS, 1))}, "simplex"),
        ({"num-examples": ROWS + 1}, "num-examples"),
        ({"y": np.full((ROWS - 1, CLASSES), 1 / CLASSES, np.float32)}, "expected"),
        ({"partition-id": 9}, "partition-id"),
        ({"snr-pc1": "large"}, "metrics missing or not numbers: snr-pc1"),
    ],
)
def test_bad_uploads_are_rejected_with_the_reason(changes, reason):
    check = _check()
    arrays, metrics = _release(**changes)
    with pytest.raises(UploadRejected, match=reason):
        check.check(node_id=1, arrays=arrays, metrics=metrics, with_validation=True)
    assert check.seen_parties == set()  # a rejected upload does not use up the party's turn


def test_missing_validation_size_limit_and_second_upload_are_rejected():
    arrays, metrics = _release(val=False)
    with pytest.raises(UploadRejected, match="missing"):
        _check().check(node_id=1, arrays=arrays, metrics=metrics, with_validation=True)
    arrays, metrics = _release()
    with pytest.raises(UploadRejected, match="over the limit"):
        _check(max_bytes=100).check(node_id=1, arrays=arrays, metrics=metrics, with_validation=True)
    check = _check()
    check.check(node_id=1, arrays=arrays, metrics=metrics, with_validation=True)
    with pytest.raises(PartitionConflict, match="claimed by nodes 1, 2") as conflict:
        check.check(node_id=2, arrays=arrays, metrics=metrics, with_validation=True)  # same party, other node
    assert conflict.value.partition_id == 0 and conflict.value.node_ids == [1, 2]
    assert check.seen_parties == set()  # neither claimant's release counts
    other, other_metrics = _release(pid=3)
    with pytest.raises(UploadRejected, match="second upload"):
        check.check(node_id=1, arrays=other, metrics=other_metrics, with_validation=True)  # same node


@pytest.fixture
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)


class ReleaseGrid(Grid):
    """Node 1 and 4 send valid releases, node 2 NaNs, node 3 a copy of party 0's id, node 5 nothing."""

    def __init__(self):
        self.pushed: dict[str, Message] = {}

    def set_run(self, run):
        pass

    @property
    def run(self):
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise NotImplementedError

    def get_node_ids(self):
        return [1, 2, 3, 4, 5]

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            mid = f"m{len(self.pushed)}"
            self.pushed[mid] = msg
            ids.append(mid)
        return ids

    def send_and_receive(self, messages, *, timeout=None):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        plans = {1: _release(pid=0), 2: _release(pid=1, x=np.full((ROWS, DIM), np.nan, np.float32)),
                 3: _release(pid=0), 4: _release(pid=2)}
        replies = []
        for mid in list(message_ids):
            msg = self.pushed[mid]
            node = msg.metadata.dst_node_id
            if node not in plans:
                continue
            arrays, metrics = plans[node]
            content = RecordDict({"release": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                                  "metrics": MetricRecord(metrics)})
            reply = Message(content, reply_to=msg)
            reply.metadata.__dict__["_reply_to_message_id"] = mid
            replies.append(reply)
        return replies


def test_collection_keeps_valid_parties_and_lists_every_rejection(task_identity):
    grid = MeteredGrid(ReleaseGrid())
    collected = collect_releases(grid, [1, 2, 3, 4, 5], timeout=1.5, check=_check(num_partitions=5))
    # Nodes 1 and 3 both claim party 0 with valid releases: both flagged, neither used.
    assert [m["partition-id"] for m in collected.party_metrics] == [2]
    assert collected.train.filled == ROWS and collected.val.filled == 2
    assert collected.train.parties == [(2, 0, ROWS)]
    reasons = {r["node-id"]: r["reason"] for r in collected.rejections}
    assert set(reasons) == {1, 2, 3}
    assert "NaN" in reasons[2]
    assert "partition-id 0 claimed by nodes" in reasons[1] and reasons[1] == reasons[3]
    assert [(c["partition-id"], sorted(c["node-ids"])) for c in collected.conflicts] == [(0, [1, 3])]
    assert [f["node-id"] for f in collected.failures] == [5]  # never answered


def test_injected_nan_upload_is_rejected_by_the_server_check(task_identity):
    """The deployment tests' broken party (a test-only ClientApp, never the production one):
    its upload is exactly what the server's check rejects."""
    from flwr.app import ConfigRecord, Context, MessageType

    from tests.fault_injection import query

    msg = Message(RecordDict({"config": ConfigRecord({"epoch": 1, "with-validation": True})}), dst_node_id=5,
                  message_type=MessageType.QUERY)
    node = {"partition-id": 1, "num-partitions": 3, "test-fault": "nan-upload"}
    ctx = Context(run_id=1, node_id=5, node_config=node, state=RecordDict(),
                  run_config={"output-dir": "/tmp/mixupfl-test-runs"})
    reply = query(msg, ctx)
    arrays = {k: reply.content["release"][k].numpy() for k in reply.content["release"]}
    metrics = dict(reply.content["metrics"])
    check = UploadCheck(row_shape=(64,), num_classes=10, input_dtype="float32", num_partitions=3, max_bytes=2**30,
                        encoding=SINGULARIZED)
    with pytest.raises(UploadRejected, match="x holds NaN"):
        check.check(node_id=5, arrays=arrays, metrics=metrics, with_validation=True)
    # The same party through the production ClientApp sends a release the check accepts.
    from client.app import query as production_query

    honest = production_query(msg, ctx)
    honest_arrays = {k: honest.content["release"][k].numpy() for k in honest.content["release"]}
    assert check.check(node_id=6, arrays=honest_arrays, metrics=dict(honest.content["metrics"]),
                       with_validation=True) == 1
    bad = Context(run_id=1, node_id=5, node_config={**node, "test-fault": "explode"}, state=RecordDict(),
                  run_config={"output-dir": "/tmp/mixupfl-test-runs"})
    with pytest.raises(ValueError, match="unknown test-fault"):
        query(msg, bad)


def test_the_production_client_app_has_no_fault_switch():
    """Fault injection lives in tests/fault_injection.py only."""
    from pathlib import Path

    source = (Path(__file__).resolve().parents[1] / "client" / "app.py").read_text()
    assert "test-fault" not in source and "FAULT" not in source


def test_instahide_uploads_carry_their_own_figures():
    INSTAHIDE_FIRST_RELEASE_METRICS = INSTAHIDE.first_release_metrics

    arrays, metrics = _release()
    insta_metrics = {k: v for k, v in metrics.items() if k not in FIRST_RELEASE_METRICS}
    insta_metrics.update({key: 1 for key in INSTAHIDE_FIRST_RELEASE_METRICS})
    assert _check(encoding=INSTAHIDE).check(node_id=1, arrays=arrays, metrics=insta_metrics, with_validation=True) == 0
    # A singularized run refuses a release without its SNR figures, and vice versa.
    with pytest.raises(UploadRejected, match="snr-pc1"):
        _check().check(node_id=1, arrays=arrays, metrics=insta_metrics, with_validation=True)
    with pytest.raises(UploadRejected, match="instahide-k"):
        _check(encoding=INSTAHIDE).check(node_id=1, arrays=arrays, metrics=metrics, with_validation=True)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"radius": float("inf")}, "metric radius = inf is not finite"),
        ({"radius": float("nan")}, "metric radius = nan is not a number"),
        ({"radius": -1.0}, "metric radius = -1 is outside [0, inf]"),
        ({"reid-rate": 1.5}, "metric reid-rate = 1.5 is outside [0, 1]"),
        ({"node-id": 1.0}, "metrics may not set the server's own fields: node-id"),
        ({"snr-pc1": float("inf")}, "metric snr-pc1 = inf is not finite"),
    ],
)
def test_a_party_cannot_poison_the_summary_with_its_figures(changes, reason):
    arrays, metrics = _release()
    metrics.update(changes)
    with pytest.raises(UploadRejected, match=reason.replace("[", r"\[").replace("]", r"\]")):
        _check().check(node_id=1, arrays=arrays, metrics=metrics, with_validation=True)


def test_a_void_bound_may_be_infinite_and_a_huge_value_is_refused_by_the_public_bound():
    arrays, metrics = _release()
    metrics["snr-bound-pc1"] = float("inf")  # no noise at tau >= alpha^2 / (1 - alpha)^2: the bound is void
    assert _check(value_bound=1.0).check(node_id=1, arrays=arrays, metrics=metrics, with_validation=True) == 0
    poisoned, metrics = _release()
    poisoned["x"][0, 0] = 1e30
    with pytest.raises(UploadRejected, match="above the 1 a valid release"):
        _check(value_bound=1.0).check(node_id=2, arrays=poisoned, metrics=metrics, with_validation=True)


def test_the_public_bound_follows_theorem_2_and_never_the_partys_claims():
    """Clamped: the valid range; strict: max|x| (1 + alpha sqrt(d' bracket d)), the largest
    radius Theorem 2 can give in any valid box (V <= d max|x|^2 by Popoviciu)."""
    import math

    from common.config import parse_run_config

    assert SINGULARIZED.input_bound(parse_run_config({}), value_bound=1.0, dim=64) == 1.0
    strict = parse_run_config({"noise-mode": "strict", "tau": 1.0})
    bracket = 0.7**2 / 0.3**2 - 1
    assert SINGULARIZED.input_bound(strict, value_bound=1.0, dim=64) == pytest.approx(1 + 0.7 * math.sqrt(64 * bracket * 64))
    assert SINGULARIZED.input_bound(strict, value_bound=None, dim=64) is None  # features: no public range
    assert INSTAHIDE.input_bound(strict, value_bound=2.5, dim=64) == 2.5


@pytest.mark.parametrize("config", [{"noise-mode": "strict"}, {"noise-mode": "strict", "tau": 3.0}, {}])
def test_real_releases_stay_inside_the_public_bound(config):
    from client.party import load_party
    from client.release import make_release
    from common.config import parse_run_config

    cfg = parse_run_config(config)
    party = load_party(cfg, 1, 5)
    made = make_release(cfg, party, device=torch.device("cpu"))
    bound = SINGULARIZED.input_bound(cfg, value_bound=1.0, dim=64)
    assert float(made.train.x.abs().max()) <= bound
    if cfg.noise_mode == "strict":  # the bound is not vacuous: the noise reaches a sizeable share of it
        assert float(made.train.x.abs().max()) > 0.01 * bound
