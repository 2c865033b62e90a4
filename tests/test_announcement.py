"""Size before transfer: the announcement check, the real parties' announcements, and a
one-shot run in which an oversized release is refused before it is ever asked for.

In-process fake grids (no Flower run); the `flwr run` case is in tests/test_hostile_one_shot.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.encodings import get_encoding, release_nbytes
from common.model import MixupClassifier
from server.announcement import announce_releases, check_announcement
from server.metered_grid import MeteredGrid, payload_bytes
from server.strategies import OneShot
from server.validation import UploadCheck, UploadRejected
from tests.fake_grid import RecordingGrid

SINGULARIZED = get_encoding("singularized")
FIRST = SINGULARIZED.required_metrics("exact", first=True)
DIM, CLASSES = 4, 3
MIB = 2**20


def _told(rows, *, pid=0, val=0, dim=DIM, classes=CLASSES, dtype="float32", **changes):
    told = {"partition-id": pid, "num-examples": rows, "num-val": val, "input-dim": dim, "num-classes": classes,
            "release-bytes": release_nbytes(rows + val, dim, classes, dtype)}
    return {**told, **changes}


def _accept(told, *, max_bytes=MIB, with_validation=False, dtype="float32"):
    return check_announcement(7, told, max_bytes=max_bytes, row_shape=(DIM,), num_classes=CLASSES,
                              input_dtype=dtype, num_partitions=4, with_validation=with_validation)


# -- the check ------------------------------------------------------------------------------
def test_an_announcement_exactly_at_the_limit_is_accepted_and_one_row_more_is_refused():
    per_row = DIM * 4 + CLASSES * 4
    limit = 1000 * per_row
    accepted = _accept(_told(1000), max_bytes=limit)
    assert (accepted.node_id, accepted.rows, accepted.input_dim, accepted.release_bytes) == (7, 1000, DIM, limit)
    with pytest.raises(UploadRejected, match=r"^announced [0-9.]+ MiB, above max-upload-mb = "):
        _accept(_told(1001), max_bytes=limit)
    five = 5 * MIB
    rows = five // per_row + 1
    with pytest.raises(UploadRejected) as refused:
        _accept(_told(rows), max_bytes=five)
    assert str(refused.value) == f"announced {rows * per_row / MIB:.4g} MiB, above max-upload-mb = 5"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"release-bytes": math.nan}, "release-bytes = nan is not finite"),
    ({"release-bytes": math.inf}, "release-bytes = inf is not finite"),
    ({"release-bytes": -1}, "release-bytes = -1 is negative"),
    ({"num-examples": -5}, "num-examples = -5 is negative"),
    ({"num-examples": 2.5}, "num-examples = 2.5 is not a whole number"),
    ({"input-dim": True}, "input-dim missing or not a number"),
    ({"release-bytes": "small"}, "release-bytes missing or not a number"),
    ({"num-examples": 0, "release-bytes": 0}, "announced no training rows"),
    ({"input-dim": 5}, "rows of 5 inputs and 3 classes; this run's have 4 and 3"),
    ({"partition-id": 4}, "partition-id 4 is not in"),
    ({"num-val": 3}, "announced 3 validation rows; this run asks for none"),
    ({"release-bytes": 10}, "announced 10 bytes, but 100 \\+ 0 rows of 4 float32 inputs and 3 float32 labels make"),
])
def test_malformed_or_inconsistent_announcements_are_refused(changes, reason):
    with pytest.raises(UploadRejected, match=reason):
        _accept(_told(100, **changes))


def test_a_missing_field_is_refused_and_float16_halves_the_inputs():
    told = _told(100)
    del told["input-dim"]
    with pytest.raises(UploadRejected, match="input-dim missing"):
        _accept(told)
    assert _accept(_told(100, dtype="float16"), dtype="float16").release_bytes == 100 * (DIM * 2 + CLASSES * 4)
    with pytest.raises(UploadRejected, match="make"):
        _accept(_told(100), dtype="float16")  # float32 sizes in a float16 run


# -- the upload must be what was announced --------------------------------------------------
def _release(pid, rows):
    rng = np.random.default_rng(pid)
    arrays = {"x": rng.random((rows, DIM)).astype(np.float32),
              "y": rng.dirichlet(np.ones(CLASSES), size=rows).astype(np.float32)}
    return arrays, {"partition-id": pid, "num-examples": rows, "num-val": 0, **{k: 1.0 for k in FIRST}}


def _check(announced, max_bytes=10**6):
    return UploadCheck(row_shape=(DIM,), num_classes=CLASSES, input_dtype="float32", num_partitions=4,
                       max_bytes=max_bytes, encoding=SINGULARIZED, party_figures="exact", announced=announced)


def test_an_upload_that_differs_from_its_announcement_is_refused_naming_both():
    announced = {7: _accept(_told(10, pid=1))}
    arrays, metrics = _release(1, 10)
    assert _check(announced).check(node_id=7, arrays=arrays, metrics=metrics, with_validation=False) == 1
    big, big_metrics = _release(1, 12)
    with pytest.raises(UploadRejected, match="announced 10 rows x 4 inputs for x, sent 12 rows x 4 inputs"):
        _check(announced).check(node_id=7, arrays=big, metrics=big_metrics, with_validation=False)
    with pytest.raises(UploadRejected, match="announced partition-id 1, sent partition-id 2"):
        _check(announced).check(node_id=7, arrays=arrays, metrics={**metrics, "partition-id": 2},
                                with_validation=False)
    with pytest.raises(UploadRejected, match="node 8 has no accepted announcement"):
        _check(announced).check(node_id=8, arrays=arrays, metrics=metrics, with_validation=False)
    # The size check after transfer stays the last line of defence (no announcement round).
    with pytest.raises(UploadRejected, match="over the limit"):
        _check(None, max_bytes=100).check(node_id=7, arrays=arrays, metrics=metrics, with_validation=False)


# -- the real parties ------------------------------------------------------------------------
def _context(node_config, run_config):
    return Context(run_id=1, node_id=5, node_config=node_config, state=RecordDict(),
                   run_config={"output-dir": "/tmp/mixupfl-test-runs", **run_config})


def _query(handler, ctx, **config):
    msg = Message(RecordDict({"config": ConfigRecord(config)}), dst_node_id=5, message_type=MessageType.QUERY)
    return handler(msg, ctx)


@pytest.mark.parametrize("run_config", [{}, {"upload-dtype": "float16"}, {"selection": "mixed-validation"},
                                        {"encoding": "instahide", "public-fraction": 0.2}, {"encoding": "pooled"}],
                         ids=["singularized", "float16", "with-validation", "instahide", "pooled"])
def test_a_partys_announcement_is_exactly_the_release_it_then_sends(task_identity, run_config):
    from client.app import query

    ctx = _context({"partition-id": 1, "num-partitions": 3}, run_config)
    with_val = run_config.get("selection") == "mixed-validation"
    told = dict(_query(query, ctx, announce=True, **{"with-validation": with_val}).content["announcement"])
    release = _query(query, ctx, epoch=1, **{"with-validation": with_val}).content
    arrays = {k: release["release"][k].numpy() for k in release["release"]}
    assert told["release-bytes"] == sum(a.nbytes for a in arrays.values())
    assert (told["num-examples"], told["num-val"]) == (arrays["x"].shape[0], arrays["val-x"].shape[0] if with_val
                                                       else 0)
    assert told["input-dim"] == arrays["x"].shape[1] == 64 and told["num-classes"] == 10
    dtype = run_config.get("upload-dtype", "float32")
    accepted = check_announcement(5, told, max_bytes=told["release-bytes"], row_shape=(64,), num_classes=10,
                                  input_dtype=dtype, num_partitions=3, with_validation=with_val)
    check = UploadCheck(row_shape=(64,), num_classes=10, input_dtype=dtype, num_partitions=3, max_bytes=2**30,
                        encoding=get_encoding(run_config.get("encoding", "singularized")), announced={5: accepted})
    assert check.check(node_id=5, arrays=arrays, metrics=dict(release["metrics"]), with_validation=with_val) == 1


def test_the_hostile_parties_announce_big_truthfully_or_small_and_then_send_big(task_identity):
    from tests.fault_injection import query

    run = {}
    oversized = _context({"partition-id": 1, "num-partitions": 3, "test-fault": "oversized", "test-fault-mb": 2}, run)
    told = dict(_query(query, oversized, announce=True, **{"with-validation": False}).content["announcement"])
    assert told["release-bytes"] >= 2 * MIB
    with pytest.raises(UploadRejected, match=r"above max-upload-mb = 1$"):
        check_announcement(5, told, max_bytes=MIB, row_shape=(64,), num_classes=10, input_dtype="float32",
                           num_partitions=3, with_validation=False)
    sent = _query(query, oversized, epoch=1, **{"with-validation": False}).content["release"]
    assert sum(sent[k].numpy().nbytes for k in sent) == told["release-bytes"]  # truthful

    liar = _context({"partition-id": 1, "num-partitions": 3, "test-fault": "lies", "test-fault-mb": 2}, run)
    small = dict(_query(query, liar, announce=True, **{"with-validation": False}).content["announcement"])
    accepted = check_announcement(5, small, max_bytes=MIB, row_shape=(64,), num_classes=10, input_dtype="float32",
                                  num_partitions=3, with_validation=False)
    reply = _query(query, liar, epoch=1, **{"with-validation": False}).content
    arrays = {k: reply["release"][k].numpy() for k in reply["release"]}
    check = UploadCheck(row_shape=(64,), num_classes=10, input_dtype="float32", num_partitions=3, max_bytes=MIB,
                        encoding=SINGULARIZED, announced={5: accepted})
    with pytest.raises(UploadRejected, match=rf"announced {accepted.rows} rows x 64 inputs for x, sent "
                                             rf"{arrays['x'].shape[0]} rows x 64 inputs"):
        check.check(node_id=5, arrays=arrays, metrics=dict(reply["metrics"]), with_validation=False)


# -- the protocol ----------------------------------------------------------------------------
@pytest.fixture
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)


class AnnouncingGrid(RecordingGrid):
    """Node plans ``(pid, rows, announced_rows)``: announce ``announced_rows``, send ``rows``;
    every pushed message is kept (``pushed``), so a test sees who was asked what."""

    def __init__(self, plans):
        super().__init__()
        self.plans = plans

    def get_node_ids(self):
        return list(self.plans)

    def pull_messages(self, message_ids):
        replies = []
        for mid in message_ids:
            msg = self.pushed[mid]
            pid, rows, told_rows = self.plans[msg.metadata.dst_node_id]
            if msg.content["config"].get("announce", False):
                content = RecordDict({"announcement": MetricRecord(_told(told_rows, pid=pid))})
            else:
                arrays, metrics = _release(pid, rows)
                content = RecordDict({"release": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                                      "metrics": MetricRecord(metrics)})
            reply = Message(content, reply_to=msg)
            reply.metadata.__dict__["_reply_to_message_id"] = mid
            replies.append(reply)
        return replies

    def asked(self, *, announce: bool) -> list[int]:
        return [m.metadata.dst_node_id for m in self.pushed.values()
                if bool(m.content["config"].get("announce", False)) == announce]


def test_an_oversized_release_is_refused_before_it_is_asked_for_and_a_liar_after_transfer(task_identity):
    per_row = DIM * 4 + CLASSES * 4
    limit = 100 * per_row
    plans = {11: (0, 50, 50), 12: (1, 60, 60), 13: (2, 500, 500), 14: (3, 500, 40)}
    inner = AnnouncingGrid(plans)
    grid = MeteredGrid(inner)
    result = OneShot(encoding=SINGULARIZED, model_fn=MixupClassifier, central_epochs=1, party_figures="exact",
                     max_upload_bytes=limit, batch_size=8).start(
        grid=grid, node_ids=[11, 12, 13, 14], row_shape=(DIM,), num_classes=CLASSES, timeout=0.3)
    assert inner.asked(announce=True) == [11, 12, 13, 14]
    assert sorted(inner.asked(announce=False)) == [11, 12, 14]  # 13 is never asked for its release
    assert [p["node-id"] for p in result.parties] == [11, 12] and result.union["train_rows"] == 110
    refused, liar = sorted(result.rejections, key=lambda r: r["node-id"])
    assert refused == {"node-id": 13, "partition-id": 2, "epoch": 1, "stage": "announcement",
                       "announced_bytes": 500 * per_row,
                       "reason": f"announced {500 * per_row / MIB:.4g} MiB, above max-upload-mb = {limit / MIB:.4g}"}
    assert liar["node-id"] == 14 and liar["reason"] == "announced 40 rows x 4 inputs for x, sent 500 rows x 4 inputs"
    # The refused party uploaded its announcement only; the liar's release was received in full.
    announcement_13 = payload_bytes(RecordDict({"announcement": MetricRecord(_told(500, pid=2))}))
    assert grid.bytes_received[13] == announcement_13 < 200
    assert grid.bytes_received[14] > 500 * per_row
    union = result.union
    assert union["announce_refused"] == 1 and union["announced_bytes"] == (50 + 60 + 40) * per_row
    assert union["announce_bytes_uploaded"] == sum(
        payload_bytes(RecordDict({"announcement": MetricRecord(_told(told, pid=pid))}))
        for pid, _, told in plans.values())
    assert union["announce_bytes_downloaded"] > 0 and union["announce_seconds"] >= 0
    assert result.memory["union_bytes"] > 0  # the probe ran over the announcement and the collection


def test_an_announcement_round_charges_errors_and_silence_to_their_nodes(task_identity):
    class Partly(AnnouncingGrid):
        def pull_messages(self, message_ids):
            return [r for r in super().pull_messages(message_ids) if r.metadata.src_node_id != 22
                    and r.metadata.reply_to_message_id != "m0"] + (
                [_error(self.pushed["m0"])] if "m0" in message_ids else [])

    def _error(msg):
        from flwr.app import Error

        reply = Message(Error(code=0, reason="Traceback ...\nRuntimeError: gone"), reply_to=msg)
        reply.metadata.__dict__["_src_node_id"] = 1  # the SuperLink answers for a dead node
        reply.metadata.__dict__["_reply_to_message_id"] = "m0"
        return reply

    grid = MeteredGrid(Partly({21: (0, 5, 5), 22: (1, 5, 5), 23: (2, 5, 5)}))
    out = announce_releases(grid, [21, 22, 23], timeout=0.2, max_bytes=MIB, row_shape=(DIM,), num_classes=CLASSES,
                            input_dtype="float32", num_partitions=3, with_validation=False)
    assert sorted(out.accepted) == [23]
    assert out.failures == [{"node-id": 21, "error": "RuntimeError: gone"},
                            {"node-id": 22, "error": "no reply within 0 s (announcement)"}]
    assert out.rejections == []
