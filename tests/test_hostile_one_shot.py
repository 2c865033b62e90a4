"""One-shot through `flwr run` with failing and hostile parties (the test-only ClientApp of
tests/fault_injection.py), and a run whose output-dir is a file.

Five simulated parties: 0, 1 and 4 honest; party 2 sends its own valid release under party
1's partition id; party 3 dies mid-collection (its query raises, the server gets an error
reply). The run completes on parties 0 and 4; parties 1 and 2 are both flagged for the
conflict; the crash is charged to party 3's own node, once. Unit-level cases are in
tests/test_one_shot_failures.py.

Size before transfer: four parties under max-upload-mb = 5, party 3 announcing a 300 MiB
release (refused before it is ever built or sent) and party 2 announcing its small release
and sending 10 MiB (received, then refused for the mismatch). Unit-level cases are in
tests/test_announcement.py.
"""

from __future__ import annotations

import json
import time

import pytest

from simulations.runtime.local_flower import flwr_run
from tests.app_variants import app_with_components
from tests.fault_injection import write_fault_plan

pytestmark = pytest.mark.slow

SUPERLINK_NODE_ID = 1
FAULTS = {2: {"test-fault": "claim-partition", "test-fault-partition": 1}, 3: {"test-fault": "crash"}}


def test_one_shot_flags_both_claimants_and_charges_a_crash_to_its_own_node(flower, tmp_path):
    _, env = flower
    app = app_with_components(tmp_path / "app", clientapp="tests.fault_injection:app")
    out = tmp_path / "runs"
    write_fault_plan(out, FAULTS)
    log = tmp_path / "hostile.log"
    config = {"strategy": "one-shot-mixup", "central-epochs": 4, "min-party-size": 10, "quorum": 2,
              "output-dir": str(out), "run-name": "hostile"}
    proc = flwr_run(config, num_supernodes=5, log_path=log, env=env, timeout=420, app_dir=app)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    summary = json.loads((out / "hostile.json").read_text())

    parties = summary["parties"]
    assert [p["partition-id"] for p in parties] == [0, 4]
    assert summary["union"]["train_rows"] == sum(p["num-examples"] for p in parties)
    assert summary["result"]["test_accuracy"] > 50  # the honest parties' model, far above chance (10 %)

    # Both claimants of partition 1 flagged, neither used.
    (conflict,) = summary["partition_conflicts"]
    assert conflict["partition_id"] == 1 and conflict["epoch"] == 1 and len(set(conflict["node_ids"])) == 2
    assert sorted(r["node-id"] for r in summary["rejections"]) == sorted(conflict["node_ids"])
    assert all(r["partition-id"] == 1 and "claimed by nodes" in r["reason"] for r in summary["rejections"])

    # The crash: one entry, on its own node, never the SuperLink's, no false "no reply".
    (failure,) = summary["failures"]
    assert "party crashed during collection" in failure["error"]
    accepted = {p["node-id"] for p in parties}
    flagged = set(conflict["node_ids"])
    assert failure["node-id"] != SUPERLINK_NODE_ID
    assert failure["node-id"] not in accepted | flagged
    assert len(accepted | flagged | {failure["node-id"]}) == 5  # every party once
    participation = summary["participation"]
    assert participation["contributed_partitions"] == [0, 4]
    assert participation["not_contributing_nodes"] == sorted(flagged | {failure["node-id"]})
    assert not (out / "hostile.failed.json").exists()


def test_an_oversized_release_is_refused_before_transfer_and_a_lying_party_after(flower, tmp_path):
    _, env = flower
    app = app_with_components(tmp_path / "app", clientapp="tests.fault_injection:app")
    out = tmp_path / "runs"
    write_fault_plan(out, {2: {"test-fault": "lies", "test-fault-mb": 10},
                           3: {"test-fault": "oversized", "test-fault-mb": 300}})
    log = tmp_path / "oversized.log"
    config = {"strategy": "one-shot-mixup", "central-epochs": 4, "min-party-size": 10, "quorum": 2,
              "max-upload-mb": 5.0, "output-dir": str(out), "run-name": "oversized"}
    proc = flwr_run(config, num_supernodes=4, log_path=log, env=env, timeout=420, app_dir=app)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    summary = json.loads((out / "oversized.json").read_text())
    parties = summary["parties"]
    assert [p["partition-id"] for p in parties] == [0, 1]
    assert summary["result"]["test_accuracy"] > 50 and summary["failures"] == []
    refused, liar = sorted(summary["rejections"], key=lambda r: r["partition-id"], reverse=True)
    by_node = summary["communication"]["bytes_uploaded_by_node_id"]

    # Party 3: refused at its announcement; its upload is that one small message.
    assert refused["partition-id"] == 3 and refused["stage"] == "announcement" and refused["epoch"] == 1
    assert refused["announced_bytes"] >= 300 * 2**20
    assert refused["reason"] == f"announced {refused['announced_bytes'] / 2**20:.4g} MiB, above max-upload-mb = 5"
    assert by_node[str(refused["node-id"])] < 200
    assert "refused before transfer" in text

    # Party 2: its small announcement was accepted, its 10 MiB upload arrived and was refused.
    assert liar["partition-id"] == 2 and "stage" not in liar
    assert liar["reason"].startswith("announced ") and " rows x 64 inputs for x, sent " in liar["reason"]
    assert by_node[str(liar["node-id"])] >= 10 * 2**20

    union = summary["union"]
    assert union["announce_refused"] == 1
    # Accepted announcements: the honest parties' releases and the liar's honest-looking one.
    liar_rows = int(liar["reason"].split()[1])
    assert union["announced_bytes"] == (sum(p["num-examples"] for p in parties) + liar_rows) * (64 + 10) * 4
    assert summary["participation"]["not_contributing_nodes"] == sorted([refused["node-id"], liar["node-id"]])


def test_an_output_dir_that_is_a_file_fails_before_any_query(flower, tmp_path):
    _, env = flower
    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    log = tmp_path / "bad-out.log"
    started = time.perf_counter()
    proc = flwr_run({"strategy": "one-shot-mixup", "central-epochs": 4, "min-party-size": 10,
                     "output-dir": str(afile), "run-name": "bad-out"}, num_supernodes=2, log_path=log, env=env,
                    timeout=300)
    elapsed = time.perf_counter() - started
    text = log.read_text()
    assert f"output-dir {afile} is a file, not a folder" in text, text[-3000:]
    assert "OutputDirError" in text
    assert "release 1/" not in text and "with 2 parties" not in text  # no query went out
    assert afile.read_text() == "x"
    assert elapsed < 90, elapsed
    print(f"returncode {proc.returncode}, {elapsed:.1f} s")
