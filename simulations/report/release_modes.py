"""Release "once" against "per-epoch" for the singularized-mixup cells that ran both.

This module owns ``release_modes.md``: per cell, accuracy and Δ vs once, exposures of each
private sample, releases and upload per party, rounds and wall time. Only runs of the
paper-tables encoding reach it (:func:`simulations.report.write_report` leaves comparator runs
out): per-epoch release is a mode of the paper's method.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from simulations.report.runs import MIXUP, block_order, cell, paper_order, unique_by_run_key
from common.stats import paired_differences
from simulations.report.spreads import format_interval, format_wall, sample_std, seed_interval, seed_spread
from simulations.report.text import header_block, integers_text, knob, mib_number, texts

__all__ = ["release_modes_markdown"]

_MODES = ("once", "per-epoch")


def release_modes_markdown(runs: Sequence[dict], *, title: str, settings: Mapping[str, object]) -> str:
    """The Markdown page comparing the two release modes.

    Parameters
    ----------
    runs : sequence of dict
        Typed runs without comparator or defended runs.
    title : str
        Leads the heading.
    settings : mapping
        Run-config values common to the sweep, printed in the header.

    Returns
    -------
    str
        The page; without a cell that ran both modes, a sentence naming where per-epoch runs are.
    """
    mixup_runs = [run for run in runs if run["strategy"] == MIXUP]
    cells: dict[tuple, dict[str, list[dict]]] = {}
    for run in mixup_runs:
        key = (run["table"], run["layout"], *cell(run))
        cells.setdefault(key, {}).setdefault(run["release"], []).append(run)
    both = {key: modes for key, modes in cells.items() if set(_MODES) <= modes.keys()}
    blocks = block_order(runs)
    ordered = sorted(both.items(), key=lambda item: (blocks.index(item[0][0]), item[0][1], *paper_order(item[0][2:])))
    used = [run for _, modes in ordered for mode in _MODES for run in modes[mode]]
    lines = header_block(title=title, heading="release once vs per epoch (singularized mixup)",
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
                  + texts(f"{run['table']} P={run['parties']} β={knob(run['beta'])} ρ={knob(run['rho'])}"
                          for run in mixup_runs if run["release"] == "per-epoch") + ".", ""]
        return "\n".join(lines)
    columns = ["Block", "Layout", "P", "β", "ρ", "Release", "Test accuracy (%) [95 % CI]", "paired Δ vs once",
               "Exposures per private sample", "Releases per party", "Uploaded per party (MiB)", "Rounds",
               "Wall time (s)"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for (block, layout, parties, beta, rho), modes in ordered:
        once = {int(r["seed"]): r["test_accuracy"] for r in unique_by_run_key(modes["once"])}
        for mode in _MODES:
            members = unique_by_run_key(modes[mode])
            accuracy = seed_interval(r["test_accuracy"] for r in members)
            wall = seed_spread(r["wall_seconds"] for r in members)
            paired = seed_interval(paired_differences({int(r["seed"]): r["test_accuracy"] for r in members}, once))
            delta = ("" if mode == "once" or paired is None
                     else f"{format_interval(paired, signed=True)} {paired.verdict()}")
            lines.append("| " + " | ".join([
                block, layout, str(parties), knob(beta), knob(rho), mode,
                format_interval(accuracy), delta,
                integers_text(r["exposures_per_sample"] for r in members),
                integers_text(r["releases_per_party"] for r in members),
                mib_number(statistics.fmean(r["bytes_uploaded_per_party"] for r in members)),
                integers_text(r["rounds"] for r in members),
                format_wall(wall.mean, sample_std(wall)),
            ]) + " |")
    lines.append("")
    return "\n".join(lines)
