"""How heterogeneous a partition is: class counts per party and one label-skew number.

The label skew of a partition is the mean, over parties, of the total-variation distance
between the party's label distribution and the global one::

    skew = (1/P) sum_p (1/2) sum_c | n_pc / n_p - n_c / n |

0 for an i.i.d. split (every party holds the global class mix), approaching
``1 - 1/C``-ish values when every party holds a single class (for C balanced classes each
such party is at distance ``1 - 1/C``). Size skew does not enter: a data-poor party with the
global class mix has distance 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["class_counts", "label_skew", "party_label_distances"]


def class_counts(labels: np.ndarray, parts: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """``(P, C)`` integer counts of every class in every party's rows."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=num_classes)[:num_classes]
                     for p in parts])


def party_label_distances(counts: np.ndarray) -> np.ndarray:
    """Total-variation distance of each party's label distribution from the global one."""
    counts = np.asarray(counts, dtype=np.float64)
    sizes = counts.sum(axis=1, keepdims=True)
    if (sizes <= 0).any():
        raise ValueError("every party needs at least one sample")
    global_mix = counts.sum(axis=0) / counts.sum()
    return 0.5 * np.abs(counts / sizes - global_mix).sum(axis=1)


def label_skew(counts: np.ndarray) -> float:
    """Mean total-variation distance between the parties' label mixes and the global mix."""
    return float(party_label_distances(counts).mean())
