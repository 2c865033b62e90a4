"""Report for a sweep that reproduces the paper's Tables 5 and 6 (section 5.3).

Input is the sweep runner's ``runs.csv`` (one row per run, columns :data:`RUNS_CSV_COLUMNS`);
output is a folder of Markdown tables, one CSV and PNG plots:

* ``table4.md`` / ``.csv`` (only when some run used the InstaHide encoding): the paper's
  Table 4 comparison, InstaHide against singularized mixup on the same partitions, one column
  per cell, Δ = singularized - InstaHide, the paper's numbers when the data set and backbone
  are the paper's, and a plain count of the cells in which singularized mixup is ahead.
* ``table5.md`` / ``table6.md``: the paper's layout, mean ± std over seeds, Δ = mixup - FedProx,
  the paper's own numbers beside ours when the sweep ran the paper's setting (CIFAR-10 on a
  frozen ResNet-18), and a plain count of the cells in which mixup is ahead. Only singularized
  mixup fills the mixup column, never an InstaHide run.
* ``release_modes.md``: release "once" against "per-epoch" for the cells that ran both
  (singularized mixup).
* ``one_shot_vs_iterative.md`` / ``.csv``: accuracy, rounds, bytes and wall time per arm
  (InstaHide, where it ran, is an arm of its own).
* ``accuracy_vs_beta.png``, ``accuracy_vs_rho.png``, ``fedprox_rounds.png``.
* ``report.md``: all of the above in one page.

Regenerate from a finished (or partly finished) sweep::

    python -m simulations.report runs/sweep/runs.csv --out runs/sweep/report --title "digits sweep"

Run settings common to the sweep are read from ``settings.json`` beside the CSV when present.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import textwrap
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import matplotlib

# The report is written on headless machines (and inside tests): pick the file-only backend
# before pyplot is imported, because pyplot locks in a backend on import.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from simulations.paper_tables import (  # noqa: E402
    PAPER_DATASET_NAMES,
    PAPER_FL_ROUNDS,
    PAPER_PROXIMAL_MU,
    PAPER_SETTING_DESCRIPTION,
    PAPER_TABLE4,
    PAPER_TABLE4_BACKBONES,
    PAPER_TABLE4_INSTAHIDE_K,
    PAPER_TABLE5,
    PAPER_TABLE6,
    PAPER_TAU,
    paper_cell,
    paper_delta,
    paper_setting_matches,
    paper_table4_cell,
    paper_table4_setting_matches,
)

RUNS_CSV_COLUMNS: tuple[str, ...] = (
    "run_key", "table", "layout", "strategy", "release", "encoding", "defence", "parties", "beta", "rho", "seed",
    "dataset", "backbone", "noise_mode", "tau", "instahide_k", "instahide_k_private", "public_fraction",
    "test_accuracy", "selected_at",
    "last_test_accuracy", "selected_by", "rounds", "releases_per_party", "exposures_per_sample",
    "bytes_uploaded", "bytes_downloaded", "bytes_uploaded_per_party", "bytes_downloaded_per_party",
    "wall_seconds", "snr_pc1_mean", "summary_path",
)
"""Columns of the sweep runner's ``runs.csv``, in file order. ``encoding`` is "singularized" or
"instahide" for the one-shot strategy and empty for the iterative ones; ``defence`` is the
iterative strategies' client-side defence ("none", "fed-augmix", "dp-mix-self", "dp-mix-diff"),
empty for the one-shot strategy; ``instahide_k`` and ``instahide_k_private`` are empty except for
InstaHide runs."""

# Columns added after runs.csv files were first written, with the value such a file means:
# before encodings existed every one-shot run was singularized mixup (coerce_run fills the
# encoding per row) and no public pool was held out.
_COLUMNS_ADDED_LATER: dict[str, object] = {
    "encoding": "", "instahide_k": None, "instahide_k_private": None, "public_fraction": 0.0, "defence": "",
}

_INT_COLUMNS = frozenset({
    "parties", "seed", "selected_at", "rounds", "releases_per_party", "exposures_per_sample",
    "bytes_uploaded", "bytes_downloaded",
})
_FLOAT_COLUMNS = frozenset({
    "beta", "rho", "test_accuracy", "last_test_accuracy", "bytes_uploaded_per_party",
    "bytes_downloaded_per_party", "wall_seconds",
})
# Empty for the FL strategies, which have no privacy mechanism to describe (and, except for
# public_fraction, for InstaHide, which adds no noise).
_OPTIONAL_FLOAT_COLUMNS = frozenset({"tau", "snr_pc1_mean", "public_fraction"})
# Empty except for InstaHide runs.
_OPTIONAL_INT_COLUMNS = frozenset({"instahide_k", "instahide_k_private"})

ONE_SHOT_VS_ITERATIVE_COLUMNS: tuple[str, ...] = (
    "table", "layout", "parties", "beta", "rho", "strategy", "release", "encoding", "n_seeds", "seeds",
    "test_accuracy_mean", "test_accuracy_std", "last_test_accuracy_mean", "selected_by", "rounds",
    "releases_per_party", "exposures_per_sample",
    "bytes_uploaded_total", "bytes_uploaded_per_party", "bytes_downloaded_total", "bytes_downloaded_per_party",
    "wall_seconds_mean", "wall_seconds_std", "noise_mode", "tau", "snr_pc1_mean",
)
"""Columns of ``one_shot_vs_iterative.csv``; std columns are empty where only one seed ran."""

TABLE4_CSV_COLUMNS: tuple[str, ...] = (
    "table", "layout", "parties", "beta", "rho", "release", "method", "encoding", "instahide_k",
    "instahide_k_private", "public_fraction", "noise_mode", "tau", "n_seeds", "seeds",
    "test_accuracy_mean", "test_accuracy_std", "minus_instahide_mean",
)
"""Columns of ``table4.csv``: one row per (block, cell, method), accuracy in percent of the model
selected on validation; ``method`` is "instahide", "singularized" or the FL strategy;
``minus_instahide_mean`` (singularized rows only) is Δ = singularized - InstaHide of the means."""

MIXUP = "one-shot-mixup"
INSTAHIDE = "instahide"
SINGULARIZED = "singularized"
FL_STRATEGIES = ("fedprox", "fedavg")
LAYOUTS = ("table5", "table6")

# Keyed by strategy, or by INSTAHIDE for the one-shot runs that used the InstaHide encoding.
_STRATEGY_NAMES = {"fedprox": "FedProx", "fedavg": "FedAvg", MIXUP: "singularized mixup", INSTAHIDE: "InstaHide"}
# Fixed colours per arm so that the same arm reads the same in every plot.
_ARM_COLOURS = {
    ("fedprox", ""): "C0",
    ("fedavg", ""): "C1",
    (MIXUP, "once"): "C3",
    (MIXUP, "per-epoch"): "C2",
}
_ARM_ORDER = [("one-shot-mixup", "once"), ("one-shot-mixup", "per-epoch"), ("fedprox", ""), ("fedavg", "")]
_PLOT_DPI = 120


# --------------------------------------------------------------------------- reading runs


def _parse_int(value: object, column: str, run_key: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"run {run_key}: column {column!r} holds a bool, expected an integer")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    # Some writers print integral numbers as "50.0"; accept those, nothing fractional.
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise ValueError(f"run {run_key}: column {column!r} = {value!r} is not an integer")
    return int(number)


def _parse_float(value: object, column: str, run_key: object, *, optional: bool) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise ValueError(f"run {run_key}: column {column!r} is empty")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"run {run_key}: column {column!r} = {value!r} is not a number") from None


def coerce_run(run: Mapping[str, object]) -> dict[str, object]:
    """One run with every column converted to its type.

    Parameters
    ----------
    run : mapping
        A run as the sweep runner holds it (typed) or as CSV gives it back (all strings).
        Converting an already typed run is a no-op, so both can be handed to
        :func:`write_report`.

    Returns
    -------
    dict
        A new dict: integers for counts, floats for knobs and measurements, None for an empty
        optional number (``tau``, ``snr_pc1_mean``, ``instahide_k``, ...), strings otherwise
        (empty, never None). A run from before encodings existed (no ``encoding``, ``instahide_k``,
        ``instahide_k_private`` or ``public_fraction``) reads as singularized mixup (one-shot) with
        no public pool; ``encoding`` is always "" for the iterative strategies.

    Raises
    ------
    ValueError
        If a column is missing or a required number is empty or unparsable.
    """
    run = {**_COLUMNS_ADDED_LATER, **run}
    missing = [column for column in RUNS_CSV_COLUMNS if column not in run]
    if missing:
        raise ValueError(f"run {run.get('run_key', '?')} lacks columns {missing}")
    run_key = run["run_key"]
    typed: dict[str, object] = dict(run)
    for column in RUNS_CSV_COLUMNS:
        value = run[column]
        if column in _INT_COLUMNS:
            typed[column] = _parse_int(value, column, run_key)
        elif column in _FLOAT_COLUMNS:
            typed[column] = _parse_float(value, column, run_key, optional=False)
        elif column in _OPTIONAL_FLOAT_COLUMNS:
            typed[column] = _parse_float(value, column, run_key, optional=True)
        elif column in _OPTIONAL_INT_COLUMNS:
            typed[column] = (None if value is None or (isinstance(value, str) and not value.strip())
                             else _parse_int(value, column, run_key))
        else:
            typed[column] = "" if value is None else str(value)
    if typed["strategy"] != MIXUP:
        typed["encoding"] = ""
        typed["defence"] = typed["defence"] or "none"  # runs from before defences existed were plain
    else:
        typed["defence"] = ""
        if not typed["encoding"]:
            typed["encoding"] = SINGULARIZED
    return typed


def read_runs_csv(path: Path | str) -> list[dict[str, object]]:
    """Read a sweep's ``runs.csv`` back with typed values.

    Parameters
    ----------
    path : Path or str
        The CSV the sweep runner wrote (header row = :data:`RUNS_CSV_COLUMNS`).

    Returns
    -------
    list of dict
        One dict per run, converted by :func:`coerce_run`, in file order. Files written before
        the encoding columns existed still read (see :func:`coerce_run`).
    """
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in RUNS_CSV_COLUMNS
                   if column not in (reader.fieldnames or []) and column not in _COLUMNS_ADDED_LATER]
        if missing:
            raise ValueError(f"{path}: header lacks columns {missing}")
        return [coerce_run(row) for row in reader]


def write_runs_csv(runs: Iterable[Mapping[str, object]], *, path: Path | str) -> Path:
    """Write runs in the ``runs.csv`` format that :func:`read_runs_csv` reads.

    Parameters
    ----------
    runs : iterable of mapping
        Runs with at least the :data:`RUNS_CSV_COLUMNS`; extra keys are dropped.
    path : Path or str
        Destination file (parents are created).

    Returns
    -------
    Path
        The file written. None values are written as empty cells; floats use ``repr`` so
        that they read back bit for bit.
    """
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Through a temporary file: a reader (or an interrupted sweep) never sees half a CSV.
    tmp = destination.with_name(destination.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RUNS_CSV_COLUMNS)
        for run in runs:
            writer.writerow(["" if run[column] is None else run[column] for column in RUNS_CSV_COLUMNS])
    os.replace(tmp, destination)
    return destination


# --------------------------------------------------------------------------- grouping and statistics


@dataclass(frozen=True)
class _Spread:
    """Mean and sample standard deviation (n - 1) over seeds; std is None for one seed."""

    mean: float
    std: float | None
    n: int


def _spread(values: Sequence[float]) -> _Spread | None:
    if not values:
        return None
    return _Spread(
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else None,
        n=len(values),
    )


def _cell(run: Mapping[str, object]) -> tuple[int, float, float]:
    return run["parties"], run["beta"], run["rho"]  # type: ignore[return-value]


def _arm(run: Mapping[str, object]) -> tuple[str, str]:
    return run["strategy"], run["release"]  # type: ignore[return-value]


def _method(run: Mapping[str, object]) -> str:
    """The run's strategy, with the one-shot runs that used the InstaHide encoding told apart."""
    return INSTAHIDE if run["encoding"] == INSTAHIDE else str(run["strategy"])


