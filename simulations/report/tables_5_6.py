"""The paper's Tables 5 and 6: singularized mixup (release once) against FedProx, per cell.

This module owns ``table5.md`` and ``table6.md``: one row per partition cell in the paper's
order: each arm's mean and 95 % interval over seeds (Student's t), the paired Δ = mixup -
baseline per seed (both arms saw the same partition, split and test set) with its interval,
and a verdict per cell (ahead / behind / inconclusive from that interval); the paper's own
numbers beside ours when the sweep ran the paper's setting (CIFAR-10 on a frozen ImageNet
ResNet-18); and a count of the cells in which mixup is significantly ahead or behind. A cell
whose two arms were selected by different rules gets no Δ. Only runs of the paper-tables encoding reach the
mixup column; :func:`simulations.report.write_report` leaves comparator runs out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from common.stats import Interval, paired_differences
from simulations.report.paper_numbers import (
    PAPER_FL_ROUNDS,
    PAPER_PROXIMAL_MU,
    PAPER_SETTING_DESCRIPTION,
    PAPER_TABLE5,
    PAPER_TABLE6,
    PAPER_TAU,
    not_the_papers_inputs,
    paper_cell,
    paper_delta,
    paper_setting_matches,
)
from simulations.report.runs import (
    FL_STRATEGIES,
    MIXUP,
    arm,
    baseline_strategy,
    by_cell_and_arm,
    layout_runs,
    method_label,
    paper_order,
    seeds,
)
from simulations.report.spreads import format_interval, seed_interval
from simulations.report.text import header_block, integers_text, knob

__all__ = ["paper_table_markdown"]


@dataclass(frozen=True)
class _PaperTableRow:
    """One partition cell: both arms over seeds, their paired difference, the paper's pair."""

    cell: tuple[int, float, float]
    baseline: Interval | None
    mixup: Interval | None
    delta: Interval | None  # paired over the seeds both arms ran
    paper: tuple[float, float] | None
    label_skew: float | None = None
    refused: str = ""  # why no Δ is computed (different selection rules)

    @property
    def verdict(self) -> str:
        if self.refused or self.delta is None:
            return "–"
        return self.delta.verdict()

    def cell_text(self, *, layout: str) -> str:
        parties, beta, rho = self.cell
        text = f"P={parties}, β={knob(beta)}"
        return text + (f", ρ={knob(rho)}" if layout == "table6" else "")


def _by_seed(runs: Sequence[dict]) -> dict[int, float]:
    return {int(run["seed"]): float(run["test_accuracy"]) for run in runs}


def _row(cell, arms, *, baseline_arm, mixup_arm, layout) -> _PaperTableRow:  # noqa: ANN001
    base_runs, mix_runs = arms.get(baseline_arm, []), arms.get(mixup_arm, [])
    rules = {r["selection"] for r in base_runs} | {r["selection"] for r in mix_runs}
    refused = ""
    delta = None
    if len(rules) > 1:
        refused = f"refused: selection rules differ ({', '.join(sorted(rules))})"
    elif base_runs and mix_runs:
        delta = seed_interval(paired_differences(_by_seed(mix_runs), _by_seed(base_runs)))
    skews = [r["label_skew"] for r in base_runs + mix_runs if r.get("label_skew") is not None]
    return _PaperTableRow(
        cell=cell, baseline=seed_interval(r["test_accuracy"] for r in base_runs),
        mixup=seed_interval(r["test_accuracy"] for r in mix_runs), delta=delta,
        paper=paper_cell(layout=layout, parties=cell[0], beta=cell[1], rho=cell[2]),
        label_skew=sum(skews) / len(skews) if skews else None, refused=refused,
    )


def _ahead_sentence(rows: Sequence[_PaperTableRow], *, layout: str, baseline_name: str) -> str:
    paper_pairs = list((PAPER_TABLE5 if layout == "table5" else PAPER_TABLE6).values())
    paper_ahead = sum(1 for pair in paper_pairs if paper_delta(pair) > 0)
    paper_text = (f"all {len(paper_pairs)}" if paper_ahead == len(paper_pairs)
                  else f"{paper_ahead} of {len(paper_pairs)}")
    refused = [row for row in rows if row.refused]
    compared = [row for row in rows if row.delta is not None]
    if not compared:
        why = (f" ({len(refused)} cell{'s have' if len(refused) != 1 else ' has'} no Δ: {'their' if len(refused) != 1 else 'its'}"
               " runs were selected by different rules)" if refused else "")
        return (f"No cell has paired {baseline_name} and singularized mixup (release once) results{why}, so nothing "
                f"is compared; the paper reports singularized mixup ahead of FedProx in {paper_text} cells.")
    ahead = [row for row in compared if row.verdict == "ahead"]
    behind = [row for row in compared if row.verdict == "behind"]
    unsettled = [row for row in compared if row.verdict == "inconclusive"]
    parts = [f"Counting only cells whose 95 % interval of the paired Δ excludes 0: singularized mixup is ahead of "
             f"{baseline_name} in {len(ahead)} and behind in {len(behind)} of {len(compared)} cells; "
             f"{len(unsettled)} {'are' if len(unsettled) != 1 else 'is'} inconclusive at this many seeds. "
             f"The paper reports it ahead of FedProx in {paper_text}."]
    if behind:
        where = "; ".join(row.cell_text(layout=layout) for row in behind)
        parts.append(f"{baseline_name} is significantly ahead in {where}, so the paper's claim that singularized "
                     "mixup outperforms FedProx in every setting does NOT reproduce here.")
    elif len(ahead) == len(compared):
        parts.append("The paper's direction (mixup ahead) holds significantly in every cell compared here.")
    if baseline_name != "FedProx":
        parts.append("(The paper's baseline is FedProx; this sweep ran FedAvg.)")
    if refused:
        parts.append(f"{len(refused)} cell{'s have' if len(refused) != 1 else ' has'} no Δ: its runs were selected "
                     "by different rules, and a difference between them would measure the rules.")
    uncounted = len(rows) - len(compared) - len(refused)
    if uncounted:
        parts.append(f"{uncounted} cell{'s lack' if uncounted != 1 else ' lacks'} one of the two arms and "
                     f"{'are' if uncounted != 1 else 'is'} not counted.")
    return " ".join(parts)


