"""The Table 5/6 sweep report: tables, counts, release modes, per-arm costs, plots and CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from simulations.report.paper_numbers import (
    PAPER_PRINTED_DELTA5,
    PAPER_PRINTED_DELTA6,
    PAPER_TABLE5,
    PAPER_TABLE6,
    paper_cell,
    paper_delta,
)
from simulations.report import (
    ONE_SHOT_VS_ITERATIVE_COLUMNS,
    RUNS_CSV_COLUMNS,
    read_runs_csv,
    write_report,
)
from report_fixtures import (  # noqa: F401 - fixtures are found by name
    REPO_ROOT,
    MIXUP,
    FEDPROX,
    ONCE,
    SEEDS,
    CENTRAL_EPOCHS,
    ROWS_PER_PARTY,
    ROW_BYTES,
    TITLE,
    SETTINGS,
    ACCURACIES,
    make_runs,
    _table_rows,
    _ci_text,
    digits_report,
    cifar_report,
    _bytes_uploaded,
)


def test_paper_numbers_match_the_printed_delta_columns():
    assert len(PAPER_TABLE5) == 9 and len(PAPER_TABLE6) == 9
    for key, pair in PAPER_TABLE5.items():
        assert paper_delta(pair) == pytest.approx(PAPER_PRINTED_DELTA5[key], abs=0.005)
    for key, pair in PAPER_TABLE6.items():
        assert paper_delta(pair) == pytest.approx(PAPER_PRINTED_DELTA6[key], abs=0.005)
    assert paper_cell(layout="table5", parties=100, beta=0.1) == (77.35, 82.18)
    assert paper_cell(layout="table6", parties=50, beta=0.5, rho=0.01) == (81.70, 88.56)
    assert paper_cell(layout="table6", parties=10, beta=0.5, rho=0.01) is None


def test_table5_has_the_papers_layout_order_and_hand_computed_cells(digits_report):
    _, files = digits_report
    text = files.table5.read_text()
    assert ("| # Parties P | Dirichlet β | label skew | FedProx | singularized mixup (ours) | paired Δ [95 % CI] "
            "| verdict |") in text.splitlines()
    rows = _table_rows(text)
    # P ascending, beta descending, one row per (P, beta).
    assert [(row[0], row[1]) for row in rows] == [("10", "1.0"), ("10", "0.1"), ("50", "1.0"), ("50", "0.1")]
    p10_b1 = rows[0]
    assert p10_b1[2] == "0.10"  # the fixture's label skew of a beta = 1.0 cell
    assert p10_b1[3] == _ci_text([88.0, 89.0]) == "88.50 [82.15, 94.85]"
    assert p10_b1[4] == _ci_text([89.0, 90.0])  # table5 block, not the release block's 60.50
    # Paired per seed: +1 and +1, no spread, so the interval is a point and the cell is ahead.
    assert p10_b1[5:] == ["+1.00 [1.00, 1.00]", "ahead"]
    p50_b01 = rows[3]
    assert p50_b01[5] == _ci_text([78.0 - 80.0, 79.0 - 82.0], signed=True) == "-2.50 [-8.85, 3.85]"
    assert p50_b01[6] == "inconclusive"
    assert "60.50" not in text


def test_table_headers_name_how_numbers_were_made(digits_report):
    _, files = digits_report
    for path in (files.table5, files.table6, files.release_modes, files.one_shot_vs_iterative_md):
        text = path.read_text()
        assert "`num-rounds = 5`" in text and "`proximal-mu = 0.001`" in text
        assert "Seeds: 0, 1 (2 seeds)" in text
        assert "Data set: `digits`; backbone: `none`" in text
        assert "highest val_accuracy over" in text
    table5 = files.table5.read_text()
    assert "release `once`" in table5 and "noise mode `clamped`" in table5
    assert "tau = 1e-06 NOMINAL (clamped noise: Theorem 2 does not hold), measured directional SNR" in table5
    assert "`selection = validation` for every method" in table5
    assert "Test set: 400 samples drawn from each run's seed; one sample = 0.25 accuracy points" in table5


def test_ahead_count_counts_only_cells_whose_interval_excludes_zero(digits_report):
    _, files = digits_report
    table5 = files.table5.read_text()
    # Paired deltas: (+1, +1) ahead, (+5, +4) inconclusive, (+5, +5.5) ahead, (-2, -3) inconclusive.
    assert ("singularized mixup is ahead of FedProx in 2 and behind in 0 of 4 cells; 2 are inconclusive at this "
            "many seeds. The paper reports it ahead of FedProx in all 9.") in table5
    assert "does NOT reproduce" not in table5
    table6 = files.table6.read_text()
    assert "ahead of FedProx in 2 and behind in 0 of 2 cells" in table6
    assert "holds significantly in every cell" in table6


def test_a_cell_fedprox_wins_significantly_says_the_claim_does_not_reproduce(tmp_path):
    accuracies = {("table5", "table5", 10, 1.0, 1.0): {FEDPROX: [90.0, 91.0], ONCE: [85.0, 86.2]}}
    runs = make_runs(tmp_path, blocks=("table5",), accuracies=accuracies)
    text = write_report(runs, out_dir=tmp_path / "report", title=TITLE, settings={}).table5.read_text()
    assert _table_rows(text)[0][5:] == [_ci_text([-5.0, -4.8], signed=True), "behind"]
    assert "behind in 1 of 1 cells" in text and "does NOT reproduce" in text


def test_delta_is_refused_between_runs_selected_by_different_rules(tmp_path):
    runs = make_runs(tmp_path, blocks=("table5",))
    for run in runs:
        if run["strategy"] == MIXUP:
            run["selection"] = "mixed-validation"
    text = write_report(runs, out_dir=tmp_path / "report", title=TITLE, settings={}).table5.read_text()
    rows = _table_rows(text)
    assert all(row[5] == "refused: selection rules differ (mixed-validation, validation)" for row in rows)
    assert all(row[6] == "–" for row in rows)
    assert "DIFFERENT RULES, no Δ between them" in text and "4 cells have no Δ" in text


def test_table6_adds_size_ratio_and_sorts_rho_descending(digits_report):
    _, files = digits_report
    text = files.table6.read_text()
    assert ("| # Parties P | Dirichlet β | Size ratio ρ | label skew | FedProx | singularized mixup (ours) "
            "| paired Δ [95 % CI] | verdict |") in text
    rows = _table_rows(text)
    assert [row[:3] for row in rows] == [["50", "1.0", "1.0"], ["50", "1.0", "0.1"]]
    assert rows[1][4:] == [_ci_text([80.0, 81.0]), _ci_text([88.0, 88.5]), _ci_text([8.0, 7.5], signed=True),
                           "ahead"]


def test_paper_columns_only_for_cifar10_on_resnet18(digits_report, cifar_report):
    _, digits_files = digits_report
    for path in (digits_files.table5, digits_files.table6):
        text = path.read_text()
        assert "paper FedProx" not in text
        assert "The paper's numbers are not shown because the data set/backbone (digits / none) differ" in text
    _, cifar_files = cifar_report
    table5 = cifar_files.table5.read_text()
    assert ("| # Parties P | Dirichlet β | label skew | FedProx | singularized mixup (ours) | paired Δ [95 % CI] "
            "| verdict | paper FedProx | paper mixup | paper Δ |") in table5
    assert "are not shown" not in table5
    # Same data set and backbone, but the fixture's 5 FL rounds are not the paper's 50: said, not hidden.
    assert "departs from the paper's protocol in: FL rounds 5 (paper 50)." in table5
    rows = {(row[0], row[1]): row for row in _table_rows(table5)}
    assert rows[("10", "1.0")][7:] == ["87.50", "88.38", "+0.88"]
    assert rows[("50", "0.1")][7:] == ["75.21", "81.73", "+6.52"]
    table6 = {(row[0], row[1], row[2]): row for row in _table_rows(cifar_files.table6.read_text())}
    # Table 6's paper Δ gets the sign Table 6 itself leaves out.
    assert table6[("50", "1.0", "0.1")][8:] == ["81.56", "88.67", "+7.11"]


def test_paper_columns_blank_where_the_paper_has_no_cell(tmp_path):
    runs = make_runs(tmp_path, dataset="cifar10", backbone="resnet18", blocks=("table5",))
    for run in runs:
        if run["parties"] == 50:
            run["parties"] = 20  # the paper has no P = 20
    files = write_report(runs, out_dir=tmp_path / "report", title=TITLE, settings={})
    rows = {(row[0], row[1]): row for row in _table_rows(files.table5.read_text())}
    assert rows[("20", "1.0")][7:] == ["", "", ""]
    assert rows[("10", "0.1")][7:] == ["75.10", "81.14", "+6.04"]


def test_release_modes_compare_exposures_once_vs_every_epoch(digits_report):
    _, files = digits_report
    rows = _table_rows(files.release_modes.read_text())
    # Only the release block ran both modes, for one cell.
    assert [(row[0], row[2], row[3], row[4], row[5]) for row in rows] == [
        ("release", "10", "1.0", "1.0", "once"), ("release", "10", "1.0", "1.0", "per-epoch")]
    once, per_epoch = rows
    assert once[6] == _ci_text([60.0, 61.0]) and per_epoch[6] == _ci_text([62.0, 64.0])
    assert per_epoch[7] == _ci_text([2.0, 3.0], signed=True) + " inconclusive" == "+2.50 [-3.85, 8.85] inconclusive"
    assert (once[8], per_epoch[8]) == ("1", str(CENTRAL_EPOCHS))  # exposures per private sample
    assert (once[9], per_epoch[9]) == ("1", str(CENTRAL_EPOCHS))  # releases per party
    assert once[10] == f"{ROWS_PER_PARTY * ROW_BYTES / 2**20:.2f}"
    assert per_epoch[10] == f"{CENTRAL_EPOCHS * ROWS_PER_PARTY * ROW_BYTES / 2**20:.2f}"
    assert (once[11], per_epoch[11]) == ("1", str(CENTRAL_EPOCHS))


def test_one_shot_vs_iterative_csv_has_one_row_per_group_with_per_party_bytes(digits_report):
    runs, files = digits_report
    with files.one_shot_vs_iterative_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == ONE_SHOT_VS_ITERATIVE_COLUMNS
        rows = list(reader)
    expected_groups = {(block, parties, beta, rho, *arm)
                       for (block, _, parties, beta, rho), arms in ACCURACIES.items() for arm in arms}
    got = [(r["table"], int(r["parties"]), float(r["beta"]), float(r["rho"]), r["strategy"], r["release"])
           for r in rows]
    assert len(got) == len(set(got)) == len(expected_groups)
    assert set(got) == expected_groups
    for row, key in zip(rows, got):
        block, parties, beta, rho, *arm = key
        expected_total = _bytes_uploaded(arm=tuple(arm), parties=parties)
        assert int(row["bytes_uploaded_total"]) == expected_total
        assert float(row["bytes_uploaded_per_party"]) == expected_total / parties
        assert int(row["n_seeds"]) == len(SEEDS)
        accuracies = ACCURACIES[(block, "table6" if block == "table6" else "table5", parties, beta, rho)][tuple(arm)]
        assert float(row["test_accuracy_mean"]) == pytest.approx(sum(accuracies) / len(accuracies))
    markdown = files.one_shot_vs_iterative_md.read_text()
    assert len(_table_rows(markdown)) == len(expected_groups)
    assert "1.91 MiB" in markdown  # per-epoch upload per party: 20 * 100 kB


def test_read_runs_csv_round_trips_types(digits_report, tmp_path):
    runs, _ = digits_report
    path = tmp_path / "runs.csv"
    # Written the way the sweep runner writes it: csv module, None as an empty cell.
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUNS_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(runs)
    back = read_runs_csv(path)
    assert back == runs
    fedprox = next(run for run in back if run["strategy"] == "fedprox")
    mixup = next(run for run in back if run["strategy"] == MIXUP)
    assert isinstance(fedprox["parties"], int) and isinstance(fedprox["bytes_uploaded"], int)
    assert isinstance(fedprox["beta"], float) and isinstance(fedprox["test_accuracy"], float)
    assert fedprox["tau"] is None and fedprox["snr_pc1_mean"] is None and fedprox["release"] == ""
    assert mixup["tau"] == 1e-6 and mixup["snr_pc1_mean"] == 0.0123


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 200 and image.shape[1] > 200


def test_plots_are_valid_pngs_and_the_index_links_them(digits_report):
    _, files = digits_report
    for path in (files.accuracy_vs_beta, files.accuracy_vs_rho, files.fedprox_rounds):
        _assert_png(path)
    index = files.report.read_text()
    for name in ("accuracy_vs_beta.png", "accuracy_vs_rho.png", "fedprox_rounds.png"):
        assert f"]({name})" in index
    # Tables appear in order: table 5, table 6, release modes, one-shot vs iterative.
    positions = [index.index(marker) for marker in (
        "## test sweep: Table 5", "## test sweep: Table 6", "## test sweep: release once vs per epoch",
        "## test sweep: one-shot singularized mixup vs iterative FL")]
    assert positions == sorted(positions)
    assert files.written() == (files.table5, files.table6, files.release_modes, files.one_shot_vs_iterative_md,
                               files.one_shot_vs_iterative_csv, files.accuracy_vs_beta, files.accuracy_vs_rho,
                               files.fedprox_rounds, files.report)
    assert all(path.is_file() for path in files.written())


def test_missing_summary_is_skipped_with_a_warning(tmp_path):
    runs = make_runs(tmp_path, blocks=("table5",))
    missing = next(run for run in runs if run["strategy"] == "fedprox")
    Path(missing["summary_path"]).unlink()
    with pytest.warns(UserWarning, match=f"run {missing['run_key']}: summary .* is missing"):
        files = write_report(runs, out_dir=tmp_path / "report", title=TITLE, settings={})
    _assert_png(files.fedprox_rounds)


def test_only_present_layouts_are_written_and_one_seed_is_marked(tmp_path):
    runs = make_runs(tmp_path, seeds=(0,), blocks=("table6",))
    files = write_report(runs, out_dir=tmp_path / "report", title=TITLE, settings={})
    assert files.table5 is None and files.accuracy_vs_beta is None and files.release_modes is None
    assert not (tmp_path / "report" / "table5.md").exists()
    assert not (tmp_path / "report" / "release_modes.md").exists()
    # Reports only name files they wrote.
    for page in (tmp_path / "report").glob("*.md"):
        assert "release_modes.md" not in page.read_text(), page.name
    assert files.table6.is_file() and files.accuracy_vs_rho.is_file()
    rows = _table_rows(files.table6.read_text())
    assert rows[0][4] == "82.00 (1 seed, no interval)"
    assert "none recorded" in files.table6.read_text()
    # One seed measures no spread: the CSV leaves the std empty rather than claiming 0.
    with files.one_shot_vs_iterative_csv.open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert csv_rows and all(row["test_accuracy_std"] == "" and row["wall_seconds_std"] == "" for row in csv_rows)


def test_fedavg_is_labelled_as_such(tmp_path):
    runs = make_runs(tmp_path, blocks=("table5",))
    for run in runs:
        if run["strategy"] == "fedprox":
            run["strategy"] = "fedavg"
    files = write_report(runs, out_dir=tmp_path / "report", title=TITLE, settings={})
    text = files.table5.read_text()
    assert ("| # Parties P | Dirichlet β | label skew | FedAvg | singularized mixup (ours) | paired Δ [95 % CI] "
            "| verdict |") in text
    assert "ahead of FedAvg in 2 and behind in 0 of 4 cells" in text


def test_cli_regenerates_the_same_table5_from_the_csv(digits_report, tmp_path):
    runs, files = digits_report
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    with (sweep / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUNS_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(runs)
    (sweep / "settings.json").write_text(json.dumps(SETTINGS))
    out = tmp_path / "regenerated"
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.report", str(sweep / "runs.csv"), "--out", str(out), "--title", TITLE],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = [Path(line) for line in proc.stdout.splitlines()]
    assert out / "table5.md" in printed and out / "report.md" in printed
    assert (out / "table5.md").read_text() == files.table5.read_text()
    assert (out / "table6.md").read_text() == files.table6.read_text()


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"data": "generated CIFAR-10-format class patterns (not CIFAR-10)"}, "the data are generated"),
        ({"backbone-weights": "none"}, "random weights"),
    ],
)
def test_paper_columns_hidden_for_generated_data_or_random_backbone(tmp_path, settings, reason):
    runs = make_runs(tmp_path, dataset="cifar10", backbone="resnet18", blocks=("table5",))
    files = write_report(runs, out_dir=tmp_path / "report", title=TITLE, settings=settings)
    text = files.table5.read_text()
    assert "paper FedProx" not in text
    assert "The paper's numbers are not shown" in text and reason in text


# --------------------------------------------------------------------------- Table 4: InstaHide

# A "table4" block (Table 5 layout) where both encodings and FedProx ran on the same partitions.
# P=5, beta=1.0: singularized mixup 0.5 ahead, within the seeds' spread; P=5, beta=0.1:
# InstaHide 3 points ahead, more than one seed standard deviation.
