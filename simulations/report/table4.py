"""The paper's Table 4 layout: each comparator encoding against singularized mixup.

This module owns ``table4.md`` and ``table4.csv``. A comparator encoding is a one-shot
encoding that does not fill the paper's tables (``paper_tables`` false in its registry entry;
InstaHide today). For each comparator that ran, one page compares it with the paper-tables
encoding (singularized mixup) on the same partitions: one column per partition cell, Δ =
singularized - comparator, the paper's Table 4 numbers where the comparator, data set and
backbone are the paper's, and a plain count of the cells in which singularized mixup is ahead.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.stats import Spread
from simulations.report.paper_numbers import (
    PAPER_DATASET_NAMES,
    PAPER_TABLE4,
    PAPER_TABLE4_BACKBONES,
    PAPER_TABLE4_COMPARATOR,
    PAPER_TABLE4_INSTAHIDE_K,
    PAPER_TAU,
    not_the_papers_inputs,
    paper_table4_cell,
    paper_table4_compares,
    paper_table4_setting_matches,
)
from simulations.report.runs import (
    MIXUP,
    baseline_strategy,
    block_order,
    comparator_encodings,
    encoding,
    method,
    method_label,
    paper_order,
    seeds,
    unique_by_run_key,
)
from common.stats import Interval, paired_differences
from simulations.report.spreads import (
    format_delta,
    format_interval,
    seed_interval,
    rounded_delta,
    sample_std,
    seed_spread,
)
from simulations.report.text import header_block, integers_text, knob, taus_text, texts

__all__ = ["TABLE4_CSV_COLUMNS", "table4", "write_table4_csv"]

TABLE4_CSV_COLUMNS: tuple[str, ...] = (
    "table", "layout", "parties", "beta", "rho", "release", "method", "encoding", "instahide_k",
    "instahide_k_private", "public_fraction", "noise_mode", "tau", "n_seeds", "seeds",
    "test_accuracy_mean", "test_accuracy_std", "minus_instahide_mean",
)
"""Columns of ``table4.csv``: one row per (comparator, block, cell, method), accuracy in percent
of the model selected on validation; ``method`` is the encoding ("instahide", "singularized") or
the FL strategy; ``minus_instahide_mean`` (singularized rows only) is Δ = singularized - the
comparator of the means (the column keeps the name it had when InstaHide was the only one)."""


_RELEASE_ORDER = ("once", "per-epoch")
_BACKBONE_NAMES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}


@dataclass(frozen=True)
class _Column:
    """One partition cell of the Table 4 layout: a sweep block's (P, β, ρ)."""

    block: str
    layout: str
    parties: int
    beta: float
    rho: float

    def label(self, *, with_block: bool) -> str:
        text = f"P={self.parties}, β={knob(self.beta)}"
        if self.layout == "table6":
            text += f", ρ={knob(self.rho)}"
        return f"{self.block}: {text}" if with_block else text


def _column(run: Mapping[str, object]) -> _Column:
    return _Column(block=str(run["table"]), layout=str(run["layout"]), parties=int(run["parties"]),
                   beta=float(run["beta"]), rho=float(run["rho"]))


def _release_order(release: str) -> tuple[int, str]:
    return (_RELEASE_ORDER.index(release) if release in _RELEASE_ORDER else len(_RELEASE_ORDER)), release


