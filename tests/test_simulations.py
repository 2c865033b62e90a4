"""The comparison preset's pure parts: TOML run-config rendering, overrides, its sweep, the table."""

import math

import pytest

from common.run_summary import RunSummary
from simulations.compare import compare_spec, markdown_table, summarise
from simulations.runtime.local_flower import run_config_arg, toml_literal
from simulations.sweep import expand_runs, parse_overrides


def test_toml_literals_keep_their_types():
    assert toml_literal(1) == "1"
    assert toml_literal(1.0) == "1.0"
    assert toml_literal(1e-6) == "1e-06"
    assert toml_literal(True) == "true"
    assert toml_literal("clamped") == "'clamped'"
    assert run_config_arg({"beta": 0.1, "seed": 2, "noise-mode": "strict"}) == "beta=0.1 seed=2 noise-mode='strict'"
    with pytest.raises(ValueError):
        toml_literal("it's")


def test_overrides_are_parsed_as_toml():
    assert parse_overrides(["beta=0.1", "seed=3", "noise-mode='strict'", "secure-rng=true"]) == {
        "beta": 0.1, "seed": 3, "noise-mode": "strict", "secure-rng": True}
    with pytest.raises(ValueError):
        parse_overrides(["beta"])
    with pytest.raises(ValueError):
        parse_overrides(["noise-mode=strict"])  # unquoted string is not a TOML value


def _summary(strategy, seed, acc, up, down, wall, parties=4, snr=None):
    rounds = 1 if snr else 50
    out = {
        "strategy": strategy, "num_parties": parties, "rounds": rounds,
        "config": {"seed": seed}, "wall_seconds": wall,
        "result": {"test_accuracy": acc, "test_loss": 0.5, "selection": "validation", "selected_by": "validation",
                   "selected_at": 1, "last_test_accuracy": acc, "train_seconds": 1.0},
        "communication": {"bytes_uploaded": up, "bytes_downloaded": down, "bytes_uploaded_per_party": up / parties,
                          "bytes_downloaded_per_party": down / parties, "messages_sent": parties * rounds,
                          "messages_received": parties * rounds},
        "started_utc": "2026-12-02T00:00:00+00:00", "versions": {}, "server_device": "cpu", "inputs": {},
    }
    if snr is not None:
        out["privacy"] = {"encoding": "singularized", "release_mode": "once", "noise_mode": "clamped", "tau": 1e-6,
                          "releases_per_party": {"max": 1}, "exposures_per_sample": {"max": 1},
                          "snr_pc1": {"mean": snr, "max": 2 * snr}}
    else:
        out["defence"] = {"defence": "none", "model_norm": "batch"}
    return RunSummary.model_validate(out)


def test_summary_rows_give_mean_std_and_per_party_bytes():
    rows = summarise({
        "one-shot-mixup": [_summary("one-shot-mixup", 0, 90.0, 400, 4, 10, snr=3.0),
                           _summary("one-shot-mixup", 1, 94.0, 400, 4, 12, snr=5.0)],
        "fedprox": [_summary("fedprox", 0, 96.0, 4000, 8000, 40)],
    })
    one, fed = rows
    assert one["test_accuracy_mean"] == pytest.approx(92.0)
    assert one["test_accuracy_std"] == pytest.approx(math.sqrt(8.0))  # sample std of 90, 94
    assert one["bytes_uploaded_per_party"] == 100
    assert one["snr_pc1_mean"] == 4.0 and one["snr_pc1_max"] == 10.0
    assert fed["test_accuracy_std"] == 0.0 and fed["noise_mode"] == "n/a"
    table = markdown_table(rows, config={})
    assert "| test accuracy (%) | 92.00 ± 2.83 | 96.00 ± 0.00 |" in table
    assert "| release mode | once | none (raw data stays local) |" in table


def test_the_comparison_is_one_sweep_cell_with_the_same_run_configs():
    """The preset's runs: one cell, every (strategy, seed), and run configs that differ from
    the plain --set values only by what the app would default to anyway."""
    from common.config import parse_run_config

    overrides = {"beta": 0.1, "noise-mode": "strict", "central-epochs": 3}
    spec, rest = compare_spec(strategies=["one-shot-mixup", "fedprox"], seeds=[0, 1], parties=4, overrides=overrides)
    assert rest == {"noise-mode": "strict", "central-epochs": 3}
    runs = expand_runs(spec, overrides=rest)
    assert [(r.strategy, r.seed, r.parties, r.beta) for r in runs] == [
        ("one-shot-mixup", 0, 4, 0.1), ("fedprox", 0, 4, 0.1), ("one-shot-mixup", 1, 4, 0.1), ("fedprox", 1, 4, 0.1)]
    for run in runs:
        plain = parse_run_config({**overrides, "strategy": run.strategy, "seed": run.seed})
        assert parse_run_config(run.run_config) == plain
    skew, _ = compare_spec(strategies=["fedprox"], seeds=[0], parties=3, overrides={"rho": 0.5})
    assert skew.table[0].layout == "table6" and expand_runs(skew)[0].run_config["partitioner"] == "size-skew"


def test_the_comparison_runs_as_a_sweep_and_resumes(tmp_path):
    from sweep_fakes import JournalingExecutor, journal

    from simulations.compare import main

    args = ["--out", str(tmp_path / "out"), "--seeds", "0", "1", "--num-parties", "3", "--set", "central-epochs=2",
            "--set", "beta=0.1"]
    assert main(args, executor=JournalingExecutor(tmp_path / "journal")) == 0
    assert len([e for e, _ in journal(tmp_path / "journal") if e == "start"]) == 4  # 2 strategies x 2 seeds
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| | one-shot-mixup | fedprox |" in table and "beta = 0.1; seeds 0 1;" in table
    assert main(args, executor=JournalingExecutor(tmp_path / "journal")) == 0  # nothing computed again
    assert len([e for e, _ in journal(tmp_path / "journal") if e == "start"]) == 4
    assert (tmp_path / "out" / "compare.md").read_text() == table
    with pytest.raises(SystemExit):  # the preset sets the seeds itself
        main([*args, "--set", "seed=3"], executor=JournalingExecutor(tmp_path / "journal"))


def test_flower_scripts_are_written_where_a_bundle_has_none(tmp_path):
    """The GPU machine's PYTHONPATH bundle has Flower's packages but no console scripts;
    `flwr run` needs `flower-superlink` and `flwr-simulation` on PATH."""
    import subprocess

    from simulations.runtime.local_flower import ensure_flower_scripts

    env = {"PATH": "/usr/bin:/bin"}
    assert ensure_flower_scripts(tmp_path / "bin", env) is True
    assert env["PATH"].startswith(str(tmp_path / "bin"))
    for name in ("flwr", "flower-superlink", "flwr-simulation", "flwr-serverapp", "flwr-clientapp"):
        assert (tmp_path / "bin" / name).stat().st_mode & 0o111
    done = subprocess.run([str(tmp_path / "bin" / "flwr"), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1.42" in done.stdout
    assert ensure_flower_scripts(tmp_path / "bin2", env) is False  # already on PATH now


def test_gpu_share_lets_one_party_per_core_use_the_gpu():
    from simulations.runtime.federation import gpu_share

    assert gpu_share(10, 16) == 0.1
    assert gpu_share(100, 16) == 1 / 16
    assert gpu_share(50, 16) * 16 == 1.0
