"""End to end through `flwr run`: both strategies on a tiny configuration, and a bad
run-config value stopping the ServerApp with the key named.

The session's local SuperLink (tests/conftest.py) has its own FLWR_HOME and ports and is
stopped at the end, so nothing is left running.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from simulations.runtime.local_flower import flwr_run

pytestmark = pytest.mark.slow

TINY = {"central-epochs": 4, "num-rounds": 2, "min-party-size": 10}
PARTIES = 3


# The summary of the first successful run of each configuration in this session: the rerun
# test compares a second run with it instead of paying for two more. Each rerun test shares an
# xdist group with the test that makes its first run, so both run on one worker, in this order.
_FIRST_RUNS: dict[frozenset, Path] = {}
ONE_SHOT_RUNS = pytest.mark.xdist_group("e2e-one-shot")
FEDPROX_RUNS = pytest.mark.xdist_group("e2e-fedprox")
DEFENCE_RUNS = pytest.mark.xdist_group("e2e-defences")


def _run(flower, tmp_path: Path, name: str, **config) -> tuple[int, str, Path]:
    home, env = flower
    out = tmp_path / "runs"
    log = tmp_path / f"{name}.log"
    proc = flwr_run({**TINY, **config, "output-dir": str(out), "run-name": name},
                    num_supernodes=PARTIES, log_path=log, env=env, timeout=420, app_dir=flower.app)
    summary = out / f"{name}.json"
    if proc.returncode == 0 and summary.exists():
        _FIRST_RUNS.setdefault(frozenset(config.items()), summary)
    return proc.returncode, log.read_text(), summary


@ONE_SHOT_RUNS
def test_one_shot_mixup_runs_end_to_end(flower, tmp_path):
    code, log, path = _run(flower, tmp_path, "oneshot", strategy="one-shot-mixup")
    assert code == 0, log[-3000:]
    summary = json.loads(path.read_text())
    assert summary["strategy"] == "one-shot-mixup"
    assert summary["num_parties"] == PARTIES
    assert summary["rounds"] == 1
    assert summary["privacy"]["release_mode"] == "once"
    assert summary["privacy"]["noise_mode"] == "clamped"
    parties = summary["parties"]
    assert sorted(p["partition-id"] for p in parties) == list(range(PARTIES))
    # selection = "last" (the default): the parties' validation parts are held out and never
    # released; the union holds every party's training release, row for row.
    held_out = _held_out_validation_rows()
    assert summary["union"]["train_rows"] == sum(p["num-examples"] for p in parties) == 1438 - held_out
    assert summary["union"]["val_rows"] == 0 and all(p["num-val"] == 0 for p in parties)
    assert summary["union"]["grow_events"] == 0
    # Upload = the float32 release (64 inputs + 10 soft labels per row) plus small records,
    # after one small announcement per party that named exactly those release bytes.
    release_bytes = (1438 - held_out) * (64 + 10) * 4
    union, comm = summary["union"], summary["communication"]
    assert union["announced_bytes"] == release_bytes and union["announce_refused"] == 0
    assert 0 < union["announce_bytes_uploaded"] < 200 * PARTIES  # six whole numbers per party
    assert comm["bytes_uploaded"] == sum(comm["bytes_uploaded_by_node_id"].values())
    assert release_bytes < comm["bytes_uploaded"] - union["announce_bytes_uploaded"] < release_bytes * 1.05
    assert comm["bytes_downloaded"] < 2000  # queries (announcement and release) carry no model
    assert comm["messages_sent"] == comm["messages_received"] == 2 * PARTIES
    assert summary["accuracy_unit"] == "percent" and 50 < summary["result"]["test_accuracy"] <= 100
    # one unit: the run table's figure is the JSON's
    assert re.search(rf"test accuracy +\| {summary['result']['test_accuracy']:.2f} %", log)
    assert summary["result"]["selection"] == "last" and summary["result"]["selected_at"] == TINY["central-epochs"]
    assert summary["result"]["test_accuracy"] == summary["result"]["last_test_accuracy"]
    assert summary["privacy"]["tau"] == 1e-6
    assert summary["privacy"]["snr_pc1"]["mean"] > 0
    assert "tau vs measured SNR" in log
    # Clamped digits at tau = 1e-6: a large share of released rows is still nearest to one of
    # its sources (about half here), against a chance level of 2/n (below 1 %).
    chance = 2 / min(p["num-examples"] for p in parties)
    assert 20 * chance < summary["privacy"]["reidentification_rate"]["mean"] <= 1.0
    assert all("reid-rate" in p and "theorem1-relative-min" in p for p in parties)
    assert "re-identification" in log
    assert summary["rejections"] == [] and summary["failures"] == []
    assert sorted(summary["participation"]["contributed_partitions"]) == list(range(PARTIES))


def _held_out_validation_rows(config: dict | None = None) -> int:
    """Rows the parties hold out for selection (never released under selection = last)."""
    from client.party import load_party
    from common.config import parse_run_config

    cfg = parse_run_config({**TINY, **(config or {})})
    return sum(load_party(cfg, pid, PARTIES).val_x.shape[0] for pid in range(PARTIES))


def test_one_shot_selection_on_the_parties_clean_validation_is_one_metered_round(flower, tmp_path):
    """selection = "validation": nothing of the validation parts is released; after training
    the server sends its candidate checkpoints to every party once and keeps the one whose
    size-weighted clean validation loss is lowest; the extra round's bytes are counted."""
    code, log, path = _run(flower, tmp_path, "oneshot-val", strategy="one-shot-mixup", selection="validation",
                           **{"selection-every": 2})
    assert code == 0, log[-3000:]
    summary = json.loads(path.read_text())
    result = summary["result"]
    round_ = result["selection_round"]
    assert round_["candidates"] == [2, 4] and round_["parties_answered"] == PARTIES
    losses = {int(k): v for k, v in round_["weighted_val_loss"].items()}
    assert result["selected_at"] == min(losses, key=losses.get)
    assert result["selected_val_loss"] == pytest.approx(min(losses.values()))
    assert summary["union"]["val_rows"] == 0 and summary["rounds"] == 2
    comm = summary["communication"]
    # An announcement, a release and a selection message to every party.
    assert comm["messages_sent"] == 3 * PARTIES and comm["messages_received"] == 3 * PARTIES
    # Two candidate models to each party: the download is the selection round's, measured.
    assert round_["bytes_downloaded"] <= comm["bytes_downloaded"] < round_["bytes_downloaded"] + 2000
    assert round_["bytes_downloaded"] > 2 * PARTIES * 4 * 64 * 1024  # a first layer of 64 x 1024 floats, at least
    assert "selection round: 2 candidates" in log