@dataclass(frozen=True)
class _Table4:
    """One comparator's Table 4: its columns (cells), release modes, baseline and run groups.

    ``groups`` maps (method, release, column) to the runs of that entry, one per run key;
    method is ``comparator``, :data:`MIXUP` (singularized) or the FL baseline (release "").
    """

    comparator: str
    columns: list[_Column]
    releases: list[str]
    baseline: str | None
    groups: dict[tuple[str, str, _Column], list[dict]]

    @property
    def label(self) -> str:
        return encoding(self.comparator).label

    def spread(self, method_: str, release: str, column: _Column) -> Spread | None:
        return seed_spread(run["test_accuracy"] for run in self.groups.get((method_, release, column), []))

    def interval(self, method_: str, release: str, column: _Column) -> Interval | None:
        return seed_interval(run["test_accuracy"] for run in self.groups.get((method_, release, column), []))

    def paired(self, release: str, column: _Column) -> Interval | None:
        """Δ = singularized - comparator, paired per seed (same partitions), with its 95 % interval."""
        def by_seed(method_: str) -> dict[int, float]:
            return {int(r["seed"]): float(r["test_accuracy"]) for r in self.groups.get((method_, release, column), [])}
        return seed_interval(paired_differences(by_seed(MIXUP), by_seed(self.comparator)))

    def runs_of(self, method_: str) -> list[dict]:
        return [run for (m, _, _), members in self.groups.items() if m == method_ for run in members]

    def used(self) -> list[dict]:
        return [run for members in self.groups.values() for run in members]


def _table4_data(runs: Sequence[dict], *, comparator: str) -> _Table4:
    """The cells ``comparator`` ran in, with the singularized and FL runs of the same cells.

    Singularized runs count only with a release mode the comparator ran with; cells are kept
    apart per sweep block, because two blocks may hold the same (P, β, ρ) with other settings.
    """
    comparator_runs = [run for run in runs if method(run) == comparator]
    blocks = block_order(runs)
    columns = sorted({_column(run) for run in comparator_runs},
                     key=lambda c: (blocks.index(c.block), c.layout, *paper_order((c.parties, c.beta, c.rho))))
    releases = sorted({str(run["release"]) for run in comparator_runs}, key=_release_order)
    in_cells = [run for run in runs if _column(run) in set(columns)]
    baseline = baseline_strategy(in_cells)
    groups: dict[tuple[str, str, _Column], list[dict]] = {}
    for run in in_cells:
        method_ = method(run)
        if (method_ in (comparator, MIXUP) and run["release"] in releases) or method_ == baseline:
            groups.setdefault((method_, str(run["release"]), _column(run)), []).append(run)
    return _Table4(comparator=comparator, columns=columns, releases=releases, baseline=baseline,
                   groups={key: unique_by_run_key(members) for key, members in groups.items()})


def _paper_hidden_reason(table: _Table4, runs: Sequence[dict], *, settings: Mapping[str, object]) -> str:
    """Why the paper's Table 4 numbers do not apply to these runs; empty when they do."""
    if not paper_table4_compares(table.comparator):
        return (f"the paper's Table 4 compares with {encoding(PAPER_TABLE4_COMPARATOR).label}, not "
                f"{table.label}")
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
    return not_the_papers_inputs(settings)


def _paper_differences(table: _Table4) -> list[str]:
    """Where runs on one of the paper's data sets still depart from its Table 4 protocol."""
    differences = []
    taus = sorted({run["tau"] for run in table.runs_of(MIXUP) if run["tau"] is not None})
    if taus and any(not math.isclose(tau, PAPER_TAU) for tau in taus):
        differences.append(f"tau {', '.join(f'{t:g}' for t in taus)} (paper {PAPER_TAU:g})")
    ks = sorted({run["instahide_k"] for run in table.runs_of(table.comparator) if run["instahide_k"] is not None})
    if ks and ks != [PAPER_TABLE4_INSTAHIDE_K]:
        differences.append(f"{table.label} k {', '.join(str(k) for k in ks)} (paper {PAPER_TABLE4_INSTAHIDE_K})")
    return differences


def _paper_claim() -> str:
    deltas = [f"{mixup - comparator:+.2f} on {PAPER_DATASET_NAMES[dataset]}"
              for dataset, (comparator, mixup) in PAPER_TABLE4.items() if comparator is not None]
    return (f"The paper's Table 4 has singularized mixup at Δ = {', '.join(deltas)} against "
            f"{encoding(PAPER_TABLE4_COMPARATOR).label} (k = {PAPER_TABLE4_INSTAHIDE_K}) and calls MNIST and "
            "CIFAR-10 a match.")


