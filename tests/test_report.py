"""The Table 5/6 sweep report: tables, counts, release modes, per-arm costs, plots and CLI."""

from __future__ import annotations

import csv
import json
import math
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
    TABLE4_CSV_COLUMNS,
    read_runs_csv,
    write_report,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MIXUP = "one-shot-mixup"
FEDPROX = ("fedprox", "")
ONCE = (MIXUP, "once")
PER_EPOCH = (MIXUP, "per-epoch")
INSTAHIDE_ONCE = ("instahide", "once")  # the one-shot strategy with the InstaHide encoding
SEEDS = (0, 1)
CENTRAL_EPOCHS = 20
FL_ROUNDS = 5
FL_SELECTED_ROUND = 4
MODEL_BYTES = 4_000  # one FL model upload
ROWS_PER_PARTY = 100  # mixed rows each party releases per release
ROW_BYTES = 1_000
TITLE = "test sweep"
SETTINGS = {"dataset": "digits", "num-rounds": FL_ROUNDS, "central-epochs": CENTRAL_EPOCHS, "tau": 1e-6,
            "noise-mode": "clamped", "proximal-mu": 1e-3}

# (block, layout, P, beta, rho) -> {arm: accuracy per seed}. P=50, beta=0.1 is a cell that
# FedProx wins; the "release" block reruns the P=10, beta=1.0 cell with different numbers so
# the tests can tell that the paper table uses the layout's own block.
ACCURACIES: dict[tuple[str, str, int, float, float], dict[tuple[str, str], list[float]]] = {
    ("table5", "table5", 10, 1.0, 1.0): {FEDPROX: [88.0, 89.0], ONCE: [89.0, 90.0]},
    ("table5", "table5", 10, 0.1, 1.0): {FEDPROX: [70.0, 72.0], ONCE: [75.0, 76.0]},
    ("table5", "table5", 50, 1.0, 1.0): {FEDPROX: [80.0, 81.0], ONCE: [85.0, 86.5]},
    ("table5", "table5", 50, 0.1, 1.0): {FEDPROX: [80.0, 82.0], ONCE: [78.0, 79.0]},
    ("table6", "table6", 50, 1.0, 1.0): {FEDPROX: [82.0, 83.0], ONCE: [87.0, 88.0]},
    ("table6", "table6", 50, 1.0, 0.1): {FEDPROX: [80.0, 81.0], ONCE: [88.0, 88.5]},
    ("release", "table5", 10, 1.0, 1.0): {ONCE: [60.0, 61.0], PER_EPOCH: [62.0, 64.0]},
}


def _bytes_uploaded(*, arm: tuple[str, str], parties: int) -> int:
    if arm == FEDPROX:
        return parties * FL_ROUNDS * MODEL_BYTES
    releases = CENTRAL_EPOCHS if arm[1] == "per-epoch" else 1
    return parties * releases * ROWS_PER_PARTY * ROW_BYTES


