"""The figure of one partition: how many samples of each class every party holds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

__all__ = ["plot_partition"]


def plot_partition(counts: np.ndarray, *, path: Path, title: str, skew: float, distances: np.ndarray,
                   poor_party: int | None = None) -> Path:
    """Parties on the x axis, their class counts stacked (one colour per class), each party's
    total-variation distance from the global label mix written above its bar; the data-poor
    party's bar is hatched and labelled."""
    counts = np.asarray(counts)
    parties, classes = counts.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * parties + 3), 4.2), dpi=120)
    colours = plt.get_cmap("tab10" if classes <= 10 else "tab20")(np.arange(classes) % (10 if classes <= 10 else 20))
    bottom = np.zeros(parties)
    x = np.arange(parties)
    for c in range(classes):
        bars = ax.bar(x, counts[:, c], bottom=bottom, color=colours[c], width=0.8, label=f"class {c}",
                      edgecolor="white", linewidth=0.3)
        if poor_party is not None:
            bars[poor_party].set_hatch("//")
        bottom += counts[:, c]
    if parties <= 30:
        for p in range(parties):
            ax.text(p, bottom[p], f"{distances[p]:.2f}", ha="center", va="bottom", fontsize=7)
    if poor_party is not None:
        ax.annotate("data-poor", (poor_party, bottom[poor_party]), xytext=(0, 30), textcoords="offset points",
                    ha="center", fontsize=8, arrowprops={"arrowstyle": "->", "lw": 0.8, "shrinkB": 12})
    ax.set_xlabel("party (partition id)")
    ax.set_ylabel("samples")
    ax.set_xticks(x if parties <= 30 else x[:: max(1, parties // 20)])
    ax.set_ylim(0, bottom.max() * 1.25)
    ax.set_title(f"{title}\nlabel skew {skew:.2f} (mean TV distance from the global mix; per party above each bar)",
                 fontsize=9)
    if classes <= 20:
        handles = [Patch(facecolor=colours[c], label=f"class {c}") for c in range(classes)]
        ax.legend(handles=handles, fontsize=7, ncol=1, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