def test_one_shot_mixed_validation_is_the_named_old_rule(flower, tmp_path):
    code, log, path = _run(flower, tmp_path, "oneshot-mixed", strategy="one-shot-mixup",
                           selection="mixed-validation")
    assert code == 0, log[-3000:]
    summary = json.loads(path.read_text())
    assert summary["union"]["train_rows"] + summary["union"]["val_rows"] == 1438
    assert summary["result"]["selected_by"] == "lowest loss on the parties' held-out mixed validation releases"
    best = min(summary["history"], key=lambda h: h["val_loss"])
    assert summary["result"]["selected_at"] == best["epoch"]


def test_per_epoch_release_queries_every_epoch_and_counts_exposures(flower, tmp_path):
    code, log, path = _run(flower, tmp_path, "perepoch", strategy="one-shot-mixup", release="per-epoch")
    assert code == 0, log[-3000:]
    summary = json.loads(path.read_text())
    epochs = TINY["central-epochs"]
    privacy = summary["privacy"]
    assert privacy["release_mode"] == "per-epoch"
    assert summary["rounds"] == epochs
    assert privacy["releases_per_party"]["min"] == privacy["releases_per_party"]["max"] == epochs
    assert privacy["exposures_per_private_sample"]["as_clean_component"]["max"] == epochs
    assert privacy["exposures_per_private_sample"]["validation_sample"] == 0  # selection = last: never released
    assert [e["epoch"] for e in summary["later_epochs"]] == list(range(2, epochs + 1))
    # Upload: the training release every epoch.
    expected = epochs * summary["union"]["train_rows"] * (64 + 10) * 4
    assert expected < summary["communication"]["bytes_uploaded"] < expected * 1.05
    assert summary["communication"]["messages_received"] == (1 + epochs) * PARTIES  # an announcement first
    assert "exposed 4x" in log


