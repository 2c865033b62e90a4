"""What a run is in the report: its cell, arm and method, and how runs are grouped.

This module owns the report's vocabulary for runs: the strategy names, a run's partition cell
(P, β, ρ) and arm (strategy, release), its *method* (the strategy, except that a one-shot run
of a comparator encoding is its own method, named by its encoding), which runs are comparators
or defended (asked of the encoding and defence registries, never by name), the paper's cell
order, and the selection of the runs that make up one layout's table.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

from common.defences import DEFAULT_DEFENCE, Defence, get_defence
from common.encodings import ENCODINGS, Encoding, get_encoding

__all__ = [
    "FL_STRATEGIES", "LAYOUTS", "MIXUP", "arm", "arm_label", "arm_order", "baseline_strategy", "block_order",
    "by_cell_and_arm", "cell", "comparator_encodings", "encoding", "is_comparator", "is_defended", "layout_runs",
    "method", "method_label", "paper_order", "seeds", "unique_by_run_key",
]

MIXUP = "one-shot-mixup"
FL_STRATEGIES = ("fedprox", "fedavg")
LAYOUTS = ("table5", "table6")

# Strategies by name; a comparator encoding's method is labelled by its registry label.
_STRATEGY_NAMES = {"fedprox": "FedProx", "fedavg": "FedAvg", MIXUP: "singularized mixup"}
_ARM_ORDER = [(MIXUP, "once"), (MIXUP, "per-epoch"), ("fedprox", ""), ("fedavg", "")]


@functools.cache
def encoding(name: str) -> Encoding:
    """The registered encoding ``name`` (cached: the report asks once per run and table)."""
    return get_encoding(name)


@functools.cache
def _defence(name: str) -> Defence:
    return get_defence(name)


def is_comparator(run: Mapping[str, object]) -> bool:
    """A one-shot run whose encoding does not fill the paper's tables (e.g. InstaHide).

    Such runs appear only in the Table 4 comparison and as their own arm in the one-shot vs
    iterative table; iterative runs (no encoding) never are comparators.
    """
    name = str(run["encoding"])
    return bool(name) and not encoding(name).paper_tables


def comparator_encodings(runs: Iterable[Mapping[str, object]]) -> list[str]:
    """The comparator encodings among ``runs``, in order of first appearance."""
    return list(dict.fromkeys(str(run["encoding"]) for run in runs if is_comparator(run)))


def is_defended(run: Mapping[str, object]) -> bool:
    """An iterative run whose parties used a client-side defence (Fed-AugMix, DP-Mix, ...)."""
    return not _defence(str(run.get("defence", "")) or DEFAULT_DEFENCE).plain


def method(run: Mapping[str, object]) -> str:
    """The run's strategy, or its encoding's name for a comparator run."""
    return str(run["encoding"]) if is_comparator(run) else str(run["strategy"])


def method_label(name: str) -> str:
    """How tables name a :func:`method`: a strategy's name, or a comparator encoding's label."""
    if name in _STRATEGY_NAMES:
        return _STRATEGY_NAMES[name]
    # A strategy the report has no name for is printed as it is spelled. Only registered names
    # and "module:Class" references are looked up: asking the registry about any other name
    # would try to import a module of that name.
    return encoding(name).label if ":" in name or name in ENCODINGS.names() else name


def cell(run: Mapping[str, object]) -> tuple[int, float, float]:
    """The run's partition cell (P, β, ρ)."""
    return run["parties"], run["beta"], run["rho"]  # type: ignore[return-value]


def arm(run: Mapping[str, object]) -> tuple[str, str]:
    """The run's arm (strategy, release); release is "" for the iterative strategies."""
    return run["strategy"], run["release"]  # type: ignore[return-value]


def arm_label(arm_: tuple[str, str]) -> str:
    """An arm as plot legends name it."""
    strategy, release = arm_
    name = _STRATEGY_NAMES.get(strategy, strategy)
    return f"{name}, release {release}" if release else name


def paper_order(cell_: tuple[int, float, float]) -> tuple[int, float, float]:
    """Sort key: the paper lists P ascending, then β and ρ descending (mild to strong skew)."""
    parties, beta, rho = cell_
    return parties, -beta, -rho


def arm_order(arm_: tuple[str, str]) -> tuple[int, str, str]:
    """Sort key: one-shot once, one-shot per epoch, FedProx, FedAvg, then anything else."""
    return (_ARM_ORDER.index(arm_) if arm_ in _ARM_ORDER else len(_ARM_ORDER), *arm_)


def block_order(runs: Iterable[Mapping[str, object]]) -> list[str]:
    """Sweep blocks (the ``table`` column) in order of first appearance."""
    return list(dict.fromkeys(str(run["table"]) for run in runs))


def seeds(runs: Iterable[Mapping[str, object]]) -> list[int]:
    """The distinct seeds of ``runs``, ascending."""
    return sorted({run["seed"] for run in runs})  # type: ignore[type-var]


def unique_by_run_key(runs: Iterable[dict]) -> list[dict]:
    """``runs`` with repeats of a run key dropped, in order."""
    # The same run may be listed under two sweep blocks; it is one measurement.
    seen: set[object] = set()
    unique = []
    for run in runs:
        if run["run_key"] not in seen:
            seen.add(run["run_key"])
            unique.append(run)
    return unique


def layout_runs(runs: Sequence[dict], *, layout: str) -> list[dict]:
    """Runs that make up the paper table and the accuracy plot of one layout.

    Several sweep blocks can hold the same (cell, arm), e.g. a ``release`` block that reruns
    Table 5 cells in both release modes. Pooling them would mix configurations, so where the
    block named after the layout has the (cell, arm) only its runs are used; other blocks fill
    (cell, arm) pairs it lacks.
    """
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        if run["layout"] == layout:
            groups.setdefault((cell(run), arm(run)), []).append(run)
    chosen: list[dict] = []
    for members in groups.values():
        preferred = [run for run in members if run["table"] == layout]
        chosen.extend(unique_by_run_key(preferred or members))
    return chosen


def by_cell_and_arm(runs: Iterable[dict]) -> dict[tuple[int, float, float], dict[tuple[str, str], list[dict]]]:
    """Runs grouped by cell, then by arm, in order of first appearance."""
    table: dict[tuple[int, float, float], dict[tuple[str, str], list[dict]]] = {}
    for run in runs:
        table.setdefault(cell(run), {}).setdefault(arm(run), []).append(run)
    return table


def baseline_strategy(runs: Iterable[Mapping[str, object]]) -> str | None:
    """The iterative strategy Δ is taken against, or None when no iterative run is present."""
    # FedProx is the paper's baseline; FedAvg stands in only where a sweep ran it instead.
    strategies = {run["strategy"] for run in runs}
    for strategy in FL_STRATEGIES:
        if strategy in strategies:
            return strategy
    return None
