"""FedProx through `flwr run` with hostile and failing parties (the test-only ClientApp of
tests/fault_injection.py): the run completes on the honest parties' updates and the summary
lists every left-out reply with its true reason.

One run of 5 simulated parties, ``aggregation = "median"``, ``selection = "validation"``,
2 rounds: party 1 sends NaN weights, party 2 a negative ``num-examples``, party 3 crashes from
round 2 on, party 4 trains honestly but reports a validation loss of -1e6; party 0 is honest
throughout. Unit-level cases (each check, each robust rule, quorum) are in
tests/test_update_check.py.
"""

from __future__ import annotations

import json

import pytest

from simulations.runtime.local_flower import flwr_run
from tests.app_variants import app_with_components
from tests.fault_injection import write_fault_plan

pytestmark = pytest.mark.slow

FAULTS = {1: {"test-fault": "nan-weights"}, 2: {"test-fault": "negative-examples"},
          3: {"test-fault": "crash", "test-fault-round": 2}, 4: {"test-fault": "low-val-loss"}}


def test_fedprox_completes_on_the_honest_parties_and_lists_every_bad_reply(flower, tmp_path):
    _, env = flower
    app = app_with_components(tmp_path / "app", clientapp="tests.fault_injection:app")
    out = tmp_path / "runs"
    write_fault_plan(out, FAULTS)
    log = tmp_path / "hostile.log"
    config = {"strategy": "fedprox", "aggregation": "median", "selection": "validation", "num-rounds": 2,
              "local-epochs": 5, "min-party-size": 10, "quorum": 2, "output-dir": str(out), "run-name": "hostile"}
    proc = flwr_run(config, num_supernodes=5, log_path=log, env=env, timeout=420, app_dir=app)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    summary = json.loads((out / "hostile.json").read_text())

    # The honest parties' model is sane: far above chance (10 %) on digits, finite selection loss.
    assert summary["result"]["test_accuracy"] > 50  # percent
    assert 0 <= summary["result"]["selected_val_loss"] < 10
    assert summary["aggregation"]["rule"] == "median"
    assert summary["aggregation"]["flower_strategy"] == "FedProx+FedMedian"

    rounds = {(r["round"], r["stage"]): r for r in summary["round_participation"]}
    assert rounds[(1, "train")]["contributed_partitions"] == [0, 3, 4]
    assert rounds[(2, "train")]["contributed_partitions"] == [0, 4]
    assert rounds[(1, "evaluate")]["contributed_partitions"] == [0, 1, 2, 3]
    assert rounds[(2, "evaluate")]["contributed_partitions"] == [0, 1, 2]

    rejected = {(r["round"], r["stage"], r["partition-id"]): r["reason"] for r in summary["rejections"]}
    for rnd in (1, 2):
        assert "holds NaN or inf" in rejected[(rnd, "train", 1)]
        assert "num-examples = -" in rejected[(rnd, "train", 2)]
        assert "val-loss = -1e+06 is outside [0, inf]" in rejected[(rnd, "evaluate", 4)]
    assert len(rejected) == 6
    failed = {(f["round"], f["stage"], f["partition-id"]): f for f in summary["failures"]}
    assert set(failed) == {(2, "train", 3), (2, "evaluate", 3)}
    assert all(f["outcome"] == "error reply" and "party crashed in round 2" in f["error"] for f in failed.values())
    # The crashed party's error is charged to its own node (as it answered round 1), never to the SuperLink.
    crashed_node = next(n for r in summary["round_participation"] if r["round"] == 1 and r["stage"] == "train"
                        for p, n in zip(r["contributed_partitions"], r["contributed_nodes"], strict=True) if p == 3)
    assert {f["node-id"] for f in failed.values()} == {crashed_node}
    participation = summary["participation"]
    assert participation["contributed_partitions"] == [0, 3, 4]
    assert len(participation["not_contributing_nodes"]) == 3  # parties 1, 2 (every round) and 3 (round 2)