def _make_run(*, block: str, layout: str, parties: int, beta: float, rho: float, arm: tuple[str, str], seed: int,
              accuracy: float, dataset: str, backbone: str, summaries: Path, public_fraction: float = 0.0) -> dict:
    strategy, release = arm
    run_key = f"{block}-P{parties}-b{beta}-r{rho}-{strategy}-{release or 'fl'}-s{seed}"
    instahide = strategy == "instahide"
    if instahide:
        strategy = MIXUP
    encoding = "instahide" if instahide else ("singularized" if strategy == MIXUP else "")
    summary_path = summaries / f"{run_key}.json"
    is_fl = strategy != MIXUP
    if is_fl:
        # Accuracy climbs to the selected round, then dips, so the final differs from the chosen one.
        history = [{"round": r, "train_loss": 1.0 / r, "val_loss": 1.0 / r, "val_accuracy": 0.5,
                    "test_loss": 1.0 / r, "test_accuracy": (accuracy - 2.0 * (FL_SELECTED_ROUND - r)) / 100}
                   for r in range(1, FL_ROUNDS + 1)]
        summary = {"history": history, "result": {"selected_round": FL_SELECTED_ROUND}}
    else:
        history = [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5, "lr": 1e-3}
                   for e in range(1, CENTRAL_EPOCHS + 1)]
        summary = {"history": history, "result": {"selected_epoch": 15}}
    summary_path.write_text(json.dumps(summary))
    releases = 0 if is_fl else (1 if release == "once" else CENTRAL_EPOCHS)
    uploaded = _bytes_uploaded(arm=arm, parties=parties)
    downloaded = parties * FL_ROUNDS * MODEL_BYTES if is_fl else 0
    return {
        "run_key": run_key, "table": block, "layout": layout, "strategy": strategy, "release": release,
        "encoding": encoding, "defence": "none" if is_fl else "", "parties": parties, "beta": beta, "rho": rho,
        "seed": seed, "dataset": dataset, "backbone": backbone, "noise_mode": "" if is_fl or instahide else "clamped",
        "tau": None if is_fl or instahide else 1e-6,
        "instahide_k": 4 if instahide else None, "instahide_k_private": 2 if instahide else None,
        "public_fraction": public_fraction, "label_skew": 0.25 if beta < 0.5 else 0.1, "test_rows": 400,
        "test_accuracy": accuracy, "selected_at": FL_SELECTED_ROUND if is_fl else 15,
        "last_test_accuracy": accuracy - 0.5, "selection": "validation",
        "selected_by": "highest val_accuracy over rounds" if is_fl else "highest val_accuracy over epochs",
        "rounds": FL_ROUNDS if is_fl else releases, "releases_per_party": releases, "exposures_per_sample": releases,
        "bytes_uploaded": uploaded, "bytes_downloaded": downloaded,
        "bytes_uploaded_per_party": uploaded / parties, "bytes_downloaded_per_party": downloaded / parties,
        "wall_seconds": 10.0 + seed, "snr_pc1_mean": None if is_fl or instahide else 0.0123,
        "summary_path": str(summary_path),
    }


def make_runs(folder: Path, *, dataset: str = "digits", backbone: str = "none",
              seeds: tuple[int, ...] = SEEDS, blocks: tuple[str, ...] = ("table5", "table6", "release"),
              accuracies: dict | None = None, public_fraction: float = 0.0) -> list[dict]:
    summaries = folder / "summaries"
    summaries.mkdir(parents=True, exist_ok=True)
    runs = []
    for (block, layout, parties, beta, rho), arms in (ACCURACIES if accuracies is None else accuracies).items():
        if block not in blocks:
            continue
        for arm, values in arms.items():
            for seed in seeds:
                runs.append(_make_run(block=block, layout=layout, parties=parties, beta=beta, rho=rho, arm=arm,
                                      seed=seed, accuracy=values[seed], dataset=dataset, backbone=backbone,
                                      summaries=summaries, public_fraction=public_fraction))
    return runs


def _table_rows(markdown: str, *, first_cell: str | None = None) -> list[list[str]]:
    """Data rows of the Markdown tables in ``markdown`` (header and rule lines skipped)."""
    rows = []
    for line in markdown.splitlines():
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in ("# Parties P", "Block", "Method"):
            continue
        if first_cell is None or cells[0] == first_cell:
            rows.append(cells)
    return rows


T_975_1DF = 12.706204736174707  # Student's t quantile for a 95 % interval from 2 seeds (1 degree of freedom)


def _ci_text(values: list[float], *, signed: bool = False) -> str:
    # By hand, for two seeds: mean ± t(0.975, 1) * s / sqrt(2), s the sample std (divisor n - 1).
    assert len(values) == 2
    mean = sum(values) / 2
    half = T_975_1DF * abs(values[0] - values[1]) / math.sqrt(2) / math.sqrt(2)
    head = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return f"{head} [{mean - half:.2f}, {mean + half:.2f}]"


def _mean_std_text(values: list[float]) -> str:
    # By hand: the sample standard deviation divides by n - 1.
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.2f} ± {std:.2f}"