def _is_instahide(run: Mapping[str, object]) -> bool:
    return run["encoding"] == INSTAHIDE


def _is_defended(run: Mapping[str, object]) -> bool:
    """An iterative run whose parties used a client-side defence (Fed-AugMix, DP-Mix)."""
    return run.get("defence", "") not in ("", "none")


def _paper_order(cell: tuple[int, float, float]) -> tuple[int, float, float]:
    # The paper lists P ascending, then beta and rho descending (mild to strong skew).
    parties, beta, rho = cell
    return parties, -beta, -rho


def _arm_order(arm: tuple[str, str]) -> tuple[int, str, str]:
    return (_ARM_ORDER.index(arm) if arm in _ARM_ORDER else len(_ARM_ORDER), *arm)


def _unique_by_run_key(runs: Iterable[dict]) -> list[dict]:
    # The same run may be listed under two sweep blocks; it is one measurement.
    seen: set[object] = set()
    unique = []
    for run in runs:
        if run["run_key"] not in seen:
            seen.add(run["run_key"])
            unique.append(run)
    return unique


def _layout_runs(runs: Sequence[dict], *, layout: str) -> list[dict]:
    """Runs that make up the paper table and the accuracy plot of one layout.

    Several sweep blocks can hold the same (cell, arm), e.g. a ``release`` block that reruns
    Table 5 cells in both release modes. Pooling them would mix configurations, so where the
    block named after the layout has the (cell, arm) only its runs are used; other blocks fill
    (cell, arm) pairs it lacks.
    """
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        if run["layout"] == layout:
            groups.setdefault((_cell(run), _arm(run)), []).append(run)
    chosen: list[dict] = []
    for members in groups.values():
        preferred = [run for run in members if run["table"] == layout]
        chosen.extend(_unique_by_run_key(preferred or members))
    return chosen


def _by_cell_and_arm(runs: Iterable[dict]) -> dict[tuple[int, float, float], dict[tuple[str, str], list[dict]]]:
    table: dict[tuple[int, float, float], dict[tuple[str, str], list[dict]]] = {}
    for run in runs:
        table.setdefault(_cell(run), {}).setdefault(_arm(run), []).append(run)
    return table


def _baseline_strategy(runs: Iterable[dict]) -> str | None:
    # FedProx is the paper's baseline; FedAvg stands in only where a sweep ran it instead.
    strategies = {run["strategy"] for run in runs}
    for strategy in FL_STRATEGIES:
        if strategy in strategies:
            return strategy
    return None


# --------------------------------------------------------------------------- formatting


def _knob(value: float) -> str:
    # 1.0, 0.5, 0.1, 0.01 as the paper prints them.
    return f"{value:.1f}" if float(value).is_integer() else f"{value:g}"


def _format_spread(spread: _Spread | None, *, expected_n: int | None = None) -> str:
    if spread is None:
        return "–"
    if spread.std is None:
        return f"{spread.mean:.2f} ± 0.00 (1 seed)"
    text = f"{spread.mean:.2f} ± {spread.std:.2f}"
    if expected_n is not None and spread.n != expected_n:
        text += f" ({spread.n} seeds)"
    return text


def _rounded_delta(delta: float) -> float:
    # Signs are judged on the two decimals the table prints, so the count below the table
    # never disagrees with what a reader sees in the Δ column.
    rounded = round(delta, 2)
    return 0.0 if rounded == 0 else rounded


def _format_delta(delta: float | None) -> str:
    if delta is None:
        return "–"
    rounded = _rounded_delta(delta)
    return "0.00" if rounded == 0 else f"{rounded:+.2f}"


def _human_bytes(num_bytes: float | None) -> str:
    if num_bytes is None:
        return "–"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(num_bytes) >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes:.0f} B"


def _mib_number(num_bytes: float) -> str:
    mebibytes = num_bytes / 2**20
    return f"{mebibytes:,.2f}" if abs(mebibytes) >= 0.01 or mebibytes == 0 else f"{mebibytes:.2g}"


def _integers_text(values: Iterable[int]) -> str:
    distinct = sorted(set(values))
    if not distinct:
        return "–"
    if len(distinct) <= 4:
        return ", ".join(str(v) for v in distinct)
    return f"{distinct[0]}–{distinct[-1]}"


def _texts(values: Iterable[object], *, empty: str = "–") -> str:
    distinct = []
    for value in values:
        if value not in (None, "") and value not in distinct:
            distinct.append(value)
    return ", ".join(str(v) for v in distinct) if distinct else empty


def _taus_text(runs: Iterable[dict]) -> str:
    return _texts(f"{run['tau']:g}" for run in runs if run["tau"] is not None)


def _raw_number(value: float | None) -> object:
    if value is None:
        return ""
    return int(value) if float(value).is_integer() else value


def _settings_text(settings: Mapping[str, object]) -> str:
    if not settings:
        return "none recorded (no settings.json beside runs.csv)"

    def literal(value: object) -> str:
        try:
            return json.dumps(value)
        except TypeError:
            return str(value)

    return ", ".join(f"`{key} = {literal(value)}`" for key, value in settings.items())


def _arm_label(arm: tuple[str, str]) -> str:
    strategy, release = arm
    name = _STRATEGY_NAMES.get(strategy, strategy)
    return f"{name}, release {release}" if release else name


def _arm_colour(arm: tuple[str, str], *, fallback_index: int) -> str:
    return _ARM_COLOURS.get(arm, f"C{4 + fallback_index % 6}")


def _seeds(runs: Iterable[dict]) -> list[int]:
    return sorted({run["seed"] for run in runs})


def _demote_headings(markdown: str) -> str:
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines()) + "\n"


# --------------------------------------------------------------------------- paper tables


@dataclass(frozen=True)
class _PaperTableRow:
    cell: tuple[int, float, float]
    baseline: _Spread | None
    mixup: _Spread | None
    paper: tuple[float, float] | None

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.mixup is None:
            return None
        return self.mixup.mean - self.baseline.mean

    def cell_text(self, *, layout: str) -> str:
        parties, beta, rho = self.cell
        text = f"P={parties}, β={_knob(beta)}"
        return text + (f", ρ={_knob(rho)}" if layout == "table6" else "")


