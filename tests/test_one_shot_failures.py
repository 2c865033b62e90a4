"""One-shot failure accounting, partition claims and early failure, with in-process fake
grids (no Flower run): an error reply is charged to the node its query went to, once; two
nodes claiming one partition are both flagged and neither release is used; a run that
stops writes ``<run-name>.failed.json`` with what it collected; a bad config or output-dir
fails at once."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.config import ConfigError, parse_run_config
from common.encodings import get_encoding, release_nbytes
from server.collection import collect_releases
from server.metered_grid import MeteredGrid
from server.run_files import OutputDirError, check_output_dir, write_failed
from server.strategies import OneShot, OneShotFailed
from server.union import UnionBuffer
from server.validation import UploadCheck, UploadRejected
from tests.fake_grid import RecordingGrid

SINGULARIZED = get_encoding("singularized")
FIRST = SINGULARIZED.required_metrics("exact", first=True)
DIM, CLASSES = 4, 3
SUPERLINK = 1  # Flower's SUPERLINK_NODE_ID: the sender of the SuperLink's error replies


def _release(pid, rows):
    rng = np.random.default_rng(pid)
    arrays = {"x": rng.random((rows, DIM)).astype(np.float32),
              "y": rng.dirichlet(np.ones(CLASSES), size=rows).astype(np.float32)}
    metrics = {"partition-id": pid, "num-examples": rows, "num-val": 0, **{k: 1.0 for k in FIRST}}
    return arrays, metrics


def _announcement(pid, rows):
    return {"partition-id": pid, "num-examples": rows, "num-val": 0, "input-dim": DIM, "num-classes": CLASSES,
            "release-bytes": release_nbytes(rows, DIM, CLASSES, "float32")}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)


class PlannedGrid(RecordingGrid):
    """Each node answers its plan: ``(pid, rows)`` its truthful announcement, then a valid
    release, ``"error"`` the SuperLink's error reply for a dead node (sender: the SuperLink),
    ``None`` nothing."""

    def __init__(self, plans):
        super().__init__()
        self.plans = plans

    def get_node_ids(self):
        return list(self.plans)

    def pull_messages(self, message_ids):
        replies = []
        for mid in list(message_ids):
            msg = self.pushed[mid]
            plan = self.plans[msg.metadata.dst_node_id]
            if plan is None:
                continue
            if plan == "error":
                reply = Message(Error(code=0, reason="Traceback ...\nRuntimeError: party died"), reply_to=msg)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK
            elif msg.content["config"].get("announce", False):  # size before transfer: what it will send
                reply = Message(RecordDict({"announcement": MetricRecord(_announcement(*plan))}), reply_to=msg)
            else:
                arrays, metrics = _release(*plan)
                reply = Message(RecordDict({"release": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                                            "metrics": MetricRecord(metrics)}), reply_to=msg)
            reply.metadata.__dict__["_reply_to_message_id"] = mid
            replies.append(reply)
        return replies


def _check(**kwargs):
    return UploadCheck(**{**dict(row_shape=(DIM,), num_classes=CLASSES, input_dtype="float32", num_partitions=6,
                                 max_bytes=10**6, encoding=SINGULARIZED, party_figures="exact"), **kwargs})


def test_an_error_reply_is_charged_to_the_node_it_answers_once_and_never_to_the_superlink():
    grid = MeteredGrid(PlannedGrid({11: (0, 5), 12: "error", 13: None, 14: (1, 7)}))
    collected = collect_releases(grid, [11, 12, 13, 14], timeout=0.3, check=_check(), with_validation=False)
    assert collected.failures == [{"node-id": 12, "error": "RuntimeError: party died"},
                                  {"node-id": 13, "error": "no reply within 0 s"}]
    assert collected.rejections == [] and collected.train.filled == 5 + 7
    assert sorted(m["node-id"] for m in collected.party_metrics) == [11, 14]


@pytest.mark.parametrize("order", [[21, 22, 23, 24], [24, 23, 22, 21]])
def test_two_nodes_claiming_one_partition_are_both_flagged_whatever_the_order(order):
    plans = {21: (0, 5), 22: (1, 6), 23: (1, 9), 24: (2, 7)}
    grid = MeteredGrid(PlannedGrid({nid: plans[nid] for nid in order}))
    collected = collect_releases(grid, order, timeout=0.3, check=_check(), with_validation=False)
    assert sorted(m["partition-id"] for m in collected.party_metrics) == [0, 2]
    assert collected.train.filled == 5 + 7  # the union holds the accepted parties' rows only
    assert sorted(int(o) for o in collected.train.owner.unique()) == [0, 2]
    assert collected.train.x[collected.train.canonical_order()].shape == (12, DIM)
    assert [(c["partition-id"], sorted(c["node-ids"])) for c in collected.conflicts] == [(1, [22, 23])]
    assert sorted((r["node-id"], r["partition-id"]) for r in collected.rejections) == [(22, 1), (23, 1)]
    assert all("claimed by nodes" in r["reason"] for r in collected.rejections)
    assert collected.failures == []


def test_a_third_claimant_joins_the_conflict_and_a_rejected_upload_claims_nothing():
    check = _check()
    arrays, metrics = _release(3, 4)
    check.check(node_id=1, arrays=arrays, metrics=metrics, with_validation=False)
    bad = {**arrays, "x": np.full((4, DIM), np.nan, np.float32)}
    with pytest.raises(UploadRejected, match="NaN"):
        check.check(node_id=2, arrays=bad, metrics=metrics, with_validation=False)
    assert check.claims == {3: [1]}
    with pytest.raises(UploadRejected, match="claimed by nodes 1, 3"):
        check.check(node_id=3, arrays=arrays, metrics=metrics, with_validation=False)
    with pytest.raises(UploadRejected, match="claimed by nodes 1, 3, 4"):
        check.check(node_id=4, arrays=arrays, metrics=metrics, with_validation=False)


def test_a_later_collection_keeps_each_node_to_its_first_partition():
    arrays, metrics = _release(2, 4)
    with pytest.raises(UploadRejected, match="node 7 released partition 1 in the first collection"):
        _check(bound={7: 1}).check(node_id=7, arrays=arrays, metrics=metrics, with_validation=False, first=False)
    with pytest.raises(UploadRejected, match="partition-id 2 was released by node 8"):
        _check(bound={8: 2}).check(node_id=7, arrays=arrays, metrics=metrics, with_validation=False, first=False)
    with pytest.raises(UploadRejected, match="flagged in a partition conflict"):
        _check(flagged={7}).check(node_id=7, arrays=arrays, metrics=metrics, with_validation=False, first=False)


def test_union_drop_compacts_the_rows_of_the_other_parties():
    union = UnionBuffer(expected_parties=3)
    for pid, rows in ((0, 2), (1, 3), (2, 4)):
        union.add(pid, np.full((rows, 2), pid, np.float32), np.full((rows, 1), pid, np.float32))
    assert union.drop(1) == 3
    assert union.filled == 6 and union.parties == [(0, 0, 2), (2, 2, 4)]
    assert union.x[:, 0].tolist() == [0, 0, 2, 2, 2, 2] and union.owner.tolist() == [0, 0, 2, 2, 2, 2]


def _one_shot(**kwargs):
    return OneShot(encoding=SINGULARIZED, model_fn=kwargs.pop("model_fn", None), central_epochs=1,
                   party_figures="exact", **kwargs)


def test_below_quorum_after_collection_writes_a_failed_summary_with_what_was_collected(tmp_path):
    grid = MeteredGrid(PlannedGrid({31: (0, 5), 32: "error", 33: (1, 6), 34: (1, 6)}))
    with pytest.raises(OneShotFailed, match="1 valid release") as failed:
        _one_shot(quorum=2).start(grid=grid, node_ids=[31, 32, 33, 34], row_shape=(DIM,), num_classes=CLASSES,
                                  num_partitions=4, timeout=0.3)
    assert failed.value.stage == "collection"
    cfg = parse_run_config({"output-dir": str(tmp_path), "run-name": "short", "quorum": 2})
    write_failed(cfg, failed.value, [31, 32, 33, 34], started=time.perf_counter(), started_utc="now")
    assert not (tmp_path / "short.json").exists()
    summary = json.loads((tmp_path / "short.failed.json").read_text())
    assert summary["status"] == "failed" and summary["stage"] == "collection"
    assert "fewer than quorum = 2" in summary["reason"]
    assert [p["node-id"] for p in summary["parties"]] == [31] and summary["union"]["train_rows"] == 5
    assert summary["failures"] == [{"node-id": 32, "error": "RuntimeError: party died"}]
    assert sorted(r["node-id"] for r in summary["rejections"]) == [33, 34]
    assert summary["partition_conflicts"] == [{"partition_id": 1, "node_ids": summary["partition_conflicts"][0]
                                               ["node_ids"], "epoch": 1}]
    assert sorted(summary["partition_conflicts"][0]["node_ids"]) == [33, 34]
    assert summary["participation"]["contributed_nodes"] == [31]
    assert summary["participation"]["not_contributing_nodes"] == [32, 33, 34]


def test_a_training_crash_writes_a_failed_summary_with_the_collected_parties(tmp_path):
    def broken_model(**_):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    grid = MeteredGrid(PlannedGrid({41: (0, 5), 42: (1, 6)}))
    with pytest.raises(OneShotFailed, match="training: OutOfMemoryError") as failed:
        _one_shot(model_fn=broken_model).start(grid=grid, node_ids=[41, 42], row_shape=(DIM,), num_classes=CLASSES,
                                               timeout=0.3)
    cfg = parse_run_config({"output-dir": str(tmp_path), "run-name": "oom"})
    write_failed(cfg, failed.value, [41, 42], started=time.perf_counter(), started_utc="now")
    summary = json.loads((tmp_path / "oom.failed.json").read_text())
    assert summary["stage"] == "training" and summary["error_type"] == "OutOfMemoryError"
    assert summary["union"]["train_rows"] == 11 and len(summary["parties"]) == 2


def _context(run_config):
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


def test_a_bad_output_dir_or_config_fails_at_once_with_an_exception_flower_reports(tmp_path):
    from server.app import main

    afile = tmp_path / "a-file"
    afile.write_text("x")
    started = time.perf_counter()
    with pytest.raises(OutputDirError, match="is a file, not a folder"):
        main(None, _context({"output-dir": str(afile)}))  # no grid needed: nothing is sent
    with pytest.raises(OutputDirError, match="cannot be created"):
        main(None, _context({"output-dir": str(afile / "sub")}))
    with pytest.raises(ConfigError, match="invalid run config: .*quorum"):
        main(None, _context({"quorum": 0, "output-dir": str(tmp_path)}))
    assert time.perf_counter() - started < 5
    fresh = tmp_path / "new" / "folder"
    assert check_output_dir(parse_run_config({"output-dir": str(fresh)})) == fresh and fresh.is_dir()
    assert list(fresh.iterdir()) == []  # the probe is gone
    with pytest.raises(OutputDirError, match="cannot write the run's files"):
        check_output_dir(parse_run_config({"output-dir": str(tmp_path), "run-name": "bad\x00name"}))


def test_per_epoch_releases_keep_conflicting_nodes_out_and_train_on_the_accepted_parties():
    from common.model import MixupClassifier

    grid = MeteredGrid(PlannedGrid({51: (0, 5), 52: (1, 6), 53: (1, 6), 54: (2, 4)}))
    result = OneShot(encoding=SINGULARIZED, model_fn=MixupClassifier, central_epochs=2, release="per-epoch",
                     party_figures="exact", batch_size=4).start(
        grid=grid, node_ids=[51, 52, 53, 54], row_shape=(DIM,), num_classes=CLASSES, timeout=0.3)
    assert [p["node-id"] for p in result.parties] == [51, 54] and result.union["train_rows"] == 9
    assert result.later_epochs == [{"epoch": 2, "parties": 2, "rows": 9,
                                    "collect_seconds": result.later_epochs[0]["collect_seconds"]}]
    later = sorted((r["node-id"], r["reason"]) for r in result.rejections if r["epoch"] == 2)
    assert [n for n, _ in later] == [52, 53]
    assert all("flagged in a partition conflict of the first collection" in reason for _, reason in later)
    assert [c["epoch"] for c in result.conflicts] == [1]  # the later refusals are no new conflict
    assert dict(result.releases) == {0: 2, 2: 2}


def test_a_summary_crash_after_training_still_writes_what_was_collected(tmp_path):
    from server.strategies import OneShotResult

    result = OneShotResult(parties=[{"node-id": 61, "partition-id": 0, "num-examples": 5}],
                           failures=[{"node-id": 62, "error": "no reply within 30 s"}],
                           union={"train_rows": 5, "val_rows": 0})
    cfg = parse_run_config({"output-dir": str(tmp_path), "run-name": "late"})
    write_failed(cfg, ValueError("statistics of an empty list"), [61, 62], started=time.perf_counter(),
                 started_utc="now", stage="summary", one_shot=result)
    summary = json.loads((tmp_path / "late.failed.json").read_text())
    assert summary["stage"] == "summary" and summary["error_type"] == "ValueError"
    assert summary["reason"] == "summary: ValueError: statistics of an empty list"
    assert summary["union"]["train_rows"] == 5 and summary["participation"]["not_contributing_nodes"] == [62]