def _paper_setting_differences(runs: Sequence[dict], *, settings: Mapping[str, object]) -> list[str]:
    """Where a sweep on the paper's data set and backbone still departs from the paper's protocol."""
    differences = []
    fl_rounds = sorted({run["rounds"] for run in runs if run["strategy"] in FL_STRATEGIES})
    if fl_rounds and fl_rounds != [PAPER_FL_ROUNDS]:
        differences.append(f"FL rounds {integers_text(fl_rounds)} (paper {PAPER_FL_ROUNDS})")
    taus = sorted({run["tau"] for run in runs if run["strategy"] == MIXUP and run["tau"] is not None})
    if taus and any(not math.isclose(tau, PAPER_TAU) for tau in taus):
        differences.append(f"tau {', '.join(f'{t:g}' for t in taus)} (paper {PAPER_TAU:g})")
    mu = settings.get("proximal-mu")
    if isinstance(mu, (int, float)) and not math.isclose(float(mu), PAPER_PROXIMAL_MU):
        differences.append(f"proximal-mu {mu:g} (paper {PAPER_PROXIMAL_MU:g})")
    return differences


def paper_table_markdown(runs: Sequence[dict], *, layout: str, title: str, settings: Mapping[str, object]) -> str:
    """The Markdown page of the paper's Table 5 or Table 6 layout.

    Parameters
    ----------
    runs : sequence of dict
        Typed runs without comparator or defended runs; those of ``layout`` are used (see
        :func:`simulations.report.runs.layout_runs`).
    layout : {"table5", "table6"}
        Which of the paper's tables.
    title : str
        Leads the heading.
    settings : mapping
        Run-config values common to the sweep, printed in the header.

    Returns
    -------
    str
        The page, ending with the sentence that counts the cells in which mixup is ahead.
    """
    chosen = layout_runs(runs, layout=layout)
    baseline = baseline_strategy(chosen)
    baseline_name = method_label(baseline) if baseline else "FedProx"
    baseline_arm = (baseline or "fedprox", "")
    mixup_arm = (MIXUP, "once")
    used = [run for run in chosen if arm(run) in (baseline_arm, mixup_arm)]
    datasets = {run["dataset"] for run in chosen}
    backbones = {run["backbone"] for run in chosen}
    show_paper = (len(datasets) == 1 and len(backbones) == 1
                  and paper_setting_matches(dataset=next(iter(datasets)), backbone=next(iter(backbones))))
    inputs_differ = not_the_papers_inputs(settings)

    rows = [
        _row(cell, arms, baseline_arm=baseline_arm, mixup_arm=mixup_arm, layout=layout)
        for cell, arms in sorted(by_cell_and_arm(chosen).items(), key=lambda item: paper_order(item[0]))
    ]
    expected_n = len(seeds(used))

    heading = ("Table 5, Dirichlet label skew, equal party sizes" if layout == "table5"
               else "Table 6, label skew and one data-poor party (size ratio ρ)")
    release_line = ("- Singularized mixup column: release `once`, each party uploads its mixed features one time "
                    "(the paper's protocol)")
    if any(run["strategy"] == MIXUP and run["release"] == "per-epoch" for run in runs):
        release_line += "; per-epoch release is compared in release_modes.md"  # linked only when written
    if not any(arm(run) == mixup_arm for run in chosen):
        release_line += "; NO release-once runs exist for this layout, so the column is empty"
    lines = header_block(title=title, heading=heading, runs=used or chosen, settings=settings,
                         lines_before_settings=[release_line])
    if show_paper and inputs_differ:
        lines += [f"The paper's numbers are not shown: {inputs_differ}.", ""]
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
    columns = knob_columns + ["label skew", baseline_name, "singularized mixup (ours)", "paired Δ [95 % CI]",
                              "verdict"]
    if show_paper:
        columns += ["paper FedProx", "paper mixup", "paper Δ"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        parties, beta, rho = row.cell
        cells = [str(parties), knob(beta)] + ([knob(rho)] if layout == "table6" else [])
        cells += ["–" if row.label_skew is None else f"{row.label_skew:.2f}",
                  format_interval(row.baseline, expected_n=expected_n),
                  format_interval(row.mixup, expected_n=expected_n),
                  row.refused or format_interval(row.delta, signed=True), row.verdict]
        if show_paper:
            cells += ([f"{row.paper[0]:.2f}", f"{row.paper[1]:.2f}", f"{paper_delta(row.paper):+.2f}"]
                      if row.paper else ["", "", ""])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _ahead_sentence(rows, layout=layout, baseline_name=baseline_name), ""]
    return "\n".join(lines)