@pytest.fixture(scope="module")
def digits_report(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("digits")
    runs = make_runs(folder)
    files = write_report(runs, out_dir=folder / "report", title=TITLE, settings=SETTINGS)
    return runs, files


@pytest.fixture(scope="module")
def cifar_report(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("cifar")
    runs = make_runs(folder, dataset="cifar10", backbone="resnet18")
    files = write_report(runs, out_dir=folder / "report", title=TITLE, settings={**SETTINGS, "dataset": "cifar10"})
    return runs, files


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
TABLE4_ACCURACIES: dict[tuple[str, str, int, float, float], dict[tuple[str, str], list[float]]] = {
    ("table4", "table5", 5, 1.0, 1.0): {FEDPROX: [95.0, 96.0], ONCE: [93.0, 94.0], INSTAHIDE_ONCE: [92.0, 94.0]},
    ("table4", "table5", 5, 0.1, 1.0): {FEDPROX: [90.0, 91.0], ONCE: [85.0, 86.0], INSTAHIDE_ONCE: [88.0, 89.0]},
}
TABLE4_PUBLIC_FRACTION = 0.2


def make_table4_runs(folder: Path, *, accuracies: dict | None = None, **kwargs) -> list[dict]:
    return make_runs(folder, blocks=("table4",), accuracies=accuracies or TABLE4_ACCURACIES,
                     public_fraction=TABLE4_PUBLIC_FRACTION, **kwargs)


@pytest.fixture(scope="module")
def instahide_report(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("instahide")
    runs = make_runs(folder) + make_table4_runs(folder)
    files = write_report(runs, out_dir=folder / "report", title=TITLE, settings=SETTINGS)
    return runs, files


def _table4_rows(markdown: str) -> dict[str, list[str]]:
    """Table 4's rows by the first words of their label ("InstaHide", "singularized", "FedProx", "Δ")."""
    return {row[0].split(" (")[0]: row[1:] for row in _table_rows(markdown)}


def test_table4_has_hand_computed_cells_and_a_plain_count(instahide_report):
    _, files = instahide_report
    text = files.table4_md.read_text()
    assert text.startswith("# test sweep: Table 4 layout: InstaHide (k = 4, k_private = 2) vs singularized mixup on "
                           "the same partitions")
    assert "| Method | P=5, β=1.0 | P=5, β=0.1 |" in text.splitlines()
    rows = _table4_rows(text)
    assert rows["InstaHide"] == [_ci_text([92.0, 94.0]), _ci_text([88.0, 89.0])] \
        == ["93.00 [80.29, 105.71]", "88.50 [82.15, 94.85]"]
    assert rows["singularized mixup"] == [_ci_text([93.0, 94.0]), _ci_text([85.0, 86.0])]
    assert rows["FedProx"] == [_ci_text([95.0, 96.0]), _ci_text([90.0, 91.0])]
    # Paired per seed: (+1, 0) and (-3, -3).
    assert rows["Δ"] == ["+0.50 [-5.85, 6.85] inconclusive", "-3.00 [-3.00, -3.00] behind"]
    assert "| InstaHide (k = 4, k_private = 2) |" in text
    assert "| singularized mixup (tau = 1e-06, noise mode clamped) |" in text
    assert ("singularized mixup is ahead of InstaHide in 0 and behind in 1 of 2 cells, inconclusive in 1; mean Δ "
            "(singularized − InstaHide) ranges from -3.00 to +0.50 points.") in text
    assert "does NOT reproduce" not in text  # behind clearly in 1 of 2 cells only
    # The header names how every number was made.
    for fragment in ("Data set: `digits`; backbone: `none`", "Seeds: 0, 1 (2 seeds)", "Release mode: `once`",
                     "noise mode `clamped`, tau = 1e-06", "k = 4 samples per encoded row, k_private = 2",
                     "public-fraction = 0.2", "`selection = validation` for every method", "Same partitions",
                     "paired per seed"):
        assert fragment in text, fragment
    assert "The paper's Table 4 numbers are not shown: the data set (digits) is not one of the paper's" in text
    assert "paper (" not in text


def test_instahide_rows_never_reach_the_mixup_column(instahide_report, digits_report):
    _, files = instahide_report
    table5 = files.table5.read_text()
    rows = {(row[0], row[1]): row for row in _table_rows(table5)}
    # The table4 block fills Table 5's P=5 cells with singularized mixup alone.
    assert rows[("5", "1.0")][3:] == [_ci_text([95.0, 96.0]), _ci_text([93.0, 94.0]), "-2.00 [-2.00, -2.00]",
                                      "behind"]
    assert rows[("5", "0.1")][4] == _ci_text([85.0, 86.0])
    assert "93.00 [80.29, 105.71]" not in table5 and "InstaHide" not in table5
    assert "singularized mixup is ahead of FedProx in 2 and behind in 2 of 6 cells" in table5
    _, digits_files = digits_report
    assert _table_rows(files.release_modes.read_text()) == _table_rows(digits_files.release_modes.read_text())
    assert files.table6.read_text() == digits_files.table6.read_text()


def test_table4_csv_and_the_index(instahide_report):
    _, files = instahide_report
    with files.table4_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == TABLE4_CSV_COLUMNS
        rows = {(r["method"], float(r["beta"])): r for r in reader}
    assert set(rows) == {(method, beta) for method in ("instahide", "singularized", "fedprox") for beta in (1.0, 0.1)}
    instahide = rows[("instahide", 0.1)]
    assert float(instahide["test_accuracy_mean"]) == pytest.approx(88.5)
    assert float(instahide["test_accuracy_std"]) == pytest.approx(math.sqrt(0.5))
    assert (instahide["instahide_k"], instahide["instahide_k_private"], instahide["tau"]) == ("4", "2", "")
    assert float(instahide["public_fraction"]) == TABLE4_PUBLIC_FRACTION and instahide["minus_instahide_mean"] == ""
    singularized = rows[("singularized", 0.1)]
    assert float(singularized["minus_instahide_mean"]) == pytest.approx(85.5 - 88.5)
    assert singularized["noise_mode"] == "clamped" and singularized["encoding"] == "singularized"
    assert rows[("fedprox", 1.0)]["minus_instahide_mean"] == ""
    index = files.report.read_text()
    assert "[table4.md](table4.md), [table4.csv](table4.csv), [table5.md](table5.md)" in index
    assert index.index("## test sweep: Table 4 layout") < index.index("## test sweep: Table 5")
    assert files.written()[:3] == (files.table4_md, files.table4_csv, files.table5)


def test_one_shot_vs_iterative_lists_instahide_as_its_own_arm(instahide_report):
    _, files = instahide_report
    with files.one_shot_vs_iterative_csv.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["table"] == "table4"]
    assert [(r["strategy"], r["encoding"]) for r in rows if r["beta"] == "0.1"] == [
        (MIXUP, "singularized"), (MIXUP, "instahide"), ("fedprox", "")]
    instahide = next(r for r in rows if r["encoding"] == "instahide" and r["beta"] == "0.1")
    assert float(instahide["test_accuracy_mean"]) == pytest.approx(88.5)
    assert instahide["tau"] == "" and instahide["snr_pc1_mean"] == "" and instahide["noise_mode"] == ""
    markdown = files.one_shot_vs_iterative_md.read_text()
    assert "| table4 | 5 | 0.1 | 1.0 | InstaHide (one-shot) | once | 88.50 [82.15, 94.85] |" in markdown


def test_no_table4_without_instahide_runs(digits_report):
    _, files = digits_report
    assert files.table4_md is None and files.table4_csv is None
    assert not (files.report.parent / "table4.md").exists()


@pytest.mark.parametrize(
    ("accuracies", "says", "does_not_say"),
    [
        # InstaHide clearly ahead in both cells: the paper's "matches" claim does not hold here.
        ({cell: {**arms, INSTAHIDE_ONCE: [v + 5.0 for v in arms[ONCE]]} for cell, arms in TABLE4_ACCURACIES.items()},
         ["ahead of InstaHide in 0 and behind in 2 of 2 cells", "mean Δ (singularized − InstaHide) = -5.00 points in "
          "every cell", "does NOT reproduce"], ["within 1 point"]),
        # Within a point everywhere: the size of the gaps the paper calls a match.
        ({cell: {**arms, INSTAHIDE_ONCE: [v + 0.25 for v in arms[ONCE]]} for cell, arms in TABLE4_ACCURACIES.items()},
         ["ahead of InstaHide in 0 and behind in 2 of 2 cells", "Every compared cell's mean Δ is within 1 point"],
         ["does NOT reproduce"]),
    ],
)
def test_table4_sentence_is_plain_about_the_papers_claim(tmp_path, accuracies, says, does_not_say):
    files = write_report(make_table4_runs(tmp_path, accuracies=accuracies), out_dir=tmp_path / "report", title=TITLE,
                         settings=SETTINGS)
    text = files.table4_md.read_text()
    for fragment in says:
        assert fragment in text, fragment
    for fragment in does_not_say:
        assert fragment not in text, fragment


def test_table4_paper_column_for_the_papers_data_set_and_backbone(tmp_path):
    runs = make_table4_runs(tmp_path, dataset="cifar10", backbone="resnet18")
    files = write_report(runs, out_dir=tmp_path / "report", title=TITLE, settings={**SETTINGS, "dataset": "cifar10"})
    text = files.table4_md.read_text()
    assert "| Method | P=5, β=1.0 | P=5, β=0.1 | paper (CIFAR-10) |" in text
    rows = _table4_rows(text)
    assert rows["InstaHide"][-1] == "91.20" and rows["singularized mixup"][-1] == "90.51"
    assert rows["Δ"] == ["+0.50 [-5.85, 6.85] inconclusive", "-3.00 [-3.00, -3.00] behind", "-0.69"]
    assert rows["FedProx"][-1] == ""
    assert "are not shown" not in text and "departs" not in text
    mnist = write_report(make_table4_runs(tmp_path / "mnist", dataset="mnist", backbone="resnet18"),
                         out_dir=tmp_path / "mnist-report", title=TITLE, settings={})
    assert _table4_rows(mnist.table4_md.read_text())["Δ"][-1] == "-0.34"


@pytest.mark.parametrize(
    ("dataset", "backbone", "settings", "reason"),
    [
        ("cifar10", "resnet50", {}, "the backbone (resnet50) is not the one the paper used for CIFAR-10"),
        ("cifar100", "resnet18", {}, "the backbone (resnet18) is not the one the paper used for CIFAR-100"),
        ("cifar10", "resnet18", {"data": "generated CIFAR-10-format class patterns (not CIFAR-10)"},
         "the data are generated"),
        ("cifar10", "resnet18", {"backbone-weights": "none"}, "random weights"),
    ],
)
def test_table4_paper_column_hidden_with_the_reason(tmp_path, dataset, backbone, settings, reason):
    files = write_report(make_table4_runs(tmp_path, dataset=dataset, backbone=backbone),
                         out_dir=tmp_path / "report", title=TITLE, settings=settings)
    text = files.table4_md.read_text()
    assert "paper (" not in text
    assert "The paper's Table 4 numbers are not shown: " in text and reason in text


def _write_csv_without(runs: list[dict], path: Path, *, dropped: tuple[str, ...]) -> None:
    columns = [column for column in RUNS_CSV_COLUMNS if column not in dropped]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)


def test_runs_csv_from_before_encodings_still_reads(digits_report, tmp_path):
    runs, files = digits_report
    old = tmp_path / "runs.csv"
    _write_csv_without(runs, old, dropped=("encoding", "instahide_k", "instahide_k_private", "public_fraction"))
    back = read_runs_csv(old)
    assert {run["encoding"] for run in back if run["strategy"] == MIXUP} == {"singularized"}
    assert {run["encoding"] for run in back if run["strategy"] != MIXUP} == {""}
    assert all(run["public_fraction"] == 0.0 and run["instahide_k"] is None for run in back)
    again = write_report(back, out_dir=tmp_path / "report", title=TITLE, settings=SETTINGS)
    assert again.table5.read_text() == files.table5.read_text() and again.table4_md is None
    # A column that was always there is still required.
    _write_csv_without(runs, tmp_path / "broken.csv", dropped=("tau",))
    with pytest.raises(ValueError, match="tau"):
        read_runs_csv(tmp_path / "broken.csv")


def test_committed_results_runs_csv_reads_as_singularized():
    committed = REPO_ROOT / "simulations" / "results" / "digits-default" / "runs.csv"
    if not committed.exists():
        pytest.skip("no committed digits-default results")
    with committed.open(newline="") as handle:
        header = next(csv.reader(handle))
    # The file predates the encoding and defence columns; reading such a file is what is tested.
    assert "encoding" not in header and "defence" not in header
    runs = read_runs_csv(committed)
    assert {run["encoding"] for run in runs if run["strategy"] == MIXUP} == {"singularized"}
    assert {run["defence"] for run in runs if run["strategy"] != MIXUP} == {"none"}
    assert {run["defence"] for run in runs if run["strategy"] == MIXUP} == {""}


# --------------------------------------------------------------------------- defences and other encodings


def _defended_copies(runs: list[dict], *, defence: str, accuracy: float) -> list[dict]:
    return [{**run, "run_key": f"{run['run_key']}-{defence}", "defence": defence, "test_accuracy": accuracy}
            for run in runs if run["strategy"] == "fedprox"]


def test_defended_runs_are_left_out_and_all_defended_is_refused(tmp_path):
    plain = make_runs(tmp_path, blocks=("table5",))
    reference = write_report(plain, out_dir=tmp_path / "plain", title=TITLE, settings=SETTINGS)
    defended = _defended_copies(plain, defence="fed-augmix", accuracy=11.0)
    files = write_report(plain + defended, out_dir=tmp_path / "mixed", title=TITLE, settings=SETTINGS)
    for name in ("table5.md", "one_shot_vs_iterative.md", "one_shot_vs_iterative.csv", "report.md"):
        assert (tmp_path / "mixed" / name).read_text() == (tmp_path / "plain" / name).read_text(), name
    assert "11.00" not in files.one_shot_vs_iterative_md.read_text()
    assert reference.written() == tuple(tmp_path / "plain" / path.name for path in files.written())
    with pytest.raises(ValueError, match="client-side defence"):
        write_report(defended, out_dir=tmp_path / "none", title=TITLE, settings=SETTINGS)


@pytest.fixture()
def second_comparator(monkeypatch: pytest.MonkeyPatch) -> str:
    """A comparator encoding registered for one test only (no k, no sign mask, no noise)."""
    from common.encodings import ENCODINGS, Encoding

    class TestHide(Encoding):
        name = "test-comparator"
        label = "TestHide"

        def encode(self, *args, **kwargs):  # noqa: ANN002, ANN003 - never called by the report
            raise NotImplementedError

        def privacy_summary(self, *args, **kwargs):  # noqa: ANN002, ANN003
            raise NotImplementedError

    monkeypatch.setitem(ENCODINGS._classes, TestHide.name, TestHide)
    return TestHide.name


def test_each_comparator_encoding_gets_its_own_table4_page(tmp_path, second_comparator):
    runs = make_table4_runs(tmp_path, dataset="cifar10", backbone="resnet18")
    only_instahide = write_report(runs, out_dir=tmp_path / "one", title=TITLE, settings={})
    other = [{**run, "run_key": run["run_key"] + "-other", "encoding": second_comparator, "instahide_k": None,
              "instahide_k_private": None, "test_accuracy": run["test_accuracy"] - 10.0}
             for run in runs if run["encoding"] == "instahide"]
    files = write_report(runs + other, out_dir=tmp_path / "two", title=TITLE, settings={})
    text = files.table4_md.read_text()
    # The InstaHide page is unchanged; the new comparator's page follows it.
    assert text.startswith(only_instahide.table4_md.read_text() + "\n# ")
    page = text[len(only_instahide.table4_md.read_text()) + 1:]
    assert page.startswith(f"# {TITLE}: Table 4 layout: TestHide vs singularized mixup on the same partitions")
    assert "- TestHide: no noise" in page and "random sign mask" not in page
    rows = _table4_rows(page)
    assert rows["TestHide"] == [_ci_text([82.0, 84.0]), _ci_text([78.0, 79.0])]
    assert rows["Δ"] == ["+10.50 [4.15, 16.85] ahead", "+7.00 [7.00, 7.00] ahead"]
    # The paper measured InstaHide only: its numbers and claim stay off this page.
    assert "The paper's Table 4 numbers are not shown: the paper's Table 4 compares with InstaHide, not TestHide" \
        in page
    assert "paper (" not in page and "The paper's Table 4 has" not in page
    assert "singularized mixup is ahead of TestHide in 2 and behind in 0 of 2 cells" in page
    with files.table4_csv.open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert {row["method"] for row in csv_rows} == {"instahide", "singularized", "fedprox", second_comparator}
    one_shot = files.one_shot_vs_iterative_md.read_text()
    assert "(and one-shot InstaHide and TestHide)" in one_shot.splitlines()[0]
    assert "| table4 | 5 | 0.1 | 1.0 | TestHide (one-shot) | once | 78.50 [72.15, 84.85] |" in one_shot
    assert files.table5.read_text() == only_instahide.table5.read_text()