def _header_block(*, title: str, heading: str, runs: Sequence[dict], settings: Mapping[str, object],
                  lines_before_settings: Sequence[str] = ()) -> list[str]:
    """Markdown lines naming how every number below was made."""
    seeds = _seeds(runs)
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(_method(run), []).append(run)
    selection = "; ".join(
        f"{_STRATEGY_NAMES.get(method, method)}: {_texts(r['selected_by'] for r in members)}"
        for method, members in by_method.items()
    )
    rounds = "; ".join(
        f"{_STRATEGY_NAMES.get(method, method)} {_integers_text(r['rounds'] for r in members)}"
        for method, members in by_method.items()
    )
    selected_at = "; ".join(
        f"{_STRATEGY_NAMES.get(method, method)} "
        f"{'epoch' if method in (MIXUP, INSTAHIDE) else 'round'} {_integers_text(r['selected_at'] for r in members)}"
        for method, members in by_method.items()
    )
    mixup_runs = by_method.get(MIXUP, [])
    instahide_runs = by_method.get(INSTAHIDE, [])
    public_fractions = sorted({r["public_fraction"] for r in runs if r["public_fraction"] is not None})
    extra_lines = []
    if instahide_runs:
        extra_lines.append(
            f"- InstaHide: k = {_texts(r['instahide_k'] for r in instahide_runs)} samples per encoded row, "
            f"k_private = {_texts(r['instahide_k_private'] for r in instahide_runs)} of them private (the rest "
            "from the public pool), random sign mask, no noise")
    if instahide_runs or any(fraction > 0 for fraction in public_fractions):
        extra_lines.append(
            f"- Public pool: public-fraction = {_texts(f'{f:g}' for f in public_fractions)} of the training split "
            "held out before partitioning (no party holds it)")
    lines = [
        f"# {title}: {heading}",
        "",
        f"- Data set: `{_texts(r['dataset'] for r in runs)}`; backbone: `{_texts(r['backbone'] for r in runs)}`",
        f"- Singularized mixup: noise mode `{_texts((r['noise_mode'] for r in mixup_runs), empty='n/a')}`, "
        f"tau = {_taus_text(mixup_runs) if mixup_runs else 'n/a'}",
        *extra_lines,
        f"- Seeds: {', '.join(str(s) for s in seeds) or '–'} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}); "
        "cells are mean ± sample std (n - 1) over seeds",
        "- Accuracy: test accuracy (%) of the model selected on validation (never on test); the "
        "final round/epoch accuracy is reported beside it in one_shot_vs_iterative.md and never used to choose",
        f"- Model selection: {selection or '–'}",
        f"- Communication rounds: {rounds or '–'}; selected at: {selected_at or '–'}",
        *lines_before_settings,
        f"- Run settings common to the sweep: {_settings_text(settings)}",
        "",
    ]
    return lines


def _ahead_sentence(rows: Sequence[_PaperTableRow], *, layout: str, baseline_name: str) -> str:
    paper_pairs = list((PAPER_TABLE5 if layout == "table5" else PAPER_TABLE6).values())
    paper_ahead = sum(1 for pair in paper_pairs if paper_delta(pair) > 0)
    paper_text = (f"all {len(paper_pairs)}" if paper_ahead == len(paper_pairs)
                  else f"{paper_ahead} of {len(paper_pairs)}")
    compared = [row for row in rows if row.delta is not None]
    if not compared:
        return (f"No cell has both {baseline_name} and singularized mixup (release once) results, so nothing "
                f"can be compared yet; the paper reports singularized mixup ahead of FedProx in {paper_text} cells.")
    mixup_ahead = [row for row in compared if _rounded_delta(row.delta) > 0]
    baseline_ahead = [row for row in compared if _rounded_delta(row.delta) < 0]
    tied = [row for row in compared if _rounded_delta(row.delta) == 0]
    parts = [f"Singularized mixup is ahead of {baseline_name} in {len(mixup_ahead)} of {len(compared)} cells; "
             f"the paper reports it ahead of FedProx in {paper_text}."]
    if baseline_ahead:
        where = "; ".join(row.cell_text(layout=layout) for row in baseline_ahead)
        parts.append(f"{baseline_name} is ahead in {len(baseline_ahead)} of {len(compared)} cells ({where}), so the "
                     "paper's claim that singularized mixup outperforms FedProx in every setting does NOT reproduce "
                     "here.")
    if tied:
        parts.append(f"{len(tied)} cell{'s are' if len(tied) != 1 else ' is'} tied to two decimals.")
    if len(mixup_ahead) == len(compared):
        parts.append("The paper's direction (mixup ahead) holds in every cell compared here.")
    # A sign is only meaningful when the gap exceeds the seed-to-seed spread; say where it does not.
    unresolved = [
        row for row in compared
        if row.baseline.std is not None and row.mixup.std is not None
        and abs(row.delta) <= max(row.baseline.std, row.mixup.std)
    ]
    if unresolved:
        parts.append(f"In {len(unresolved)} of the {len(compared)} cells |Δ| is within one seed standard deviation, "
                     "so the sign there is not settled by this many seeds.")
    if baseline_name != "FedProx":
        parts.append("(The paper's baseline is FedProx; this sweep ran FedAvg.)")
    uncounted = len(rows) - len(compared)
    if uncounted:
        parts.append(f"{uncounted} cell{'s lack' if uncounted != 1 else ' lacks'} one of the two arms and "
                     f"{'are' if uncounted != 1 else 'is'} not counted.")
    return " ".join(parts)


def _paper_setting_differences(runs: Sequence[dict], *, settings: Mapping[str, object]) -> list[str]:
    """Where a sweep on the paper's data set and backbone still departs from the paper's protocol."""
    differences = []
    fl_rounds = sorted({run["rounds"] for run in runs if run["strategy"] in FL_STRATEGIES})
    if fl_rounds and fl_rounds != [PAPER_FL_ROUNDS]:
        differences.append(f"FL rounds {_integers_text(fl_rounds)} (paper {PAPER_FL_ROUNDS})")
    taus = sorted({run["tau"] for run in runs if run["strategy"] == MIXUP and run["tau"] is not None})
    if taus and any(not math.isclose(tau, PAPER_TAU) for tau in taus):
        differences.append(f"tau {', '.join(f'{t:g}' for t in taus)} (paper {PAPER_TAU:g})")
    mu = settings.get("proximal-mu")
    if isinstance(mu, (int, float)) and not math.isclose(float(mu), PAPER_PROXIMAL_MU):
        differences.append(f"proximal-mu {mu:g} (paper {PAPER_PROXIMAL_MU:g})")
    return differences


def _not_the_papers_inputs(settings: Mapping[str, object]) -> str:
    """Why a CIFAR-10 + ResNet-18 sweep still is not comparable with the paper's numbers
    (generated data, or a backbone without ImageNet weights); empty when it is."""
    reasons = []
    if "generated" in str(settings.get("data", "")):
        reasons.append(f"the data are {settings['data']}")
    if str(settings.get("backbone-weights", "")) == "none":
        reasons.append("the backbone has random weights (backbone-weights = 'none'), not ImageNet's")
    return "; ".join(reasons)


