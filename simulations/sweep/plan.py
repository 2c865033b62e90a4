"""A sweep's plan: every run of a grid, its identity, and its ``runs.csv`` row.

Every (cell, strategy, release mode, encoding or defence, seed) is one run. Its name carries a
hash of its full run config and federation size (:func:`run_key`): change a setting and it
becomes a new run; the same run in two blocks is computed once (:func:`unique_runs`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, parse_run_config
from common.defences import DEFAULT_DEFENCE
from common.encodings import DEFAULT_ENCODING
from common.run_summary import RunRow, RunSummary
from simulations.sweep.spec import SWEEP_KEYS, SweepError, SweepSpec

__all__ = ["SweepRun", "expand_runs", "row_from_summary", "run_key", "unique_runs", "validate_runs"]

# Only a non-default encoding or defence is written into a run config, so the run keys of runs
# computed before encodings and defences existed, and with them their names, stay.


@dataclass(frozen=True)
class SweepRun:
    """One ``flwr run`` of the sweep and the table cell it belongs to."""

    table: str
    layout: str
    strategy: str
    release: str  # "" for the iterative strategies
    encoding: str  # "singularized" or "instahide" for the one-shot strategy, "" for the iterative ones
    parties: int
    beta: float
    rho: float
    seed: int
    run_config: dict[str, Any] = field(hash=False, compare=False)
    key: str = ""
    name: str = ""
    defence: str = ""  # the iterative strategies' client-side defence ("none", ...), "" for one-shot


def run_key(run_config: Mapping[str, Any], parties: int) -> str:
    """Hash of everything that determines a run's result: its run config and federation size."""
    payload = json.dumps({"config": dict(run_config), "parties": parties}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def _label(strategy: str, release: str, encoding: str, defence: str) -> str:
    """The start of a run's name: strategy, non-default encoding or defence, release mode."""
    label = strategy
    if encoding and encoding != DEFAULT_ENCODING:
        label += f"-{encoding}"
    if defence and defence != DEFAULT_DEFENCE:
        label += f"-{defence}"
    return label + (f"-{release}" if release else "")


def expand_runs(spec: SweepSpec, *, overrides: Mapping[str, Any] | None = None) -> list[SweepRun]:
    """Every (table cell, strategy, release, encoding, seed) of the sweep.

    Parameters
    ----------
    spec : SweepSpec
        The validated sweep file.
    overrides : mapping, optional
        Run-config values for every run (``--set``); the per-run keys :data:`SWEEP_KEYS` are refused.

    Returns
    -------
    list of SweepRun
        Seeds outermost, so that a complete grid for the first seed exists before the second
        seed starts. One-shot runs are expanded over release modes and encodings, the iterative
        strategies over defences. Only a non-default encoding or defence is written into the run
        config (see :data:`DEFAULT_ENCODING`); an InstaHide run's name says ``instahide``.
    """
    overrides = dict(overrides or {})
    fixed = sorted(set(overrides) & set(SWEEP_KEYS))
    if fixed:
        raise SweepError(f"--set {', '.join(fixed)}: set by the sweep per run")
    runs: list[SweepRun] = []
    for seed in spec.seeds:
        for table in spec.table:
            strategies = table.strategies or spec.strategies
            releases = table.releases or spec.releases
            encodings = table.encodings or spec.encodings
            defences = table.defences or spec.defences
            rhos = table.rho if table.layout == "table6" else [1.0]
            cells = [(p, b, r) for p in table.parties for b in table.beta for r in rhos]
            for (parties, beta, rho), strategy in ((cell, s) for cell in cells for s in strategies):
                # (release, encoding, defence): the one-shot strategy has releases and encodings,
                # the iterative strategies have defences.
                variants = ([(r, e, "") for r in releases for e in encodings]
                            if strategy == "one-shot-mixup" else [("", "", d) for d in defences])
                for release, encoding, defence in variants:
                    config: dict[str, Any] = {**spec.settings, **table.settings, **overrides}
                    config.update(strategy=strategy, seed=seed, beta=float(beta))
                    config["partitioner"] = table.partitioner_name
                    if table.layout == "table6":
                        config.update({"rho": float(rho), "poor-party": table.poor_party})
                    if release:
                        config["release"] = release
                    if encoding and encoding != DEFAULT_ENCODING:
                        config["encoding"] = encoding
                    if defence and defence != DEFAULT_DEFENCE:
                        config["defence"] = defence
                    config = dict(sorted(config.items()))
                    key = run_key(config, parties)
                    rho_part = f"-rho{rho:g}" if table.layout == "table6" else ""
                    name = (f"{_label(strategy, release, encoding, defence)}-P{parties}-b{beta:g}{rho_part}"
                            f"-seed{seed}-{key}")
                    runs.append(SweepRun(
                        table=table.name, layout=table.layout, strategy=strategy, release=release,
                        encoding=encoding, parties=parties, beta=float(beta), rho=float(rho), seed=seed,
                        run_config=config, key=key, name=name, defence=defence,
                    ))
    return runs


def unique_runs(runs: Iterable[SweepRun]) -> list[SweepRun]:
    """The runs to compute: one per key, in first-seen order."""
    seen: dict[str, SweepRun] = {}
    for run in runs:
        seen.setdefault(run.key, run)
    return list(seen.values())


def validate_runs(runs: Iterable[SweepRun], *, summaries_dir: Path) -> None:
    """Parse every run config with the app's own parser before anything starts; the error
    lists each distinct problem once, with how many runs it hits and one of them."""
    problems: dict[str, list[str]] = {}
    for run in unique_runs(runs):
        try:
            parse_run_config({**run.run_config, "output-dir": str(summaries_dir), "run-name": run.name})
        except ConfigError as err:
            problems.setdefault(str(err), []).append(f"{run.table}/{run.name}")
    if problems:
        lines = ["run configs the app would refuse:"]
        for message, names in problems.items():
            lines.append(f"- {len(names)} run(s), e.g. {names[0]}:")
            lines.extend(f"    {line}" for line in message.splitlines())
        raise SweepError("\n".join(lines))


def row_from_summary(run: SweepRun, summary: RunSummary, *, summary_path: Path,
                     label_skew: float | None = None) -> dict[str, Any]:
    """The ``runs.csv`` row of one run (:class:`common.run_summary.RunRow`): the planned run's
    block, layout and cell, the summary's figures (accuracies in percent) and its partition's
    label skew."""
    return RunRow.from_summary(
        summary, run_key=run.key, table=run.table, layout=run.layout, release=run.release, beta=run.beta,
        rho=run.rho, seed=run.seed, summary_path=summary_path, label_skew=label_skew,
    ).model_dump()