_MATCH_POINTS = 1.0
"""The paper calls gaps of 0.34 (MNIST) and 0.69 (CIFAR-10) points against InstaHide a match: a
cell contradicts "matches" only when singularized mixup is significantly behind by more than this."""


def _ahead_sentence(table: _Table4, *, release: str, with_release: bool) -> str:
    """The plain count of cells in which singularized mixup is ahead, and what it says of the paper's claim."""
    label = table.label
    # The paper's claim is about its comparator; beside any other it would be noise.
    about_paper = paper_table4_compares(table.comparator)
    claim = [_paper_claim()] if about_paper else []
    release_text = f" (release {release})" if with_release else ""
    pairs = [(column, table.spread(table.comparator, release, column), table.spread(MIXUP, release, column))
             for column in table.columns]
    compared = [(column, theirs, mixup) for column, theirs, mixup in pairs if theirs is not None and mixup is not None]
    if not compared:
        return " ".join([f"No cell has both {label} and singularized mixup results{release_text}, so nothing can be "
                         "compared yet.", *claim])
    with_block = len({column.block for column in table.columns}) > 1
    deltas = [(column, table.paired(release, column)) for column, _, _ in compared]
    deltas = [(column, delta) for column, delta in deltas if delta is not None]
    n = len(deltas)
    if not n:
        return " ".join([f"No cell has {label} and singularized mixup runs of the same seeds{release_text}.", *claim])
    ahead = [d for d in deltas if d[1].verdict() == "ahead"]
    behind = [d for d in deltas if d[1].verdict() == "behind"]
    counts = (f"Counting only cells whose 95 % interval of the paired Δ excludes 0: singularized mixup is ahead of "
              f"{label}{release_text} in {len(ahead)} and behind in {len(behind)} of {n} cells, inconclusive in "
              f"{n - len(ahead) - len(behind)}")
    low, high = min(d[1].mean for d in deltas), max(d[1].mean for d in deltas)
    if rounded_delta(low) == rounded_delta(high):
        counts += (f"; mean Δ (singularized − {label}) = {format_delta(low)} points"
                   + (" in every cell." if n > 1 else "."))
    else:
        counts += f"; mean Δ (singularized − {label}) ranges from {format_delta(low)} to {format_delta(high)} points."
    parts = [counts, *claim]
    # "Matches" is about size, not significance: the paper calls gaps under a point a match.
    clearly_behind = [(column, delta) for column, delta in behind if delta.mean < -_MATCH_POINTS]
    if about_paper and 2 * len(clearly_behind) > n:
        where = "; ".join(column.label(with_block=with_block) for column, _ in clearly_behind)
        parts.append(f"Here singularized mixup is significantly behind, by more than {_MATCH_POINTS:g} point, in "
                     f"{len(clearly_behind)} of {n} cells ({where}), so the paper's 'matches {label}' does NOT "
                     "reproduce in this setting.")
    elif about_paper and all(abs(delta.mean) <= _MATCH_POINTS for _, delta in deltas):
        parts.append(f"Every compared cell's mean Δ is within {_MATCH_POINTS:g} point, the size of the gaps the paper "
                     "calls a match.")
    uncounted = len(pairs) - n
    if uncounted:
        parts.append(f"{uncounted} cell{'s lack' if uncounted != 1 else ' lacks'} one of the two encodings and "
                     f"{'are' if uncounted != 1 else 'is'} not counted.")
    return " ".join(parts)


