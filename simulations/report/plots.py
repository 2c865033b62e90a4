"""The report's PNG plots: accuracy against β and ρ, and FL accuracy per round.

This module owns ``accuracy_vs_beta.png`` (Table 5 layout), ``accuracy_vs_rho.png`` (Table 6
layout) and ``fedprox_rounds.png`` (the iterative runs' test accuracy per round, read from
their summaries, with the same cell's one-shot accuracy as a marker beside the last round).
Bars and bands are 95 % Student-t intervals over seeds (none with one seed). The plots are made of
singularized mixup and the plain FL strategies alone: :func:`simulations.report.write_report`
leaves comparator and defended runs out.
"""

from __future__ import annotations

import statistics
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

# The report is written on headless machines (and inside tests): pick the file-only backend
# before pyplot is imported, because pyplot locks in a backend on import.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from common.run_summary import read_summary  # noqa: E402
from simulations.report.paper_numbers import not_the_papers_inputs, paper_cell, paper_setting_matches  # noqa: E402
from simulations.report.runs import (  # noqa: E402
    FL_STRATEGIES,
    MIXUP,
    arm,
    arm_label,
    arm_order,
    baseline_strategy,
    cell,
    layout_runs,
    method_label,
    paper_order,
    seeds,
    unique_by_run_key,
)
from simulations.report.text import knob, taus_text, texts  # noqa: E402

__all__ = ["plot_accuracy_vs_knob", "plot_fl_rounds"]

_PLOT_DPI = 120
# Fixed colours per arm so that the same arm reads the same in every plot.
_ARM_COLOURS = {
    ("fedprox", ""): "C0",
    ("fedavg", ""): "C1",
    (MIXUP, "once"): "C3",
    (MIXUP, "per-epoch"): "C2",
}


def _arm_colour(arm_: tuple[str, str], *, fallback_index: int) -> str:
    return _ARM_COLOURS.get(arm_, f"C{4 + fallback_index % 6}")


def _inputs_text(runs: Sequence[dict]) -> str:
    backbones = {run["backbone"] for run in runs}
    data = texts(run["dataset"] for run in runs)
    return f"{data}, raw inputs" if backbones == {"none"} else f"{data}, frozen {texts(backbones)} features"


def _spread_text(seed_count: int) -> str:
    """What the bars or bands show: a 95 % interval over seeds, or nothing with one seed."""
    return ("1 seed, no interval" if seed_count == 1
            else f"{seed_count} seeds, mean and 95 % interval (Student's t)")


def _plot_caption(runs: Sequence[dict]) -> str:
    """Data set, inputs, release and noise modes, selection rule and seeds, for a figure title."""
    mixup_runs = [run for run in runs if run["strategy"] == MIXUP]
    releases = texts((run["release"] for run in mixup_runs), empty="n/a")
    noise = texts((run["noise_mode"] for run in mixup_runs), empty="n/a")
    tau = taus_text(mixup_runs) if mixup_runs else "n/a"
    nominal = " (nominal)" if any(run["noise_mode"] == "clamped" for run in mixup_runs) else ""
    rules = texts(run["selection"] for run in runs)
    return (f"{_inputs_text(runs)}; mixup release {releases}, noise {noise}, tau {tau}{nominal}; "
            f"selection = {rules}; {_spread_text(len(seeds(runs)))}")


