"""The tau x noise-mode privacy audit: Tables 1-3, measured leakage and panels from one command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from simulations.studies.privacy_audit import main

TINY = ["--taus", "1", "1e-6", "--private-size", "120", "--unet-seeds", "0", "1", "--unet-epochs", "1",
        "--unet-base", "8", "--linear-steps", "30"]


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    assert main([*TINY, "--lpips-uncalibrated", "--out", str(out)]) == 0
    return out


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_tables_have_one_row_per_mode_and_tau(audit):
    t1 = _rows(audit / "table1.csv")
    assert [r["noise_mode"] for r in t1] == ["strict", "clamped"]
    assert set(t1[0]) == {"dataset", "noise_mode", "tau=1", "tau=1e-06"}
    assert all(0.0 <= float(v) <= 100.0 for r in t1 for k, v in r.items() if k.startswith("tau="))
    for name in ("table2.csv", "table3.csv", "leakage.csv"):
        rows = _rows(audit / name)
        assert [(r["noise_mode"], float(r["tau"])) for r in rows] == [
            ("strict", 1.0), ("strict", 1e-6), ("clamped", 1.0), ("clamped", 1e-6)], name
    table1 = (audit / "table1.md").read_text()
    assert "UNCALIBRATED" in table1 and "0.7 in the text" in table1
    assert "| Data set | noise mode | τ = 1 | τ = 1e-06 |" in table1
    assert "| Data set | noise mode | τ | SNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | Best SNR (dB) |" in (audit / "table3.md").read_text()


def test_table3_aggregates_seeds_and_keeps_the_best(audit):
    for cell in sorted((audit / "cells").glob("*.json")):
        figures = json.loads(cell.read_text())
        per_seed = [s["snr_db"] for s in figures["unet"]["per_seed"]]
        assert [s["seed"] for s in figures["unet"]["per_seed"]] == [0, 1]
        assert figures["unet"]["best_snr_db"] == max(per_seed)
        assert figures["unet"]["snr_db"]["mean"] == pytest.approx(sum(per_seed) / 2)


def test_measured_leakage_separates_strict_from_clamped(audit):
    rows = {(r["noise_mode"], float(r["tau"])): r for r in _rows(audit / "leakage.csv")}
    strict, clamped = rows[("strict", 1e-6)], rows[("clamped", 1e-6)]
    # Strict noise at tau = 1e-6 hides the sources (chance ~ 2/120); clamping does not.
    assert float(strict["reidentification_rate"]) < 0.1 < float(clamped["reidentification_rate"])
    # Theorem 2 holds for the strict release (measured SNR below the bound), not for the clamped one.
    assert float(strict["measured_snr_pc1"]) <= float(strict["snr_bound_pc1"])
    assert float(clamped["measured_snr_pc1"]) > 1e3 * float(clamped["snr_bound_pc1"])
    assert "n/a (clamped)" in (audit / "leakage.md").read_text()


def test_panels_are_pngs_with_one_column_per_tau(audit):
    for mode in ("strict", "clamped"):
        image = mpimg.imread(audit / f"panels_{mode}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    report = (audit / "report.md").read_text()
    assert "![panels_strict](panels_strict.png)" in report
    assert all(f"## Table {k}" in report for k in (1, 2, 3)) and "## Measured leakage" in report


def test_without_lpips_weights_the_tables_say_not_computed(tmp_path):
    assert main([*TINY, "--noise-modes", "strict", "--unet-seeds", "0", "--out", str(tmp_path)]) == 0
    table1 = (tmp_path / "table1.md").read_text()
    assert "n/a" in table1 and "Not computed: no LPIPS backbone weights" in table1
    assert "| digits | strict | 1 |" in (tmp_path / "table2.md").read_text()


def test_a_missing_lpips_weights_file_is_a_clear_error(tmp_path, capsys):
    assert main([*TINY, "--lpips-weights", str(tmp_path / "absent.pth"), "--out", str(tmp_path)]) == 2
    assert "absent.pth" in capsys.readouterr().err


def test_prior_only_baseline_is_reported_and_independent_of_the_release(audit):
    rows = _rows(audit / "table3.csv")
    baselines = {round(float(r["prior_only_snr_db"]), 9) for r in rows}
    assert len(baselines) == 1  # the public mean image does not depend on tau or noise mode
    assert float(next(iter(baselines))) > 0  # digits' average already explains part of each image
    assert "prior only, SNR (dB)" in (audit / "table2.md").read_text()


def test_image_data_set_in_the_normalised_space(tmp_path):
    """CIFAR-10-format files (generated class patterns, not CIFAR-10) at native 32 px: per-channel
    valid ranges of Table 7's normalisation flow through mixing, attacks, metrics and panels."""
    from loaders.format_writers import write_cifar10
    from simulations.studies.audit_data import image_audit_data

    write_cifar10(tmp_path / "data", n_train=200, n_test=20, pixels="class-patterns")
    data = image_audit_data(dataset="cifar10", data_dir=str(tmp_path / "data"), private_size=64, public_size=96,
                            image_size=None, seed=0)
    assert data.sample_shape == (3, 32, 32) and data.public.shape[0] == 96
    lo, hi = data.valid_range
    assert lo.shape == (3, 32, 32) and bool((data.private >= lo - 1e-5).all() and (data.private <= hi + 1e-5).all())
    assert data.data_range.shape == (3,)
    out = tmp_path / "audit"
    code = main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--private-size", "64",
                 "--public-size", "96", "--taus", "1e-6", "--unet-seeds", "0", "--unet-epochs", "1",
                 "--unet-base", "8", "--linear-steps", "10", "--lpips-uncalibrated", "--out", str(out)])
    assert code == 0
    rows = _rows(out / "leakage.csv")
    assert [r["noise_mode"] for r in rows] == ["strict", "clamped"]
    assert "cifar10" in (out / "table2.md").read_text()
    assert mpimg.imread(out / "panels_clamped.png").shape[-1] in (3, 4)


def test_missing_image_data_set_is_a_clear_error(tmp_path, capsys):
    assert main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "nothing" in capsys.readouterr().err