def _comparator_page(runs: Sequence[dict], *, comparator: str, title: str,
                     settings: Mapping[str, object]) -> tuple[str, list[dict]]:
    """Markdown and CSV rows of one comparator's Table 4 page (see :func:`table4`)."""
    table = _table4_data(runs, comparator=comparator)
    label = table.label
    used = table.used()
    comparator_runs = table.runs_of(comparator)
    mixup_runs = table.runs_of(MIXUP)
    # InstaHide's k and k_private name its configuration; an encoding without them is its label alone.
    if any(run["instahide_k"] is not None for run in comparator_runs):
        described = (f"{label} (k = {texts(run['instahide_k'] for run in comparator_runs)}, "
                     f"k_private = {texts(run['instahide_k_private'] for run in comparator_runs)})")
    else:
        described = label
    with_block = len({column.block for column in table.columns}) > 1
    with_release = len(table.releases) > 1
    expected_n = len(seeds(used))

    public_fraction_by_column = {
        column: {run["public_fraction"] for (method_, _, c), members in table.groups.items()
                 if c == column and method_ in (comparator, MIXUP) for run in members}
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
        f"- Δ = singularized mixup − {label}, paired per seed, mean [95 % interval] and its verdict"
        + (f"; the {method_label(table.baseline)} row is context (iterative, a different protocol)"
           if table.baseline else ""),
    ]
    heading = f"Table 4 layout: {described} vs singularized mixup on the same partitions"
    lines = header_block(title=title, heading=heading, runs=used, settings=settings,
                         lines_before_settings=lines_before_settings)

    hidden_reason = _paper_hidden_reason(table, used, settings=settings)
    paper = None if hidden_reason else paper_table4_cell(str(used[0]["dataset"]))
    if paper is None:
        lines += [f"The paper's Table 4 numbers are not shown: {hidden_reason}.", ""]
    else:
        dataset = str(used[0]["dataset"])
        lines += [f"Paper column: the paper's Table 4 for {PAPER_DATASET_NAMES[dataset]} (frozen ImageNet "
                  f"{_BACKBONE_NAMES[PAPER_TABLE4_BACKBONES[dataset]]}, tau = {PAPER_TAU:g}, "
                  f"{label} k = {PAPER_TABLE4_INSTAHIDE_K}). "
                  "The paper reports one number per data set from its accuracy experiments (section 5.2), not per "
                  "partition cell, so the same number stands beside every cell.", ""]
        differences = _paper_differences(table)
        if differences:
            lines += ["These runs depart from the paper's Table 4 protocol in: " + "; ".join(differences)
                      + ". Read the paper column with that in mind.", ""]

    def release_suffix(release: str) -> str:
        return f", release {release}" if with_release else ""

    # (row label, method, release, paper value) in table order.
    method_rows: list[tuple[str, str, str, str]] = []
    for release in table.releases:
        method_rows.append((f"{described}{release_suffix(release)}", comparator, release,
                            "" if paper is None else ("–" if paper[0] is None else f"{paper[0]:.2f}")))
        release_mixup = [run for run in mixup_runs if run["release"] == release]
        method_rows.append((f"singularized mixup (tau = {taus_text(release_mixup)}, noise mode "
                            f"{texts(run['noise_mode'] for run in release_mixup)}){release_suffix(release)}",
                            MIXUP, release, "" if paper is None else f"{paper[1]:.2f}"))
    if table.baseline:
        baseline_runs = table.runs_of(table.baseline)
        method_rows.append((f"{method_label(table.baseline)} ({integers_text(r['rounds'] for r in baseline_runs)} "
                            "rounds, context)", table.baseline, "", ""))

    header = ["Method"] + [column.label(with_block=with_block) for column in table.columns]
    if paper is not None:
        header.append(f"paper ({PAPER_DATASET_NAMES[str(used[0]['dataset'])]})")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row_label, method_, release, paper_text in method_rows:
        cells = [row_label] + [format_interval(table.interval(method_, release, column), expected_n=expected_n)
                               for column in table.columns]
        lines.append("| " + " | ".join(cells + ([paper_text] if paper is not None else [])) + " |")
    for release in table.releases:
        deltas = []
        for column in table.columns:
            paired = table.paired(release, column)
            deltas.append("–" if paired is None else f"{format_interval(paired, signed=True)} {paired.verdict()}")
        if paper is not None:
            deltas.append("–" if paper[0] is None else f"{paper[1] - paper[0]:+.2f}")
        lines.append("| " + " | ".join([f"Δ (singularized − {label}){release_suffix(release)}"] + deltas) + " |")
    lines.append("")
    for release in table.releases:
        lines += [_ahead_sentence(table, release=release, with_release=with_release), ""]
    return "\n".join(lines), _csv_rows(table, [(method_, release) for _, method_, release, _ in method_rows])


