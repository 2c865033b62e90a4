"""The comparison driver's pure parts: TOML run-config rendering, overrides, the table."""

import math

import pytest

from simulations.compare import markdown_table, parse_overrides, summarise
from simulations.local_flower import run_config_arg, toml_literal


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
    out = {
        "strategy": strategy, "num_parties": parties, "rounds": 1 if snr else 50,
        "config": {"seed": seed}, "wall_seconds": wall,
        "result": {"test_accuracy": acc, "selected_by": "validation"},
        "communication": {"bytes_uploaded": up, "bytes_downloaded": down},
    }
    if snr is not None:
        out["privacy"] = {"release_mode": "once", "noise_mode": "clamped", "tau": 1e-6,
                          "snr_pc1": {"mean": snr, "max": 2 * snr}}
    return out


def test_summary_rows_give_mean_std_and_per_party_bytes():
    rows = summarise({
        "one-shot-mixup": [_summary("one-shot-mixup", 0, 0.90, 400, 4, 10, snr=3.0),
                           _summary("one-shot-mixup", 1, 0.94, 400, 4, 12, snr=5.0)],
        "fedprox": [_summary("fedprox", 0, 0.96, 4000, 8000, 40)],
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


def test_flower_scripts_are_written_where_a_bundle_has_none(tmp_path):
    """The GPU machine's PYTHONPATH bundle has Flower's packages but no console scripts;
    `flwr run` needs `flower-superlink` and `flwr-simulation` on PATH."""
    import subprocess

    from simulations.local_flower import ensure_flower_scripts

    env = {"PATH": "/usr/bin:/bin"}
    assert ensure_flower_scripts(tmp_path / "bin", env) is True
    assert env["PATH"].startswith(str(tmp_path / "bin"))
    for name in ("flwr", "flower-superlink", "flwr-simulation", "flwr-serverapp", "flwr-clientapp"):
        assert (tmp_path / "bin" / name).stat().st_mode & 0o111
    done = subprocess.run([str(tmp_path / "bin" / "flwr"), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1.41" in done.stdout
    assert ensure_flower_scripts(tmp_path / "bin2", env) is False  # already on PATH now


def test_gpu_share_lets_one_party_per_core_use_the_gpu():
    from simulations.federation import gpu_share

    assert gpu_share(10, 16) == 0.1
    assert gpu_share(100, 16) == 1 / 16
    assert gpu_share(50, 16) * 16 == 1.0