def test_instahide_encoding_runs_end_to_end_on_the_same_partitions(flower, tmp_path):
    """`encoding = "instahide"` uploads once like singularized mixup; with the same
    public-fraction both encodings see exactly the same parties, and the public pool is
    nobody's private data."""
    shared = {"strategy": "one-shot-mixup", "public-fraction": 0.2}
    code, log, path = _run(flower, tmp_path, "instahide", encoding="instahide", **shared)
    assert code == 0, log[-3000:]
    summary = json.loads(path.read_text())
    privacy = summary["privacy"]
    assert privacy["encoding"] == "instahide" and (privacy["k"], privacy["k_private"]) == (4, 2)
    assert privacy["noise_mode"] == "none" and privacy["tau"] is None and "snr_pc1" not in privacy
    assert summary["rounds"] == 1
    # digits: 1,438 training rows; round(0.2 x 1438) = 288 form the public pool.
    assert privacy["public_pool_size"]["min"] == privacy["public_pool_size"]["max"] == 288
    held_out = _held_out_validation_rows({"public-fraction": 0.2})
    assert summary["union"]["train_rows"] == sum(p["num-examples"] for p in summary["parties"]) == 1438 - 288 - held_out
    assert privacy["exposures_per_private_sample"]["as_private_component"]["max"] == 2
    chance = 2 / min(p["num-examples"] for p in summary["parties"])
    assert 5 * chance < privacy["reidentification_rate"]["mean"] <= 1  # |x~| is close to |x| far above chance
    assert "InstaHide k = 4" in log and "no calibrated noise" in log

    code, log, path = _run(flower, tmp_path, "singularized-public", **shared)
    assert code == 0, log[-3000:]
    other = json.loads(path.read_text())
    assert other["privacy"]["encoding"] == "singularized"
    sizes = lambda s: sorted((p["partition-id"], p["num-examples"], p["num-val"]) for p in s["parties"])  # noqa: E731
    assert sizes(other) == sizes(summary)


@FEDPROX_RUNS
def test_fedprox_runs_end_to_end(flower, tmp_path):
    """selection = "last": no evaluate message at all, the last round's model reported; the
    server still evaluates the global model on the test set every round for the curves."""
    code, log, path = _run(flower, tmp_path, "fedprox", strategy="fedprox")
    assert code == 0, log[-3000:]
    summary = json.loads(path.read_text())
    assert summary["strategy"] == "fedprox"
    assert summary["rounds"] == TINY["num-rounds"]
    history = summary["history"]
    assert [h["round"] for h in history] == [1, 2]
    assert all({"test_accuracy", "train_loss"} <= set(h) and "val_loss" not in h for h in history)
    assert summary["result"]["selected_at"] == 2 and summary["result"]["selected_val_loss"] is None
    assert summary["result"]["test_accuracy"] == history[-1]["test_accuracy"]
    # Each round sends the model to every party once (train) and gets it back once.
    comm = summary["communication"]
    assert comm["bytes_downloaded"] == pytest.approx(comm["bytes_uploaded"], rel=0.01)
    assert comm["messages_sent"] == TINY["num-rounds"] * PARTIES
    assert 10 < summary["result"]["test_accuracy"] <= 100  # percent


def test_fedprox_selection_on_validation(flower, tmp_path):
    code, log, path = _run(flower, tmp_path, "fedprox-val", strategy="fedprox", selection="validation")
    assert code == 0, log[-3000:]
    summary = json.loads(path.read_text())
    history = summary["history"]
    assert all({"val_loss", "test_accuracy", "train_loss"} <= set(h) for h in history)
    best = min(history, key=lambda h: h["val_loss"])
    assert summary["result"]["selected_at"] == best["round"]
    assert summary["result"]["test_accuracy"] == best["test_accuracy"]
    # Each round sends the model to every party twice (train, evaluate) and gets it back once.
    comm = summary["communication"]
    assert comm["bytes_downloaded"] == pytest.approx(2 * comm["bytes_uploaded"], rel=0.01)


