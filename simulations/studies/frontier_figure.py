"""``frontier.png``: accuracy against each leakage measure, one panel per measure and a row
of panels per cell; one marker per method setting with its 95 % intervals over seeds (none
drawn for a single seed), the Pareto front as a staircase, and the two reference points
(pooled clean data; each party alone, mean and worst party) as horizontal lines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.studies.frontier_table import MEASURES, cell_label, fronts

__all__ = ["FAMILY_STYLE", "write_figure"]

# family -> (colour, marker)
FAMILY_STYLE = {
    "singularized-strict-once": ("tab:blue", "o"),
    "singularized-strict-per-epoch": ("tab:cyan", "s"),
    "singularized-clamped-once": ("tab:purple", "D"),
    "singularized-clamped-per-epoch": ("tab:pink", "D"),
    "instahide": ("tab:orange", "^"),
    "fedprox": ("black", "P"),
    "fedprox+fed-augmix": ("tab:green", "X"),
    "fedprox+dp-mix-self": ("tab:red", "v"),
    "fedavg": ("dimgray", "P"),
    "fedavg+fed-augmix": ("olive", "X"),
    "fedavg+dp-mix-self": ("brown", "v"),
}
COLUMNS = 4


def _short_setting(setting: str) -> str:
    return (setting.replace("tau = ", "τ").replace(", nominal", "").replace("sigma = ", "σ")
            .replace("k = ", "k").replace(", k_private = ", "/"))


def _err(value: Mapping[str, float]) -> list[list[float]] | None:
    if value["n"] < 2 or not (math.isfinite(value["low"]) and math.isfinite(value["high"])):
        return None
    return [[value["mean"] - value["low"]], [value["high"] - value["mean"]]]


def write_figure(rows: Sequence[Mapping[str, Any]], *, path: Path, title: str) -> dict[tuple, list[tuple]]:
    """Draw the figure; returns the front drawn in each panel, ``{(cell, measure): [(leakage,
    accuracy), ...]}`` sorted by leakage (what the tests check against the table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys(r["cell"] for r in rows))
    panel_rows = math.ceil(len(MEASURES) / COLUMNS)
    fig, axes = plt.subplots(panel_rows * len(cells), COLUMNS, figsize=(4.2 * COLUMNS, 3.4 * panel_rows * len(cells)),
                             squeeze=False)
    front_idx = fronts(rows)
    drawn: dict[tuple, list[tuple]] = {}
    handles: dict[str, Any] = {}
    for c, cell in enumerate(cells):
        in_cell = [(i, r) for i, r in enumerate(rows) if r["cell"] == cell]
        refs = {r["family"]: r for _, r in in_cell if r["reference"] is not None}
        for k, measure in enumerate(MEASURES):
            ax = axes[c * panel_rows + k // COLUMNS][k % COLUMNS]
            points = []
            for i, row in in_cell:
                value, acc = row.get(measure.key), row["accuracy"]
                if row["reference"] is not None or value is None or acc is None or not math.isfinite(value["mean"]):
                    continue
                colour, marker = FAMILY_STYLE.get(row["family"], ("gray", "o"))
                handle = ax.errorbar(value["mean"], acc["mean"], xerr=_err(value), yerr=_err(acc), fmt=marker,
                                     color=colour, ms=5, capsize=2, lw=0.8)
                handles.setdefault(row["label"], handle)
                if row["setting"]:
                    ax.annotate(_short_setting(row["setting"]), (value["mean"], acc["mean"]), fontsize=6,
                                xytext=(3, 3), textcoords="offset points")
                points.append((value["mean"], acc["mean"]))
            front = sorted((rows[i][measure.key]["mean"], rows[i]["accuracy"]["mean"])
                           for i in front_idx.get(cell, {}).get(measure.key, []))
            drawn[(cell, measure.key)] = front
            if front:
                xs, ys = zip(*front)
                ax.plot(xs, ys, drawstyle="steps-post", color="goldenrod", lw=1.6, alpha=0.8, zorder=0)
                handles.setdefault("Pareto front", ax.lines[-1])
            pooled, alone = refs.get("pooled"), refs.get("local-only")
            if pooled is not None and pooled["accuracy"] is not None:
                handles.setdefault("pooled clean data (reference)",
                                   ax.axhline(pooled["accuracy"]["mean"], color="dimgray", ls="-", lw=1.2))
            if alone is not None and alone["accuracy"] is not None:
                handles.setdefault("each party alone, mean (reference)",
                                   ax.axhline(alone["accuracy"]["mean"], color="gray", ls="--", lw=1))
                if alone.get("worst_party_accuracy") is not None:
                    handles.setdefault("each party alone, worst party",
                                       ax.axhline(alone["worst_party_accuracy"]["mean"], color="gray", ls=":", lw=1))
            if measure.log_scale and points and all(x > 0 for x, _ in points):
                ax.set_xscale("log")
            ax.set_xlabel(f"{measure.short} (higher = more leakage)", fontsize=8)
            ax.set_ylabel("test accuracy (%)", fontsize=8)
            ax.set_title(f"{cell_label(cell)}: {measure.short}", fontsize=8)
            ax.tick_params(labelsize=7)
            if not points:
                ax.text(0.5, 0.5, "not defined for these methods", transform=ax.transAxes, ha="center", fontsize=7)
        for k in range(len(MEASURES), panel_rows * COLUMNS):
            axes[c * panel_rows + k // COLUMNS][k % COLUMNS].axis("off")
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return drawn