def _interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t interval (0 for one value)."""
    from common.stats import t_interval

    found = t_interval(values)
    return found.mean, (found.half_width if found.n > 1 else 0.0)


def _wrapped_title(*parts: str, width: float) -> str:
    # About 13 characters of medium-size title text fit per inch of figure width.
    columns = max(40, int(13 * width))
    return "\n".join(textwrap.fill(part, columns) for part in parts)


def _set_log_ticks(axis, values: Sequence[float]) -> None:  # noqa: ANN001
    # Ticks only at the knob values that ran, labelled as the paper prints them.
    axis.set_major_locator(FixedLocator(list(values)))
    axis.set_major_formatter(FixedFormatter([knob(v) for v in values]))
    axis.set_minor_locator(NullLocator())


def plot_accuracy_vs_knob(runs: Sequence[dict], *, layout: str, path: Path, title: str,
                          settings: Mapping[str, object]) -> None:
    """Test accuracy against β (Table 5) or ρ (Table 6), one panel per P (and β).

    Parameters
    ----------
    runs : sequence of dict
        Typed runs without comparator or defended runs; those of ``layout`` are plotted.
    layout : {"table5", "table6"}
        Which knob is on the x axis (β or ρ, log scale).
    path : Path
        The PNG to write.
    title : str
        Leads the figure title.
    settings : mapping
        Run-config values common to the sweep (the paper's points are drawn only for its inputs).
    """
    chosen = layout_runs(runs, layout=layout)
    knob_index, knob_name = (1, "Dirichlet β") if layout == "table5" else (2, "size ratio ρ")

    def panel_of(cell_: tuple[int, float, float]) -> tuple:
        return (cell_[0],) if layout == "table5" else (cell_[0], cell_[1])

    panels: dict[tuple, dict[tuple[str, str], dict[float, list[float]]]] = {}
    for run in chosen:
        cell_ = cell(run)
        panels.setdefault(panel_of(cell_), {}).setdefault(arm(run), {}).setdefault(cell_[knob_index], []).append(
            run["test_accuracy"])
    datasets = {run["dataset"] for run in chosen}
    backbones = {run["backbone"] for run in chosen}
    show_paper = (len(datasets) == 1 and len(backbones) == 1
                  and paper_setting_matches(dataset=next(iter(datasets)), backbone=next(iter(backbones)))
                  and not not_the_papers_inputs(settings))
    dataset = texts(datasets)

    panel_keys = sorted(panels, key=lambda key: (key[0], *(-v for v in key[1:])))
    # A floor on the width keeps a one-panel figure wide enough for its two-line title.
    width = max(4.4 * len(panel_keys), 7.5)
    figure, axes = plt.subplots(1, len(panel_keys), figsize=(width, 4.6), squeeze=False, sharey=True)
    all_arms = sorted({arm_ for arms in panels.values() for arm_ in arms}, key=arm_order)
    for ax, key in zip(axes[0], panel_keys):
        knob_values = sorted({x for arms in panels[key].values() for x in arms})
        for index, arm_ in enumerate(all_arms):
            points = panels[key].get(arm_)
            if not points:
                continue
            xs = sorted(points)
            intervals = [_interval(points[x]) for x in xs]
            # Arms side by side around each knob value, so that bars of close means stay apart.
            shift = 1.0 + 0.04 * (index - (len(all_arms) - 1) / 2)
            ax.errorbar([x * shift for x in xs], [m for m, _ in intervals], yerr=[h for _, h in intervals],
                        marker="o", capsize=3, color=_arm_colour(arm_, fallback_index=index), label=arm_label(arm_))
        if show_paper:
            for arm_, paper_index in (((baseline_strategy(chosen) or "fedprox", ""), 0), ((MIXUP, "once"), 1)):
                paper_points = []
                for x in knob_values:
                    beta, rho = (x, 1.0) if layout == "table5" else (key[1], x)
                    pair = paper_cell(layout=layout, parties=key[0], beta=beta, rho=rho)
                    if pair is not None:
                        paper_points.append((x, pair[paper_index]))
                if paper_points:
                    ax.plot(*zip(*paper_points), linestyle=":", marker="x", color=_arm_colour(arm_, fallback_index=0),
                            label=f"paper: {'FedProx' if paper_index == 0 else 'singularized mixup'}")
        ax.set_xscale("log")
        _set_log_ticks(ax.xaxis, knob_values)
        if len(knob_values) == 1:
            ax.set_xlim(knob_values[0] / 3, knob_values[0] * 3)
        ax.set_xlabel(f"{knob_name} (log scale)")
        ax.set_title(f"P = {key[0]}" + (f", β = {knob(key[1])}" if layout == "table6" else ""))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"test accuracy on {dataset} (%)")
    axes[0][0].legend(fontsize="small")
    what = "Dirichlet β (Table 5 layout)" if layout == "table5" else "size ratio ρ (Table 6 layout)"
    figure.suptitle(_wrapped_title(f"{title}: test accuracy vs {what}", _plot_caption(chosen), width=width),
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
        history = read_summary(path).history  # of any schema: accuracies in percent
        by_round = {int(entry["round"]): float(entry["test_accuracy"])
                    for entry in history if entry.get("test_accuracy") is not None}
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"run {run['run_key']}: summary {path} has no readable history ({err!r}); "
                      "left out of fedprox_rounds.png", stacklevel=3)
        return None
    return by_round


def plot_fl_rounds(runs: Sequence[dict], *, path: Path, title: str) -> None:
    """FL test accuracy per round per cell, with the same cell's one-shot (once) accuracy dashed.

    Parameters
    ----------
    runs : sequence of dict
        Typed runs without comparator or defended runs; one panel per sweep block with FL runs.
    path : Path
        The PNG to write.
    title : str
        Leads the figure title.

    Warns
    -----
    UserWarning
        For each FL run whose summary (``summary_path``) is missing or unreadable; that run is
        left out of the plot.
    """
    fl_runs = unique_by_run_key(run for run in runs if run["strategy"] in FL_STRATEGIES)
    blocks = list(dict.fromkeys(run["table"] for run in fl_runs))
    width = max(6.0 * len(blocks), 7.5)
    figure, axes = plt.subplots(1, len(blocks), figsize=(width, 4.8), squeeze=False)
    for ax, block in zip(axes[0], blocks):
        cells: dict[tuple, list[dict]] = {}
        for run in fl_runs:
            if run["table"] == block:
                cells.setdefault((run["strategy"], *cell(run)), []).append(run)
        drawn = 0
        one_shot_values: list[tuple[float, str]] = []
        for colour_index, (strategy, parties, beta, rho) in enumerate(
                sorted(cells, key=lambda k: (*paper_order(k[1:]), k[0]))):
            members = cells[(strategy, parties, beta, rho)]
            histories = [(run, _fl_test_accuracy_by_round(run)) for run in members]
            histories = [(run, history) for run, history in histories if history]
            if not histories:
                continue
            colour = f"C{colour_index % 10}"
            rounds = sorted({r for _, history in histories for r in history})
            intervals = [_interval([history[r] for _, history in histories if r in history]) for r in rounds]
            means = [m for m, _ in intervals]
            stds = [h for _, h in intervals]
            label = (f"{method_label(strategy)} P={parties}, β={knob(beta)}"
                     + (f", ρ={knob(rho)}" if rho != 1.0 or members[0]["layout"] == "table6" else "")
                     + f" ({len(histories)} seed{'s' if len(histories) != 1 else ''})")
            ax.plot(rounds, means, color=colour, label=label)
            ax.fill_between(rounds, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=colour, alpha=0.15, linewidth=0)
            for run, history in histories:
                if run["selected_at"] in history:
                    ax.plot([run["selected_at"]], [history[run["selected_at"]]], marker="v", markersize=5,
                            color=colour, linestyle="none")
            once = [r["test_accuracy"] for r in runs if r["strategy"] == MIXUP and r["release"] == "once"
                    and r["table"] == block and cell(r) == (parties, beta, rho)]
            if not once:
                # The one-shot arm may live in the layout's own block; compare with that one.
                once = [r["test_accuracy"] for r in layout_runs(runs, layout=members[0]["layout"])
                        if arm(r) == (MIXUP, "once") and cell(r) == (parties, beta, rho)]
            if once:
                # The one-shot model has no rounds: a marker beside the last round, its value
                # written out, so that close values stay readable (no line on the panel border).
                value = statistics.fmean(once)
                ax.plot([rounds[-1] + 1.5 + 0.6 * drawn], [value], marker="D", markersize=6, color=colour,
                        markeredgecolor="black", linestyle="none")
                one_shot_values.append((value, colour))
            drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "no per-round history readable", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"block {block}")
        ax.set_xlabel("communication round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="grey", marker="D", markeredgecolor="black", linestyle="none"),
                    Line2D([], [], color="grey", marker="v", linestyle="none")]
        labels += ["singularized mixup, release once (same cell, same colour): "
                   + ", ".join(f"{value:.1f}" for value, _ in one_shot_values),
                   "reported round (per run; the selection rule in the title)"]
        ax.legend(handles, labels, fontsize="x-small", loc="lower right")
        low, high = ax.get_ylim()
        ax.set_ylim(low - 0.02 * (high - low), high + 0.04 * (high - low))  # nothing on the border
    axes[0][0].set_ylabel(f"test accuracy on {texts(run['dataset'] for run in fl_runs)} (%)")
    caption = _plot_caption(fl_runs + [r for r in runs if r["strategy"] == MIXUP])
    figure.suptitle(_wrapped_title(f"{title}: federated test accuracy per round (the test set only plots, it never "
                                   "chooses)", caption, width=width), fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=_PLOT_DPI)
    plt.close(figure)