def _paper_table_markdown(runs: Sequence[dict], *, layout: str, title: str, settings: Mapping[str, object]) -> str:
    layout_runs = _layout_runs(runs, layout=layout)
    baseline = _baseline_strategy(layout_runs)
    baseline_name = _STRATEGY_NAMES[baseline] if baseline else "FedProx"
    baseline_arm = (baseline or "fedprox", "")
    mixup_arm = (MIXUP, "once")
    used = [run for run in layout_runs if _arm(run) in (baseline_arm, mixup_arm)]
    datasets = {run["dataset"] for run in layout_runs}
    backbones = {run["backbone"] for run in layout_runs}
    show_paper = (len(datasets) == 1 and len(backbones) == 1
                  and paper_setting_matches(dataset=next(iter(datasets)), backbone=next(iter(backbones))))
    not_the_papers_inputs = _not_the_papers_inputs(settings)

    grouped = _by_cell_and_arm(layout_runs)
    rows = [
        _PaperTableRow(
            cell=cell,
            baseline=_spread([r["test_accuracy"] for r in arms.get(baseline_arm, [])]),
            mixup=_spread([r["test_accuracy"] for r in arms.get(mixup_arm, [])]),
            paper=paper_cell(layout=layout, parties=cell[0], beta=cell[1], rho=cell[2]),
        )
        for cell, arms in sorted(grouped.items(), key=lambda item: _paper_order(item[0]))
    ]
    expected_n = len(_seeds(used))

    heading = ("Table 5, Dirichlet label skew, equal party sizes" if layout == "table5"
               else "Table 6, label skew and one data-poor party (size ratio ρ)")
    release_line = ("- Singularized mixup column: release `once`, each party uploads its mixed features one time "
                    "(the paper's protocol); per-epoch release is compared in release_modes.md")
    if not any(_arm(run) == mixup_arm for run in layout_runs):
        release_line += "; NO release-once runs exist for this layout, so the column is empty"
    lines = _header_block(title=title, heading=heading, runs=used or layout_runs, settings=settings,
                          lines_before_settings=[release_line])
    if show_paper and not_the_papers_inputs:
        lines += [f"The paper's numbers are not shown: {not_the_papers_inputs}.", ""]
        show_paper = False
        rows = [replace(row, paper=None) for row in rows]
    elif show_paper:
        lines += [f"Paper columns: the paper's Table {layout[-1]} ({PAPER_SETTING_DESCRIPTION}); "
                  "blank where the paper has no such cell.", ""]
        differences = _paper_setting_differences(used, settings=settings)
        if differences:
            lines += ["This sweep departs from the paper's protocol in: " + "; ".join(differences)
                      + ". Read the paper columns with that in mind.", ""]
    else:
        lines += [f"The paper's numbers are not shown because the data set/backbone "
                  f"({', '.join(sorted(datasets))} / {', '.join(sorted(backbones))}) differ from the paper's "
                  "(CIFAR-10, frozen ImageNet ResNet-18).", ""]

    knob_columns = ["# Parties P", "Dirichlet β"] + (["Size ratio ρ"] if layout == "table6" else [])
    columns = knob_columns + [baseline_name, "singularized mixup (ours)", "Δ"]
    if show_paper:
        columns += ["paper FedProx", "paper mixup", "paper Δ"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        parties, beta, rho = row.cell
        cells = [str(parties), _knob(beta)] + ([_knob(rho)] if layout == "table6" else [])
        cells += [_format_spread(row.baseline, expected_n=expected_n),
                  _format_spread(row.mixup, expected_n=expected_n),
                  _format_delta(row.delta)]
        if show_paper:
            cells += ([f"{row.paper[0]:.2f}", f"{row.paper[1]:.2f}", f"{paper_delta(row.paper):+.2f}"]
                      if row.paper else ["", "", ""])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _ahead_sentence(rows, layout=layout, baseline_name=baseline_name), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- Table 4: InstaHide


_CLEARLY_BEHIND_POINTS = 1.0
"""Singularized mixup counts as clearly behind InstaHide in a cell when it trails by more than
this many points and by more than one seed standard deviation; the paper calls gaps of 0.34
(MNIST) and 0.69 (CIFAR-10) points a match."""

_RELEASE_ORDER = ("once", "per-epoch")
_BACKBONE_NAMES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}


@dataclass(frozen=True)
class _Table4Column:
    """One partition cell of the Table 4 layout: a sweep block's (P, β, ρ)."""

    block: str
    layout: str
    parties: int
    beta: float
    rho: float

    def label(self, *, with_block: bool) -> str:
        text = f"P={self.parties}, β={_knob(self.beta)}"
        if self.layout == "table6":
            text += f", ρ={_knob(self.rho)}"
        return f"{self.block}: {text}" if with_block else text


def _table4_column(run: Mapping[str, object]) -> _Table4Column:
    return _Table4Column(block=str(run["table"]), layout=str(run["layout"]), parties=int(run["parties"]),
                         beta=float(run["beta"]), rho=float(run["rho"]))


def _release_order(release: str) -> tuple[int, str]:
    return (_RELEASE_ORDER.index(release) if release in _RELEASE_ORDER else len(_RELEASE_ORDER)), release


@dataclass(frozen=True)
class _Table4:
    """What Table 4 is made of: its columns (cells), release modes, baseline and run groups.

    ``groups`` maps (method, release, column) to the runs of that entry, one per run key;
    method is :data:`INSTAHIDE`, :data:`MIXUP` (singularized) or the FL baseline (release "").
    """

    columns: list[_Table4Column]
    releases: list[str]
    baseline: str | None
    groups: dict[tuple[str, str, _Table4Column], list[dict]]

    def spread(self, method: str, release: str, column: _Table4Column) -> _Spread | None:
        return _spread([run["test_accuracy"] for run in self.groups.get((method, release, column), [])])

    def runs_of(self, method: str) -> list[dict]:
        return [run for (m, _, _), members in self.groups.items() if m == method for run in members]

    def used(self) -> list[dict]:
        return [run for members in self.groups.values() for run in members]


def _table4_data(runs: Sequence[dict]) -> _Table4:
    """The cells InstaHide ran in, with the singularized and FL runs of the same cells.

    Singularized runs count only with a release mode InstaHide ran with; cells are kept apart
    per sweep block, because two blocks may hold the same (P, β, ρ) with other settings.
    """
    instahide_runs = [run for run in runs if _is_instahide(run)]
    block_order = list(dict.fromkeys(run["table"] for run in runs))
    columns = sorted({_table4_column(run) for run in instahide_runs},
                     key=lambda c: (block_order.index(c.block), c.layout, *_paper_order((c.parties, c.beta, c.rho))))
    releases = sorted({str(run["release"]) for run in instahide_runs}, key=_release_order)
    in_cells = [run for run in runs if _table4_column(run) in set(columns)]
    baseline = _baseline_strategy(in_cells)
    groups: dict[tuple[str, str, _Table4Column], list[dict]] = {}
    for run in in_cells:
        method = _method(run)
        if (method in (INSTAHIDE, MIXUP) and run["release"] in releases) or method == baseline:
            groups.setdefault((method, str(run["release"]), _table4_column(run)), []).append(run)
    return _Table4(columns=columns, releases=releases, baseline=baseline,
                   groups={key: _unique_by_run_key(members) for key, members in groups.items()})


def _table4_paper_hidden_reason(runs: Sequence[dict], *, settings: Mapping[str, object]) -> str:
    """Why the paper's Table 4 numbers do not apply to these runs; empty when they do."""
    datasets = sorted({str(run["dataset"]) for run in runs})
    backbones = sorted({str(run["backbone"]) for run in runs})
    if len(datasets) != 1 or len(backbones) != 1:
        return (f"the runs mix data sets or backbones ({', '.join(datasets)} / {', '.join(backbones)}), and the "
                "paper reports one number per data set on one backbone")
    dataset, backbone = datasets[0], backbones[0]
    if dataset not in PAPER_TABLE4:
        return (f"the data set ({dataset}) is not one of the paper's Table 4 data sets "
                f"({', '.join(PAPER_DATASET_NAMES[name] for name in PAPER_TABLE4)})")
    if not paper_table4_setting_matches(dataset=dataset, backbone=backbone):
        return (f"the backbone ({backbone}) is not the one the paper used for {PAPER_DATASET_NAMES[dataset]} "
                f"(a frozen ImageNet {_BACKBONE_NAMES[PAPER_TABLE4_BACKBONES[dataset]]}, the paper's Table 7)")
    return _not_the_papers_inputs(settings)


def _table4_paper_differences(table: _Table4) -> list[str]:
    """Where runs on one of the paper's data sets still depart from its Table 4 protocol."""
    differences = []
    taus = sorted({run["tau"] for run in table.runs_of(MIXUP) if run["tau"] is not None})
    if taus and any(not math.isclose(tau, PAPER_TAU) for tau in taus):
        differences.append(f"tau {', '.join(f'{t:g}' for t in taus)} (paper {PAPER_TAU:g})")
    ks = sorted({run["instahide_k"] for run in table.runs_of(INSTAHIDE) if run["instahide_k"] is not None})
    if ks and ks != [PAPER_TABLE4_INSTAHIDE_K]:
        differences.append(f"InstaHide k {', '.join(str(k) for k in ks)} (paper {PAPER_TABLE4_INSTAHIDE_K})")
    return differences


def _paper_table4_claim() -> str:
    deltas = [f"{mixup - instahide:+.2f} on {PAPER_DATASET_NAMES[dataset]}"
              for dataset, (instahide, mixup) in PAPER_TABLE4.items() if instahide is not None]
    return (f"The paper's Table 4 has singularized mixup at Δ = {', '.join(deltas)} against InstaHide "
            f"(k = {PAPER_TABLE4_INSTAHIDE_K}) and calls MNIST and CIFAR-10 a match.")


