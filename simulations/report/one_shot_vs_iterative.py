"""Accuracy, rounds, bytes and wall time per arm: one-shot encodings against iterative FL.

This module owns ``one_shot_vs_iterative.md`` and ``.csv``: one row per (block, cell,
strategy, release, encoding), so that a comparator encoding (InstaHide today) is an arm of its
own, listed after singularized mixup of the same release.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from simulations.report.runs import (
    arm,
    arm_order,
    block_order,
    cell,
    comparator_encodings,
    encoding,
    is_comparator,
    method_label,
    paper_order,
    seeds,
    unique_by_run_key,
)
from common.stats import Interval
from simulations.report.spreads import format_interval, format_wall, sample_std, seed_interval, seed_spread
from simulations.report.text import header_block, human_bytes, integers_text, knob, raw_number, texts

__all__ = ["ONE_SHOT_VS_ITERATIVE_COLUMNS", "one_shot_vs_iterative_markdown", "one_shot_vs_iterative_rows",
           "write_one_shot_vs_iterative_csv"]

ONE_SHOT_VS_ITERATIVE_COLUMNS: tuple[str, ...] = (
    "table", "layout", "parties", "beta", "rho", "strategy", "release", "encoding", "n_seeds", "seeds",
    "test_accuracy_mean", "test_accuracy_std", "test_accuracy_ci_low", "test_accuracy_ci_high",
    "last_test_accuracy_mean", "selection", "selected_by", "rounds",
    "releases_per_party", "exposures_per_sample",
    "bytes_uploaded_total", "bytes_uploaded_per_party", "bytes_downloaded_total", "bytes_downloaded_per_party",
    "wall_seconds_mean", "wall_seconds_std", "noise_mode", "tau", "snr_pc1_mean",
)
"""Columns of ``one_shot_vs_iterative.csv``; std columns are empty where only one seed ran."""


def one_shot_vs_iterative_rows(runs: Sequence[dict]) -> list[dict[str, object]]:
    """One row of raw numbers per (block, cell, strategy, release, encoding), in report order;
    comparator encodings follow singularized mixup of the same release."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        key = (run["table"], run["layout"], *cell(run), *arm(run), run["encoding"])
        groups.setdefault(key, []).append(run)
    blocks = block_order(runs)

    def order(key: tuple) -> tuple:
        block, layout, parties, beta, rho, strategy, release, encoding_ = key
        return (blocks.index(block), layout, *paper_order((parties, beta, rho)), arm_order((strategy, release)),
                is_comparator({"encoding": encoding_}), encoding_)

    rows = []
    for key in sorted(groups, key=order):
        block, layout, parties, beta, rho, strategy, release, encoding_ = key
        members = unique_by_run_key(groups[key])
        accuracy = seed_spread(r["test_accuracy"] for r in members)
        interval = seed_interval(r["test_accuracy"] for r in members)
        last = seed_spread(r["last_test_accuracy"] for r in members)
        wall = seed_spread(r["wall_seconds"] for r in members)
        taus = [r["tau"] for r in members if r["tau"] is not None]
        snrs = [r["snr_pc1_mean"] for r in members if r["snr_pc1_mean"] is not None]
        rows.append({
            "table": block, "layout": layout, "parties": parties, "beta": beta, "rho": rho,
            "strategy": strategy, "release": release, "encoding": encoding_,
            "n_seeds": len(members), "seeds": " ".join(str(s) for s in seeds(members)),
            "test_accuracy_mean": accuracy.mean, "test_accuracy_std": sample_std(accuracy),
            "test_accuracy_ci_low": interval.low if interval.n > 1 else None,
            "test_accuracy_ci_high": interval.high if interval.n > 1 else None,
            "last_test_accuracy_mean": last.mean,
            "selection": texts((r["selection"] for r in members), empty=""),
            "selected_by": texts((r["selected_by"] for r in members), empty=""),
            "rounds": integers_text(r["rounds"] for r in members),
            "releases_per_party": integers_text(r["releases_per_party"] for r in members),
            "exposures_per_sample": integers_text(r["exposures_per_sample"] for r in members),
            # Bytes are a property of the configuration, not of the seed, but average anyway
            # so that a seed-dependent partition size cannot make one seed speak for all.
            "bytes_uploaded_total": statistics.fmean(r["bytes_uploaded"] for r in members),
            "bytes_uploaded_per_party": statistics.fmean(r["bytes_uploaded_per_party"] for r in members),
            "bytes_downloaded_total": statistics.fmean(r["bytes_downloaded"] for r in members),
            "bytes_downloaded_per_party": statistics.fmean(r["bytes_downloaded_per_party"] for r in members),
            "wall_seconds_mean": wall.mean, "wall_seconds_std": sample_std(wall),
            "noise_mode": texts((r["noise_mode"] for r in members), empty=""),
            "tau": statistics.fmean(taus) if taus else None,
            "snr_pc1_mean": statistics.fmean(snrs) if snrs else None,
        })
    return rows


