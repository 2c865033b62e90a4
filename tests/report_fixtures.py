"""Runs, summaries and helpers shared by the report tests (tests/test_report*.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from common.run_summary import Communication, Outcome, RunSummary
from simulations.report import (
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
        history = [{"round": r, "train_loss": 1.0 / r, "val_loss": 1.0 / r, "val_accuracy": 50.0,
                    "test_loss": 1.0 / r, "test_accuracy": accuracy - 2.0 * (FL_SELECTED_ROUND - r)}
                   for r in range(1, FL_ROUNDS + 1)]
    else:
        history = [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 50.0, "lr": 1e-3}
                   for e in range(1, CENTRAL_EPOCHS + 1)]
    selected_at = FL_SELECTED_ROUND if is_fl else 15
    summary = RunSummary(  # a summary of the current schema: accuracies in percent
        strategy=strategy, num_parties=parties, rounds=FL_ROUNDS if is_fl else 1, wall_seconds=10.0 + seed,
        result=Outcome(test_accuracy=accuracy, test_loss=0.5, selection="validation", selected_by="validation",
                       selected_at=selected_at, last_test_accuracy=accuracy - 0.5, train_seconds=1.0),
        communication=Communication(bytes_uploaded=0, bytes_downloaded=0, bytes_uploaded_per_party=0,
                                    bytes_downloaded_per_party=0, messages_sent=0, messages_received=0),
        history=history, started_utc="2026-12-02T00:00:00+00:00", versions={}, server_device="cpu", inputs={},
        config={"dataset": dataset, "seed": seed})
    summary.write(summary_path)
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