def _table4_ahead_sentence(table: _Table4, *, release: str, with_release: bool) -> str:
    release_text = f" (release {release})" if with_release else ""
    pairs = [(column, table.spread(INSTAHIDE, release, column), table.spread(MIXUP, release, column))
             for column in table.columns]
    compared = [(column, instahide, mixup) for column, instahide, mixup in pairs
                if instahide is not None and mixup is not None]
    if not compared:
        return (f"No cell has both InstaHide and singularized mixup results{release_text}, so nothing can be "
                "compared yet. " + _paper_table4_claim())
    with_block = len({column.block for column in table.columns}) > 1
    deltas = [(column, _rounded_delta(mixup.mean - instahide.mean), instahide, mixup)
              for column, instahide, mixup in compared]
    ahead = [d for d in deltas if d[1] > 0]
    behind = [d for d in deltas if d[1] < 0]
    tied = [d for d in deltas if d[1] == 0]
    n = len(deltas)
    counts = f"Singularized mixup is ahead of InstaHide{release_text} in {len(ahead)} of {n} cells"
    counts += f", behind in {len(behind)}" + (f", tied to two decimals in {len(tied)}" if tied else "")
    low, high = min(d[1] for d in deltas), max(d[1] for d in deltas)
    if low == high:
        counts += (f"; Δ (singularized − InstaHide) = {_format_delta(low)} points"
                   + (" in every cell." if n > 1 else "."))
    else:
        counts += f"; Δ (singularized − InstaHide) ranges from {_format_delta(low)} to {_format_delta(high)} points."
    parts = [counts, _paper_table4_claim()]
    clearly_behind = [
        (column, delta) for column, delta, instahide, mixup in deltas
        if delta < -_CLEARLY_BEHIND_POINTS and -delta > max(instahide.std or 0.0, mixup.std or 0.0)
    ]
    if 2 * len(clearly_behind) > n:
        where = "; ".join(column.label(with_block=with_block) for column, _ in clearly_behind)
        parts.append(f"Here singularized mixup trails by more than {_CLEARLY_BEHIND_POINTS:g} point and more than "
                     f"one seed standard deviation in {len(clearly_behind)} of {n} cells ({where}), so the paper's "
                     "'matches InstaHide' does NOT reproduce in this setting.")
    elif all(abs(delta) <= _CLEARLY_BEHIND_POINTS for _, delta, _, _ in deltas):
        parts.append(f"Every compared cell is within {_CLEARLY_BEHIND_POINTS:g} point, the size of the gaps the paper "
                     "calls a match.")
    unresolved = [
        column for column, delta, instahide, mixup in deltas
        if instahide.std is not None and mixup.std is not None
        and abs(mixup.mean - instahide.mean) <= max(instahide.std, mixup.std)
    ]
    if unresolved:
        parts.append(f"In {len(unresolved)} of the {n} cells |Δ| is within one seed standard deviation, so the sign "
                     "there is not settled by this many seeds.")
    uncounted = len(pairs) - n
    if uncounted:
        parts.append(f"{uncounted} cell{'s lack' if uncounted != 1 else ' lacks'} one of the two encodings and "
                     f"{'are' if uncounted != 1 else 'is'} not counted.")
    return " ".join(parts)


def _table4(runs: Sequence[dict], *, title: str, settings: Mapping[str, object]) -> tuple[str, list[dict]]:
    """Markdown and CSV rows of the Table 4 layout: InstaHide vs singularized mixup per partition cell.

    Parameters
    ----------
    runs : sequence of dict
        Typed runs (:func:`coerce_run`), at least one of them InstaHide.
    title : str
        Leads the Markdown heading.
    settings : mapping
        Run-config values common to the sweep, printed in the header.

    Returns
    -------
    tuple of (str, list of dict)
        The Markdown page and the rows of ``table4.csv`` (:data:`TABLE4_CSV_COLUMNS`).
    """
    table = _table4_data(runs)
    used = table.used()
    instahide_runs = table.runs_of(INSTAHIDE)
    mixup_runs = table.runs_of(MIXUP)
    k_text = _texts(run["instahide_k"] for run in instahide_runs)
    k_private_text = _texts(run["instahide_k_private"] for run in instahide_runs)
    with_block = len({column.block for column in table.columns}) > 1
    with_release = len(table.releases) > 1
    expected_n = len(_seeds(used))

    public_fraction_by_column = {
        column: {run["public_fraction"] for (method, _, c), members in table.groups.items()
                 if c == column and method in (INSTAHIDE, MIXUP) for run in members}
        for column in table.columns
    }
    differing = [column for column, values in public_fraction_by_column.items() if len(values) > 1]
    if differing:
        where = "; ".join(column.label(with_block=with_block) for column in differing)
        partitions_line = (f"- NOT the same partitions in {where}: the two encodings ran with different "
                           "public-fraction values there")
    else:
        partitions_line = ("- Same partitions: in every cell both encodings ran with the same seeds, P, β and "
                           "public-fraction, so for each seed the parties hold the same data under both")
    knobs = "P parties, Dirichlet β" + (", size ratio ρ" if any(c.layout == "table6" for c in table.columns) else "")
    lines_before_settings = [
        f"- Release mode: {', '.join(f'`{r}`' for r in table.releases)} (both encodings); columns are the "
        f"partition cells ({knobs})",
        partitions_line,
        "- Δ = singularized mixup − InstaHide, of the means over seeds"
        + (f"; the {_STRATEGY_NAMES[table.baseline]} row is context (iterative, a different protocol)"
           if table.baseline else ""),
    ]
    heading = (f"Table 4 layout: InstaHide (k = {k_text}, k_private = {k_private_text}) vs singularized mixup on "
               "the same partitions")
    lines = _header_block(title=title, heading=heading, runs=used, settings=settings,
                          lines_before_settings=lines_before_settings)

    hidden_reason = _table4_paper_hidden_reason(used, settings=settings)
    paper = None if hidden_reason else paper_table4_cell(str(used[0]["dataset"]))
    if paper is None:
        lines += [f"The paper's Table 4 numbers are not shown: {hidden_reason}.", ""]
    else:
        dataset = str(used[0]["dataset"])
        lines += [f"Paper column: the paper's Table 4 for {PAPER_DATASET_NAMES[dataset]} (frozen ImageNet "
                  f"{_BACKBONE_NAMES[PAPER_TABLE4_BACKBONES[dataset]]}, tau = {PAPER_TAU:g}, "
                  f"InstaHide k = {PAPER_TABLE4_INSTAHIDE_K}). "
                  "The paper reports one number per data set from its accuracy experiments (section 5.2), not per "
                  "partition cell, so the same number stands beside every cell.", ""]
        differences = _table4_paper_differences(table)
        if differences:
            lines += ["These runs depart from the paper's Table 4 protocol in: " + "; ".join(differences)
                      + ". Read the paper column with that in mind.", ""]

    def release_suffix(release: str) -> str:
        return f", release {release}" if with_release else ""

    # (row label, method, release, paper value) in table order.
    method_rows: list[tuple[str, str, str, str]] = []
    for release in table.releases:
        method_rows.append((f"InstaHide (k = {k_text}, k_private = {k_private_text}){release_suffix(release)}",
                            INSTAHIDE, release,
                            "" if paper is None else ("–" if paper[0] is None else f"{paper[0]:.2f}")))
        release_mixup = [run for run in mixup_runs if run["release"] == release]
        method_rows.append((f"singularized mixup (tau = {_taus_text(release_mixup)}, noise mode "
                            f"{_texts(run['noise_mode'] for run in release_mixup)}){release_suffix(release)}",
                            MIXUP, release, "" if paper is None else f"{paper[1]:.2f}"))
    if table.baseline:
        baseline_runs = table.runs_of(table.baseline)
        method_rows.append((f"{_STRATEGY_NAMES[table.baseline]} ({_integers_text(r['rounds'] for r in baseline_runs)} "
                            "rounds, context)", table.baseline, "", ""))

    header = ["Method"] + [column.label(with_block=with_block) for column in table.columns]
    if paper is not None:
        header.append(f"paper ({PAPER_DATASET_NAMES[str(used[0]['dataset'])]})")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, method, release, paper_text in method_rows:
        cells = [label] + [_format_spread(table.spread(method, release, column), expected_n=expected_n)
                           for column in table.columns]
        lines.append("| " + " | ".join(cells + ([paper_text] if paper is not None else [])) + " |")
    for release in table.releases:
        deltas = []
        for column in table.columns:
            instahide, mixup = table.spread(INSTAHIDE, release, column), table.spread(MIXUP, release, column)
            deltas.append(_format_delta(None if instahide is None or mixup is None else mixup.mean - instahide.mean))
        if paper is not None:
            deltas.append("–" if paper[0] is None else f"{paper[1] - paper[0]:+.2f}")
        lines.append("| " + " | ".join([f"Δ (singularized − InstaHide){release_suffix(release)}"] + deltas) + " |")
    lines.append("")
    for release in table.releases:
        lines += [_table4_ahead_sentence(table, release=release, with_release=with_release), ""]

    csv_rows = []
    for _, method, release, _ in method_rows:
        for column in table.columns:
            members = table.groups.get((method, release, column), [])
            if not members:
                continue
            accuracy = _spread([run["test_accuracy"] for run in members])
            instahide = table.spread(INSTAHIDE, release, column)
            ks = {run["instahide_k"] for run in members}
            k_privates = {run["instahide_k_private"] for run in members}
            fractions = {run["public_fraction"] for run in members}
            taus = [run["tau"] for run in members if run["tau"] is not None]
            csv_rows.append({
                "table": column.block, "layout": column.layout, "parties": column.parties, "beta": column.beta,
                "rho": column.rho, "release": release,
                "method": {INSTAHIDE: INSTAHIDE, MIXUP: SINGULARIZED}.get(method, method),
                "encoding": _texts((run["encoding"] for run in members), empty=""),
                "instahide_k": ks.pop() if len(ks) == 1 else _texts(ks, empty=""),
                "instahide_k_private": k_privates.pop() if len(k_privates) == 1 else _texts(k_privates, empty=""),
                "public_fraction": fractions.pop() if len(fractions) == 1 else _texts(fractions, empty=""),
                "noise_mode": _texts((run["noise_mode"] for run in members), empty=""),
                "tau": statistics.fmean(taus) if taus else None,
                "n_seeds": len(members), "seeds": " ".join(str(s) for s in _seeds(members)),
                "test_accuracy_mean": accuracy.mean, "test_accuracy_std": accuracy.std,
                "minus_instahide_mean": (accuracy.mean - instahide.mean
                                         if method == MIXUP and instahide is not None else None),
            })
    return "\n".join(lines), csv_rows