def write_one_shot_vs_iterative_csv(rows: Sequence[dict], *, path: Path) -> None:
    """Write :func:`one_shot_vs_iterative_rows` to ``path`` (None as an empty cell)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ONE_SHOT_VS_ITERATIVE_COLUMNS)
        for row in rows:
            writer.writerow([
                # Byte counts read best as integers; knobs keep their float spelling (1.0, not 1).
                raw_number(row[column]) if column.startswith("bytes_") else ("" if row[column] is None else row[column])
                for column in ONE_SHOT_VS_ITERATIVE_COLUMNS
            ])


def _arm_name(row: Mapping[str, object]) -> str:
    if is_comparator(row):
        return f"{encoding(str(row['encoding'])).label} (one-shot)"
    return method_label(str(row["strategy"]))


def one_shot_vs_iterative_markdown(rows: Sequence[dict], runs: Sequence[dict], *, title: str,
                                   settings: Mapping[str, object]) -> str:
    """The Markdown page of :func:`one_shot_vs_iterative_rows`.

    Parameters
    ----------
    rows : sequence of dict
        :func:`one_shot_vs_iterative_rows` of ``runs``.
    runs : sequence of dict
        The typed runs, for the header.
    title : str
        Leads the heading.
    settings : mapping
        Run-config values common to the sweep, printed in the header.

    Returns
    -------
    str
        The page.
    """
    labels = [encoding(name).label for name in comparator_encodings(runs)]
    heading = ("one-shot singularized mixup vs iterative FL"
               + (f" (and one-shot {' and '.join(labels)})" if labels else ""))
    lines = header_block(title=title, heading=heading, runs=runs, settings=settings)
    lines += [
        "Bytes are the mean over seeds of what the run metered (total over parties, and per party). "
        "Rounds: 1 for release once, the server epochs for per-epoch release, the FL rounds otherwise. "
        "'Final' is the accuracy at the last round/epoch, shown beside and never used to choose."
        + "".join(f" '{label} (one-shot)' rows are the {label} encoding released like singularized mixup, a "
                  "comparator, not the paper's method." for label in labels),
        "",
    ]
    columns = ["Block", "P", "β", "ρ", "Strategy", "Release", "Test accuracy (%) [95 % CI]", "Seeds", "Final (%)", "Rounds",
               "Uploaded total", "Uploaded per party", "Downloaded total", "Downloaded per party", "Wall time (s)"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join([
            row["table"], str(row["parties"]), knob(row["beta"]), knob(row["rho"]), _arm_name(row),
            row["release"] or "—",
            format_interval(Interval(mean=row["test_accuracy_mean"], low=row["test_accuracy_ci_low"] or 0.0,
                                     high=row["test_accuracy_ci_high"] or 0.0, n=row["n_seeds"], confidence=0.95)),
            str(row["n_seeds"]), f"{row['last_test_accuracy_mean']:.2f}", row["rounds"],
            human_bytes(row["bytes_uploaded_total"]), human_bytes(row["bytes_uploaded_per_party"]),
            human_bytes(row["bytes_downloaded_total"]), human_bytes(row["bytes_downloaded_per_party"]),
            format_wall(row["wall_seconds_mean"], row["wall_seconds_std"]),
        ]) + " |")
    lines.append("")
    return "\n".join(lines)