def _csv_rows(table: _Table4, method_rows: Sequence[tuple[str, str]]) -> list[dict]:
    """``table4.csv`` rows of one comparator's page: (method, release) in table order, then cells."""
    rows = []
    for method_, release in method_rows:
        for column in table.columns:
            members = table.groups.get((method_, release, column), [])
            if not members:
                continue
            accuracy = seed_spread(run["test_accuracy"] for run in members)
            theirs = table.spread(table.comparator, release, column)
            ks = {run["instahide_k"] for run in members}
            k_privates = {run["instahide_k_private"] for run in members}
            fractions = {run["public_fraction"] for run in members}
            taus = [run["tau"] for run in members if run["tau"] is not None]
            encodings = texts((run["encoding"] for run in members), empty="")
            rows.append({
                "table": column.block, "layout": column.layout, "parties": column.parties, "beta": column.beta,
                "rho": column.rho, "release": release,
                # One-shot rows are named by their encoding, FL rows by their strategy.
                "method": encodings if method_ == MIXUP else method_,
                "encoding": encodings,
                "instahide_k": ks.pop() if len(ks) == 1 else texts(ks, empty=""),
                "instahide_k_private": k_privates.pop() if len(k_privates) == 1 else texts(k_privates, empty=""),
                "public_fraction": fractions.pop() if len(fractions) == 1 else texts(fractions, empty=""),
                "noise_mode": texts((run["noise_mode"] for run in members), empty=""),
                "tau": statistics.fmean(taus) if taus else None,
                "n_seeds": len(members), "seeds": " ".join(str(s) for s in seeds(members)),
                "test_accuracy_mean": accuracy.mean, "test_accuracy_std": sample_std(accuracy),
                "minus_instahide_mean": (accuracy.mean - theirs.mean
                                         if method_ == MIXUP and theirs is not None else None),
            })
    return rows


def table4(runs: Sequence[dict], *, title: str, settings: Mapping[str, object]) -> tuple[str, list[dict]]:
    """Markdown and CSV rows of the Table 4 layout: each comparator vs singularized mixup per partition cell.

    Parameters
    ----------
    runs : sequence of dict
        Typed runs (:func:`~simulations.report.coerce_run`), at least one of them a comparator.
    title : str
        Leads the Markdown headings.
    settings : mapping
        Run-config values common to the sweep, printed in the headers.

    Returns
    -------
    tuple of (str, list of dict)
        The Markdown (one page per comparator encoding, in order of first appearance) and the
        rows of ``table4.csv`` (:data:`TABLE4_CSV_COLUMNS`; one block of rows per comparator).
    """
    pages, rows = [], []
    for comparator in comparator_encodings(runs):
        page, page_rows = _comparator_page(runs, comparator=comparator, title=title, settings=settings)
        pages.append(page)
        rows.extend(page_rows)
    return "\n".join(pages), rows


def write_table4_csv(rows: Sequence[dict], *, path: Path) -> None:
    """Write :func:`table4`'s CSV rows to ``path`` (None as an empty cell)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE4_CSV_COLUMNS)
        for row in rows:
            writer.writerow(["" if row[column] is None else row[column] for column in TABLE4_CSV_COLUMNS])