def _write_table4_csv(rows: Sequence[dict], *, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE4_CSV_COLUMNS)
        for row in rows:
            writer.writerow(["" if row[column] is None else row[column] for column in TABLE4_CSV_COLUMNS])


# --------------------------------------------------------------------------- release modes


def _release_modes_markdown(runs: Sequence[dict], *, title: str, settings: Mapping[str, object]) -> str:
    mixup_runs = [run for run in runs if run["strategy"] == MIXUP]
    cells: dict[tuple, dict[str, list[dict]]] = {}
    for run in mixup_runs:
        key = (run["table"], run["layout"], *_cell(run))
        cells.setdefault(key, {}).setdefault(run["release"], []).append(run)
    both = {key: modes for key, modes in cells.items() if {"once", "per-epoch"} <= modes.keys()}
    block_order = list(dict.fromkeys(run["table"] for run in runs))
    ordered = sorted(both.items(), key=lambda item: (block_order.index(item[0][0]), item[0][1],
                                                     *_paper_order(item[0][2:])))
    used = [run for _, modes in ordered for mode in ("once", "per-epoch") for run in modes[mode]]
    lines = _header_block(title=title, heading="release once vs per epoch (singularized mixup)",
                          runs=used or mixup_runs, settings=settings)
    lines += [
        "'once': each party uploads one mixed set and the server trains on it for every epoch. "
        "'per-epoch': each party uploads a fresh mixed set every server epoch, so each private sample is the "
        "clean component of one more released row per epoch; more exposures give an attacker more views of "
        "the same image to combine. Exposures and releases are as counted by the run.",
        "",
    ]
    if not ordered:
        lines += ["No cell ran both release modes; per-epoch runs exist only in: "
                  + _texts(f"{run['table']} P={run['parties']} β={_knob(run['beta'])} ρ={_knob(run['rho'])}"
                           for run in mixup_runs if run["release"] == "per-epoch") + ".", ""]
        return "\n".join(lines)
    columns = ["Block", "Layout", "P", "β", "ρ", "Release", "Test accuracy (%)", "Δ vs once",
               "Exposures per private sample", "Releases per party", "Uploaded per party (MiB)", "Rounds",
               "Wall time (s)"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for (block, layout, parties, beta, rho), modes in ordered:
        once = _spread([r["test_accuracy"] for r in _unique_by_run_key(modes["once"])])
        for mode in ("once", "per-epoch"):
            members = _unique_by_run_key(modes[mode])
            accuracy = _spread([r["test_accuracy"] for r in members])
            wall = _spread([r["wall_seconds"] for r in members])
            delta = "" if mode == "once" else _format_delta(accuracy.mean - once.mean)
            lines.append("| " + " | ".join([
                block, layout, str(parties), _knob(beta), _knob(rho), mode,
                _format_spread(accuracy), delta,
                _integers_text(r["exposures_per_sample"] for r in members),
                _integers_text(r["releases_per_party"] for r in members),
                _mib_number(statistics.fmean(r["bytes_uploaded_per_party"] for r in members)),
                _integers_text(r["rounds"] for r in members),
                _format_wall(wall),
            ]) + " |")
    lines.append("")
    return "\n".join(lines)


def _format_wall(wall: _Spread | None) -> str:
    if wall is None:
        return "–"
    return f"{wall.mean:.1f}" if wall.std is None else f"{wall.mean:.1f} ± {wall.std:.1f}"


# --------------------------------------------------------------------------- one-shot vs iterative


def _one_shot_vs_iterative_rows(runs: Sequence[dict]) -> list[dict[str, object]]:
    """One row of raw numbers per (block, cell, strategy, release, encoding), in report order;
    InstaHide follows singularized mixup of the same release."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        key = (run["table"], run["layout"], *_cell(run), *_arm(run), run["encoding"])
        groups.setdefault(key, []).append(run)
    block_order = list(dict.fromkeys(run["table"] for run in runs))

    def order(key: tuple) -> tuple:
        block, layout, parties, beta, rho, strategy, release, encoding = key
        return (block_order.index(block), layout, *_paper_order((parties, beta, rho)),
                _arm_order((strategy, release)), encoding == INSTAHIDE)

    rows = []
    for key in sorted(groups, key=order):
        block, layout, parties, beta, rho, strategy, release, encoding = key
        members = _unique_by_run_key(groups[key])
        accuracy = _spread([r["test_accuracy"] for r in members])
        last = _spread([r["last_test_accuracy"] for r in members])
        wall = _spread([r["wall_seconds"] for r in members])
        taus = [r["tau"] for r in members if r["tau"] is not None]
        snrs = [r["snr_pc1_mean"] for r in members if r["snr_pc1_mean"] is not None]
        rows.append({
            "table": block, "layout": layout, "parties": parties, "beta": beta, "rho": rho,
            "strategy": strategy, "release": release, "encoding": encoding,
            "n_seeds": len(members), "seeds": " ".join(str(s) for s in _seeds(members)),
            "test_accuracy_mean": accuracy.mean, "test_accuracy_std": accuracy.std,
            "last_test_accuracy_mean": last.mean,
            "selected_by": _texts((r["selected_by"] for r in members), empty=""),
            "rounds": _integers_text(r["rounds"] for r in members),
            "releases_per_party": _integers_text(r["releases_per_party"] for r in members),
            "exposures_per_sample": _integers_text(r["exposures_per_sample"] for r in members),
            # Bytes are a property of the configuration, not of the seed, but average anyway
            # so that a seed-dependent partition size cannot make one seed speak for all.
            "bytes_uploaded_total": statistics.fmean(r["bytes_uploaded"] for r in members),
            "bytes_uploaded_per_party": statistics.fmean(r["bytes_uploaded_per_party"] for r in members),
            "bytes_downloaded_total": statistics.fmean(r["bytes_downloaded"] for r in members),
            "bytes_downloaded_per_party": statistics.fmean(r["bytes_downloaded_per_party"] for r in members),
            "wall_seconds_mean": wall.mean, "wall_seconds_std": wall.std,
            "noise_mode": _texts((r["noise_mode"] for r in members), empty=""),
            "tau": statistics.fmean(taus) if taus else None,
            "snr_pc1_mean": statistics.fmean(snrs) if snrs else None,
        })
    return rows


def _write_one_shot_vs_iterative_csv(rows: Sequence[dict], *, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ONE_SHOT_VS_ITERATIVE_COLUMNS)
        for row in rows:
            writer.writerow([
                # Byte counts read best as integers; knobs keep their float spelling (1.0, not 1).
                _raw_number(row[column]) if column.startswith("bytes_") else ("" if row[column] is None else row[column])
                for column in ONE_SHOT_VS_ITERATIVE_COLUMNS
            ])


def _one_shot_vs_iterative_markdown(rows: Sequence[dict], runs: Sequence[dict], *, title: str,
                                    settings: Mapping[str, object]) -> str:
    with_instahide = any(_is_instahide(run) for run in runs)
    heading = "one-shot singularized mixup vs iterative FL" + (" (and one-shot InstaHide)" if with_instahide else "")
    lines = _header_block(title=title, heading=heading, runs=runs, settings=settings)
    lines += [
        "Bytes are the mean over seeds of what the run metered (total over parties, and per party). "
        "Rounds: 1 for release once, the server epochs for per-epoch release, the FL rounds otherwise. "
        "'Final' is the accuracy at the last round/epoch, shown beside and never used to choose."
        + (" 'InstaHide (one-shot)' rows are the InstaHide encoding released like singularized mixup, a comparator, "
           "not the paper's method." if with_instahide else ""),
        "",
    ]
    columns = ["Block", "P", "β", "ρ", "Strategy", "Release", "Test accuracy (%)", "Seeds", "Final (%)", "Rounds",
               "Uploaded total", "Uploaded per party", "Downloaded total", "Downloaded per party", "Wall time (s)"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        accuracy = _Spread(row["test_accuracy_mean"], row["test_accuracy_std"], row["n_seeds"])
        wall = _Spread(row["wall_seconds_mean"], row["wall_seconds_std"], row["n_seeds"])
        lines.append("| " + " | ".join([
            row["table"], str(row["parties"]), _knob(row["beta"]), _knob(row["rho"]),
            ("InstaHide (one-shot)" if row["encoding"] == INSTAHIDE
             else _STRATEGY_NAMES.get(row["strategy"], row["strategy"])),
            row["release"] or "—",
            _format_spread(accuracy), str(row["n_seeds"]), f"{row['last_test_accuracy_mean']:.2f}", row["rounds"],
            _human_bytes(row["bytes_uploaded_total"]), _human_bytes(row["bytes_uploaded_per_party"]),
            _human_bytes(row["bytes_downloaded_total"]), _human_bytes(row["bytes_downloaded_per_party"]),
            _format_wall(wall),
        ]) + " |")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _plot_caption(runs: Sequence[dict]) -> str:
    """Data set, backbone, release and noise modes and seed count, for a figure title."""
    mixup_runs = [run for run in runs if run["strategy"] == MIXUP]
    releases = _texts((run["release"] for run in mixup_runs), empty="n/a")
    noise = _texts((run["noise_mode"] for run in mixup_runs), empty="n/a")
    seeds = _seeds(runs)
    return (f"{_texts(run['dataset'] for run in runs)} ({_texts(run['backbone'] for run in runs)} backbone); "
            f"mixup release {releases}, noise {noise}, tau {_taus_text(mixup_runs) if mixup_runs else 'n/a'}; "
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}, mean ± std")


def _wrapped_title(*parts: str, width: float) -> str:
    # About 13 characters of medium-size title text fit per inch of figure width.
    columns = max(40, int(13 * width))
    return "\n".join(textwrap.fill(part, columns) for part in parts)


def _set_log_ticks(axis, values: Sequence[float]) -> None:  # noqa: ANN001
    # Ticks only at the knob values that ran, labelled as the paper prints them.
    axis.set_major_locator(FixedLocator(list(values)))
    axis.set_major_formatter(FixedFormatter([_knob(v) for v in values]))
    axis.set_minor_locator(NullLocator())


def _plot_accuracy_vs_knob(runs: Sequence[dict], *, layout: str, path: Path, title: str,
                           settings: Mapping[str, object]) -> None:
    """Test accuracy against beta (Table 5) or rho (Table 6), one panel per P (and beta)."""
    layout_runs = _layout_runs(runs, layout=layout)
    knob_index, knob_name = (1, "Dirichlet β") if layout == "table5" else (2, "size ratio ρ")

    def panel_of(cell: tuple[int, float, float]) -> tuple:
        return (cell[0],) if layout == "table5" else (cell[0], cell[1])

    panels: dict[tuple, dict[tuple[str, str], dict[float, list[float]]]] = {}
    for run in layout_runs:
        cell = _cell(run)
        panels.setdefault(panel_of(cell), {}).setdefault(_arm(run), {}).setdefault(cell[knob_index], []).append(
            run["test_accuracy"])
    datasets = {run["dataset"] for run in layout_runs}
    backbones = {run["backbone"] for run in layout_runs}
    show_paper = (len(datasets) == 1 and len(backbones) == 1
                  and paper_setting_matches(dataset=next(iter(datasets)), backbone=next(iter(backbones)))
                  and not _not_the_papers_inputs(settings))
    dataset = _texts(datasets)

    panel_keys = sorted(panels, key=lambda key: (key[0], *(-v for v in key[1:])))
    # A floor on the width keeps a one-panel figure wide enough for its two-line title.
    width = max(4.4 * len(panel_keys), 7.5)
    figure, axes = plt.subplots(1, len(panel_keys), figsize=(width, 4.6), squeeze=False, sharey=True)
    all_arms = sorted({arm for arms in panels.values() for arm in arms}, key=_arm_order)
    for ax, key in zip(axes[0], panel_keys):
        knob_values = sorted({x for arms in panels[key].values() for x in arms})
        for index, arm in enumerate(all_arms):
            points = panels[key].get(arm)
            if not points:
                continue
            xs = sorted(points)
            spreads = [_spread(points[x]) for x in xs]
            ax.errorbar(xs, [s.mean for s in spreads], yerr=[s.std or 0.0 for s in spreads], marker="o",
                        capsize=3, color=_arm_colour(arm, fallback_index=index), label=_arm_label(arm))
        if show_paper:
            for arm, paper_index in (((_baseline_strategy(layout_runs) or "fedprox", ""), 0), ((MIXUP, "once"), 1)):
                paper_points = []
                for x in knob_values:
                    beta, rho = (x, 1.0) if layout == "table5" else (key[1], x)
                    pair = paper_cell(layout=layout, parties=key[0], beta=beta, rho=rho)
                    if pair is not None:
                        paper_points.append((x, pair[paper_index]))
                if paper_points:
                    ax.plot(*zip(*paper_points), linestyle=":", marker="x", color=_arm_colour(arm, fallback_index=0),
                            label=f"paper: {'FedProx' if paper_index == 0 else 'singularized mixup'}")
        ax.set_xscale("log")
        _set_log_ticks(ax.xaxis, knob_values)
        if len(knob_values) == 1:
            ax.set_xlim(knob_values[0] / 3, knob_values[0] * 3)
        ax.set_xlabel(f"{knob_name} (log scale)")
        ax.set_title(f"P = {key[0]}" + (f", β = {_knob(key[1])}" if layout == "table6" else ""))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"test accuracy on {dataset} (%)")
    axes[0][0].legend(fontsize="small")
    what = "Dirichlet β (Table 5 layout)" if layout == "table5" else "size ratio ρ (Table 6 layout)"
    figure.suptitle(_wrapped_title(f"{title}: test accuracy vs {what}", _plot_caption(layout_runs), width=width),
                    fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=_PLOT_DPI)
    plt.close(figure)


def _fl_test_accuracy_by_round(run: Mapping[str, object]) -> dict[int, float] | None:
    """Test accuracy (%) per round from an FL run's summary, or None (with a warning) if unreadable."""
    path = Path(str(run["summary_path"])) if run["summary_path"] else None
    if path is None or not path.is_file():
        warnings.warn(f"run {run['run_key']}: summary {path} is missing; left out of fedprox_rounds.png",
                      stacklevel=3)
        return None
    try:
        history = json.loads(path.read_text())["history"]
        by_round = {int(entry["round"]): 100.0 * float(entry["test_accuracy"])
                    for entry in history if entry.get("test_accuracy") is not None}
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"run {run['run_key']}: summary {path} has no readable history ({err!r}); "
                      "left out of fedprox_rounds.png", stacklevel=3)
        return None
    return by_round