_VOLATILE = ("seconds", "started_utc", "memory", "run-name", "output-dir", "node-id", "node_id", "nodes",
             "buffer_peak_bytes", "grow_events")


def _stable(value):
    """A summary without what may differ between two runs of one configuration: times,
    memory (the union buffer is sized from whichever reply arrives first), the run's name and
    folder, and Flower's random node ids."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not any(tag in k for tag in _VOLATILE)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@DEFENCE_RUNS
def test_client_side_defences_run_end_to_end_and_leave_auditable_models(flower, tmp_path):
    """Fed-AugMix and DP-Mix_self through `flwr run` on the same partitions as plain FedProx:
    the summary names the defence, DP parties report the epsilon the accountant gives for the
    steps they took, and the saved global models feed the gradient-leakage audit."""
    import torch

    from common.defences.dp_mix import dp_mix_epsilon
    from client.party import load_party
    from common.config import parse_run_config
    from simulations.studies.gradient_audit import AuditProtocol, audit_party, load_global_models

    summaries = {}
    for defence in ("fed-augmix", "dp-mix-self"):
        code, log, path = _run(flower, tmp_path, defence, strategy="fedprox", defence=defence)
        assert code == 0, log[-3000:]
        summaries[defence] = json.loads(path.read_text())
    augmix = summaries["fed-augmix"]["defence"]
    assert augmix["defence"] == "fed-augmix" and augmix["model_norm"] == "batch"
    assert augmix["loss_scaling"]["large_weight"] == 5000.0
    assert len(augmix["large_weight_share_per_round"]) == TINY["num-rounds"]
    assert all(0.0 <= s <= 1.0 for s in augmix["large_weight_share_per_round"])
    dp = summaries["dp-mix-self"]
    assert dp["defence"]["model_norm"] == "layer"
    cfg = parse_run_config(dp["config"])
    sizes = [load_party(cfg, pid, PARTIES).train_x.shape[0] for pid in range(PARTIES)]
    expected = [dp_mix_epsilon(cfg, n, rounds=TINY["num-rounds"]) for n in sizes]
    assert dp["defence"]["epsilon_max"] == pytest.approx(max(expected))
    assert dp["defence"]["epsilon_min"] == pytest.approx(min(expected))
    assert 0 < dp["defence"]["epsilon_max"] < float("inf")
    # The global models the audit needs: the round-1 model and the selected round's.
    path = Path(tmp_path / "runs" / "dp-mix-self.weights.pt")
    models = load_global_models(path)
    assert models["selected_round"] == dp["result"]["selected_at"] and models["norm"] == "layer"
    assert set(models["initial"]) == set(models["selected"])
    assert not torch.equal(models["initial"]["net.1.weight"], models["selected"]["net.1.weight"])
    record, images = audit_party(cfg, party_id=0, num_parties=PARTIES, global_state=models["selected"],
                                 protocol=AuditProtocol(iterations=20))
    assert images["original"].shape == images["reconstruction"].shape == (4, 1, 8, 8)
    assert len(set(record["labels"])) == 4 and record["update_metrics"]["dp-steps"] == 5


def test_bad_run_config_value_names_the_key(flower, tmp_path):
    code, log, path = _run(flower, tmp_path, "bad", strategy="one-shot-mixup", beta=-1.0)
    assert not path.exists()
    assert "run config key 'beta'" in log


def test_cifar10_local_copy_with_backbone_weights_from_a_local_file(flower, tmp_path):
    """The issue's done-when command at test scale: a local CIFAR-10 copy (torchvision's
    pickle layout, random pixels), a ResNet-18 whose weights come from a local file (random
    weights saved like torchvision's hub file: no download is possible here), float16
    uploads, 32 px images to keep the CPU run short."""
    import torch
    from torchvision import models

    from loaders.format_writers import write_cifar10

    write_cifar10(tmp_path / "cifar", n_train=120, n_test=40, seed=2)
    weights = tmp_path / "resnet18-local.pth"
    torch.save(models.resnet18(weights=None).state_dict(), weights)
    code, log, path = _run(
        flower, tmp_path, "cifar", strategy="one-shot-mixup", dataset="cifar10",
        **{"data-dir": str(tmp_path / "cifar"), "backbone": "resnet18", "backbone-weights": str(weights),
           "image-size": 32, "feature-cache-dir": str(tmp_path / "cache"), "upload-dtype": "float16",
           "radius-sample": 8, "device": "cpu",
           "party-figures": "exact"},  # the radius figures below stay at the party when coarse
    )
    assert code == 0, log[-3000:]
    summary = json.loads(path.read_text())
    inputs = summary["inputs"]
    assert inputs["dataset"] == "cifar10" and inputs["backbone"] == "resnet18" and inputs["input_dim"] == 512
    assert inputs["backbone_weights"]["source"] == "local-file"
    assert inputs["backbone_weights"]["name"] == str(weights)
    assert inputs["preprocessing"]["mean"] == [0.4914, 0.4822, 0.4465]
    # One extraction per split, shared by the three parties and the server.
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    union = summary["union"]
    # 120 training images; each party holds 10 % out for selection (never released under "last").
    rows = 120 - sum(round(0.1 * n) for n in (40, 40, 40))
    assert union["dtype"] == "float16" and union["train_rows"] == rows and union["val_rows"] == 0
    # float16 inputs (512 per row) + float32 soft labels (10 per row), plus small records.
    release_bytes = rows * (512 * 2 + 10 * 4)
    assert release_bytes < summary["communication"]["bytes_uploaded"] < release_bytes * 1.1
    privacy = summary["privacy"]
    assert privacy["mf_formula"] == "paper" and privacy["upload_dtype"] == "float16"
    assert privacy["radius_space"].startswith("feature space")
    assert privacy["image_radius"]["mean"] > 0 and privacy["radius"]["mean"] > 0
    assert summary["memory"]["union_bytes"] > 0


SWEEP = """
name = "e2e"
seeds = [0]
[settings]
dataset = "digits"
central-epochs = 3
num-rounds = 3
[[table]]
name = "table5"
layout = "table5"
parties = [3]
beta = [1.0]
releases = ["once", "per-epoch"]
"""


def _flwr_runs(env) -> dict[int, str]:
    import subprocess

    from simulations.runtime.local_flower import _flwr

    proc = subprocess.run([_flwr(env), "ls", "--format", "json"], env=env, capture_output=True, text=True, timeout=60)
    return {int(r["run-id"]): r["status"] for r in json.loads(proc.stdout)["runs"]}


def test_sweep_through_flwr_stops_cleanly_on_sigterm_and_resumes(flower, tmp_path):
    """A real sweep: SIGTERM in the middle of a run stops that Flower run (not left to finish in
    the SuperLink), the next start computes only what is missing, a third computes nothing."""
    import signal
    import subprocess
    import sys
    import time

    import re

    from common.run_summary import FAILED_SUFFIX
    from simulations.report import read_runs_csv
    from simulations.runtime.local_flower import PROJECT_ROOT, flower_run_id
    from simulations.runtime.processes import processes_naming

    home, env = flower
    (tmp_path / "sweep.toml").write_text(SWEEP)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "simulations.sweep", str(tmp_path / "sweep.toml"), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    run_id = None
    while run_id is None:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the first run never started"
        for marker in (out / "inflight").glob("*.json") if (out / "inflight").exists() else []:
            log = out / "logs" / f"{marker.stem}.log"
            if log.exists():
                run_id = flower_run_id(log.read_text())
                session = re.search(r"(\S*mixupfl-sim-[^/\s]+)/app", log.read_text())
        time.sleep(0.5)
    time.sleep(3)  # inside the run
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 130, output
    assert "run the same command again" in output
    # The sweep ran in its own session (SuperLink, Ray cluster): stopping it stopped the run
    # with it, and nothing of the session is left running or on disk.
    # (Other sessions may run on the machine at the same time: only this sweep's is checked.)
    assert session is not None, "the run's command names its session's staged app"
    assert not Path(session.group(1)).exists()
    assert run_id not in _flwr_runs(env)  # never on the shared SuperLink
    assert not processes_naming(session.group(1))
    # No result; the cut-off attempt may have recorded its lost quorum (<name>.failed.json):
    # the next start sets that aside beside the attempt's log.
    assert not [p for p in (out / "summaries").glob("*.json") if not p.name.endswith(FAILED_SUFFIX)]

    first = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "computed 3, reused 0, restarted after interruption 1" in first.stdout
    assert any(".interrupted-" in p.name for p in (out / "logs").iterdir())
    assert not list((out / "summaries").glob(f"*{FAILED_SUFFIX}"))
    rows = read_runs_csv(out / "runs.csv")
    assert sorted((r["strategy"], r["release"]) for r in rows) == [
        ("fedprox", ""), ("one-shot-mixup", "once"), ("one-shot-mixup", "per-epoch")]
    per_epoch = next(r for r in rows if r["release"] == "per-epoch")
    assert per_epoch["exposures_per_sample"] == 3 and per_epoch["rounds"] == 3
    for name in ("table5.md", "release_modes.md", "one_shot_vs_iterative.md", "accuracy_vs_beta.png",
                 "fedprox_rounds.png", "report.md"):
        assert (out / name).stat().st_size > 0, name

    again = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "computed 0, reused 3" in again.stdout


def test_reference_points_pooled_clean_data_and_each_party_alone(flower, tmp_path):
    """The two reference points of a collaboration study through flwr run: the parties' clean
    rows pooled (no protection, the utility ceiling) and each party alone (no collaboration)."""
    code, log, path = _run(flower, tmp_path, "pooled", strategy="one-shot-mixup", encoding="pooled")
    assert code == 0, log[-3000:]
    pooled = json.loads(path.read_text())
    assert pooled["privacy"]["encoding"] == "pooled" and pooled["privacy"]["protection"].startswith("none")
    assert pooled["union"]["train_rows"] == 1438 - _held_out_validation_rows()
    assert "NO protection" in log
    code, log, path = _run(flower, tmp_path, "alone", strategy="local-only")
    assert code == 0, log[-3000:]
    alone = json.loads(path.read_text())
    per_party = alone["local_only"]["per_party_test_accuracy"]
    assert sorted(per_party) == ["0", "1", "2"]
    assert alone["result"]["test_accuracy"] == pytest.approx(sum(per_party.values()) / 3)
    assert alone["local_only"]["worst"] == min(per_party.values())
    assert not path.with_name(path.stem + ".weights.pt").exists()  # each party's own model stays with it
    # One model down and one up per party, nothing else.
    assert alone["communication"]["messages_sent"] == alone["communication"]["messages_received"] == PARTIES
    assert pooled["result"]["test_accuracy"] > alone["local_only"]["worst"]


@pytest.mark.parametrize("config", [
    pytest.param({"strategy": "one-shot-mixup"}, marks=ONE_SHOT_RUNS, id="one-shot"),
    pytest.param({"strategy": "fedprox"}, marks=FEDPROX_RUNS, id="fedprox"),
    pytest.param({"strategy": "fedprox", "defence": "fed-augmix"}, marks=DEFENCE_RUNS, id="fed-augmix"),
    pytest.param({"strategy": "fedprox", "defence": "dp-mix-self"}, marks=DEFENCE_RUNS, id="dp-mix-self"),
])
def test_two_runs_of_one_configuration_give_identical_summaries(flower, tmp_path, config):
    """Every draw derives from the seed (partitions, splits, mixing, initialisation, batch
    order, dropout, augmentation, DP sampling and noise), and replies are aggregated in party
    order: a rerun is bit for bit the same apart from times."""
    first = _FIRST_RUNS.get(frozenset(config.items()))  # the same configuration's earlier test run
    if first is None:
        code, log, first = _run(flower, tmp_path, "rerun-first", **config)
        assert code == 0, log[-3000:]
    code, log, again = _run(flower, tmp_path, "rerun", **config)
    assert code == 0, log[-3000:]
    assert again != first
    assert _stable(json.loads(first.read_text())) == _stable(json.loads(again.read_text()))