def _plot_fl_rounds(runs: Sequence[dict], *, path: Path, title: str) -> None:
    """FL test accuracy per round per cell, with the same cell's one-shot (once) accuracy dashed."""
    fl_runs = _unique_by_run_key(run for run in runs if run["strategy"] in FL_STRATEGIES)
    blocks = list(dict.fromkeys(run["table"] for run in fl_runs))
    width = max(6.0 * len(blocks), 7.5)
    figure, axes = plt.subplots(1, len(blocks), figsize=(width, 4.8), squeeze=False)
    for ax, block in zip(axes[0], blocks):
        cells: dict[tuple, list[dict]] = {}
        for run in fl_runs:
            if run["table"] == block:
                cells.setdefault((run["strategy"], *_cell(run)), []).append(run)
        drawn = 0
        for colour_index, (strategy, parties, beta, rho) in enumerate(
                sorted(cells, key=lambda k: (*_paper_order(k[1:]), k[0]))):
            members = cells[(strategy, parties, beta, rho)]
            histories = [(run, _fl_test_accuracy_by_round(run)) for run in members]
            histories = [(run, history) for run, history in histories if history]
            if not histories:
                continue
            colour = f"C{colour_index % 10}"
            rounds = sorted({r for _, history in histories for r in history})
            spreads = [_spread([history[r] for _, history in histories if r in history]) for r in rounds]
            means = [s.mean for s in spreads]
            stds = [s.std or 0.0 for s in spreads]
            label = (f"{_STRATEGY_NAMES.get(strategy, strategy)} P={parties}, β={_knob(beta)}"
                     + (f", ρ={_knob(rho)}" if rho != 1.0 or members[0]["layout"] == "table6" else "")
                     + f" ({len(histories)} seed{'s' if len(histories) != 1 else ''})")
            ax.plot(rounds, means, color=colour, label=label)
            ax.fill_between(rounds, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=colour, alpha=0.15, linewidth=0)
            for run, history in histories:
                if run["selected_at"] in history:
                    ax.plot([run["selected_at"]], [history[run["selected_at"]]], marker="v", markersize=5,
                            color=colour, linestyle="none")
            once = [r["test_accuracy"] for r in runs if r["strategy"] == MIXUP and r["release"] == "once"
                    and r["table"] == block and _cell(r) == (parties, beta, rho)]
            if not once:
                # The one-shot arm may live in the layout's own block; compare with that one.
                once = [r["test_accuracy"] for r in _layout_runs(runs, layout=members[0]["layout"])
                        if _arm(r) == (MIXUP, "once") and _cell(r) == (parties, beta, rho)]
            if once:
                ax.axhline(statistics.fmean(once), color=colour, linestyle="--", linewidth=1.0)
            drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "no per-round history readable", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"block {block}")
        ax.set_xlabel("communication round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="grey", linestyle="--"),
                    Line2D([], [], color="grey", marker="v", linestyle="none")]
        labels += ["singularized mixup, release once (same cell)", "round selected on validation (per run)"]
        ax.legend(handles, labels, fontsize="x-small")
    axes[0][0].set_ylabel(f"test accuracy on {_texts(run['dataset'] for run in fl_runs)} (%)")
    figure.suptitle(_wrapped_title(f"{title}: federated test accuracy per round (plotted only; rounds were chosen "
                                   "on validation)", _plot_caption(fl_runs + [r for r in runs if r["strategy"] == MIXUP]),
                                   width=width), fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=_PLOT_DPI)
    plt.close(figure)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, kw_only=True)
class ReportFiles:
    """Paths :func:`write_report` wrote; None for a part the runs did not call for.

    Attributes
    ----------
    table4_md, table4_csv : Path or None
        InstaHide vs singularized mixup (the paper's Table 4 comparison), written only when some
        run used the InstaHide encoding.
    table5, table6 : Path or None
        The paper-layout tables, written only for layouts present in the runs.
    release_modes : Path or None
        Written only if some one-shot run released per epoch.
    one_shot_vs_iterative_md, one_shot_vs_iterative_csv : Path
        Per-arm accuracy, rounds, bytes and wall time.
    accuracy_vs_beta, accuracy_vs_rho, fedprox_rounds : Path or None
        PNG plots, written only when their layout (or any FL run) is present.
    report : Path
        The index page that includes every table and links every plot.
    """

    table4_md: Path | None
    table4_csv: Path | None
    table5: Path | None
    table6: Path | None
    release_modes: Path | None
    one_shot_vs_iterative_md: Path
    one_shot_vs_iterative_csv: Path
    accuracy_vs_beta: Path | None
    accuracy_vs_rho: Path | None
    fedprox_rounds: Path | None
    report: Path

    def written(self) -> tuple[Path, ...]:
        """Every path written, in report order."""
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)


def write_report(runs: Sequence[Mapping[str, object]], *, out_dir: Path, title: str,
                 settings: Mapping[str, object]) -> ReportFiles:
    """Write the sweep's tables and plots into ``out_dir``.

    Parameters
    ----------
    runs : sequence of mapping
        One mapping per run with the :data:`RUNS_CSV_COLUMNS`, typed or as strings from CSV.
    out_dir : Path
        Destination folder (created if needed); existing report files are overwritten.
    title : str
        Leads every Markdown heading and plot title.
    settings : mapping
        Run-config values common to the sweep; printed in every Markdown header so that each
        number names how it was made.

    Notes
    -----
    Runs that used the InstaHide encoding appear only in ``table4`` and as their own arm in
    ``one_shot_vs_iterative``; the paper tables, the release-mode comparison and the plots are
    made of singularized mixup and the FL strategies alone.

    Returns
    -------
    ReportFiles
        The paths written.

    Raises
    ------
    ValueError
        If ``runs`` is empty or a run lacks a column.
    """
    if not runs:
        raise ValueError("no runs to report on")
    typed = [coerce_run(run) for run in runs]
    # The paper tables, release modes and plots compare singularized mixup with plain FL only;
    # the defences have their own comparison (simulations.defence_compare).
    typed = [run for run in typed if not _is_defended(run)]
    if not typed:
        raise ValueError("every run used a client-side defence: see simulations.defence_compare for their report")
    without_instahide = [run for run in typed if not _is_instahide(run)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layouts = {run["layout"] for run in without_instahide}
    sections: list[tuple[str, str]] = []  # (file name, markdown) in report order
    extra_links: dict[str, str] = {}  # Markdown file -> its CSV, for the index

    paths: dict[str, Path | None] = {
        "table4_md": None, "table4_csv": None, "table5": None, "table6": None, "release_modes": None,
        "accuracy_vs_beta": None, "accuracy_vs_rho": None, "fedprox_rounds": None,
    }
    if len(without_instahide) < len(typed):
        markdown, table4_rows = _table4(typed, title=title, settings=settings)
        paths["table4_md"], paths["table4_csv"] = out_dir / "table4.md", out_dir / "table4.csv"
        paths["table4_md"].write_text(markdown)
        _write_table4_csv(table4_rows, path=paths["table4_csv"])
        sections.append((paths["table4_md"].name, markdown))
        extra_links[paths["table4_md"].name] = paths["table4_csv"].name
    for layout in LAYOUTS:
        if layout in layouts:
            markdown = _paper_table_markdown(without_instahide, layout=layout, title=title, settings=settings)
            paths[layout] = out_dir / f"{layout}.md"
            paths[layout].write_text(markdown)
            sections.append((paths[layout].name, markdown))
    if any(run["strategy"] == MIXUP and run["release"] == "per-epoch" for run in without_instahide):
        markdown = _release_modes_markdown(without_instahide, title=title, settings=settings)
        paths["release_modes"] = out_dir / "release_modes.md"
        paths["release_modes"].write_text(markdown)
        sections.append((paths["release_modes"].name, markdown))

    comparison_rows = _one_shot_vs_iterative_rows(typed)
    comparison_md = out_dir / "one_shot_vs_iterative.md"
    comparison_csv = out_dir / "one_shot_vs_iterative.csv"
    markdown = _one_shot_vs_iterative_markdown(comparison_rows, typed, title=title, settings=settings)
    comparison_md.write_text(markdown)
    _write_one_shot_vs_iterative_csv(comparison_rows, path=comparison_csv)
    sections.append((comparison_md.name, markdown))

    plots: list[tuple[str, Path]] = []
    if "table5" in layouts:
        paths["accuracy_vs_beta"] = out_dir / "accuracy_vs_beta.png"
        _plot_accuracy_vs_knob(without_instahide, layout="table5", path=paths["accuracy_vs_beta"], title=title,
                               settings=settings)
        plots.append(("Test accuracy vs Dirichlet β (Table 5 layout)", paths["accuracy_vs_beta"]))
    if "table6" in layouts:
        paths["accuracy_vs_rho"] = out_dir / "accuracy_vs_rho.png"
        _plot_accuracy_vs_knob(without_instahide, layout="table6", path=paths["accuracy_vs_rho"], title=title,
                               settings=settings)
        plots.append(("Test accuracy vs size ratio ρ (Table 6 layout)", paths["accuracy_vs_rho"]))
    if any(run["strategy"] in FL_STRATEGIES for run in without_instahide):
        paths["fedprox_rounds"] = out_dir / "fedprox_rounds.png"
        _plot_fl_rounds(without_instahide, path=paths["fedprox_rounds"], title=title)
        plots.append(("Federated test accuracy per round", paths["fedprox_rounds"]))

    # Each CSV is linked right after the Markdown table it belongs to.
    csv_beside = {**extra_links, comparison_md.name: comparison_csv.name}
    links = [link for name, _ in sections for link in (name, csv_beside.get(name)) if link]
    index = [f"# {title}", "", f"Run settings common to the sweep: {_settings_text(settings)}", "",
             "Files: " + ", ".join(f"[{name}]({name})" for name in links), ""]
    for _, markdown in sections:
        index.append(_demote_headings(markdown))
    if plots:
        index += ["## Plots", ""]
        for caption, plot in plots:
            index += [f"![{caption}]({plot.name})", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(index))
    return ReportFiles(
        table4_md=paths["table4_md"], table4_csv=paths["table4_csv"],
        table5=paths["table5"], table6=paths["table6"], release_modes=paths["release_modes"],
        one_shot_vs_iterative_md=comparison_md, one_shot_vs_iterative_csv=comparison_csv,
        accuracy_vs_beta=paths["accuracy_vs_beta"], accuracy_vs_rho=paths["accuracy_vs_rho"],
        fedprox_rounds=paths["fedprox_rounds"], report=report,
    )


def _read_settings_beside(runs_csv: Path) -> dict[str, object]:
    settings_path = runs_csv.parent / "settings.json"
    if not settings_path.is_file():
        return {}
    settings = json.loads(settings_path.read_text())
    if not isinstance(settings, dict):
        raise ValueError(f"{settings_path} must hold a JSON object, got {type(settings).__name__}")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: regenerate the report from a ``runs.csv`` and print the paths written."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_csv", type=Path, metavar="RUNS_CSV", help="the sweep's runs.csv")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: report/ beside RUNS_CSV)")
    parser.add_argument("--title", default=None, help="report title (default: named after RUNS_CSV's folder)")
    args = parser.parse_args(argv)
    runs_csv: Path = args.runs_csv.resolve()
    if not runs_csv.is_file():
        parser.error(f"{runs_csv} does not exist")
    runs = read_runs_csv(runs_csv)
    if not runs:
        parser.error(f"{runs_csv} holds no runs")
    files = write_report(
        runs,
        out_dir=args.out if args.out is not None else runs_csv.parent / "report",
        title=args.title if args.title is not None else f"Sweep {runs_csv.parent.name}",
        settings=_read_settings_beside(runs_csv),
    )
    for path in files.written():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
