"""Shared machinery of the Dirichlet partitioners: fit class-by-party proportions to exact
party sizes, round to integers without losing a sample, and hand out indices."""

from __future__ import annotations

import numpy as np

_FLOOR = 1e-12  # keeps Sinkhorn scaling well defined when Dir(beta) underflows to 0


def check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class ids, got {labels.dtype}")
    return labels


def check_common(*, num_parties: int, beta: float, n: int, min_size: int) -> None:
    if num_parties < 1:
        raise ValueError(f"num_parties must be >= 1, got {num_parties}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if n < num_parties * min_size:
        raise ValueError(
            f"{n} samples cannot give {num_parties} parties at least min_size={min_size} each"
        )


def equal_sizes(total: int, parts: int) -> np.ndarray:
    """``parts`` integers summing to ``total`` that differ by at most 1."""
    sizes = np.full(parts, total // parts, dtype=np.int64)
    sizes[: total % parts] += 1
    return sizes


def fit_to_sizes(
    proportions: np.ndarray, class_counts: np.ndarray, party_sizes: np.ndarray, *, iters: int = 2000
) -> np.ndarray:
    """Scale rows and columns of ``proportions`` (classes x parties) so that rows sum to
    ``class_counts`` and columns to ``party_sizes`` (iterative proportional fitting).

    IPF keeps every cross-ratio ``q_ap q_bs / (q_as q_bp)`` of the input, i.e. the relative
    label skew drawn from the Dirichlet, and changes only row and column scales.
    """
    m = np.maximum(proportions, _FLOOR) * class_counts[:, None]
    rows, cols = class_counts.astype(float), party_sizes.astype(float)
    for _ in range(iters):
        m *= (cols / m.sum(axis=0))[None, :]
        m *= (rows / m.sum(axis=1))[:, None]
        if np.abs(m.sum(axis=0) - cols).max() < 1e-6:
            break
    return m


def round_preserving_margins(
    m: np.ndarray, class_counts: np.ndarray, party_sizes: np.ndarray
) -> np.ndarray:
    """Integer matrix with row sums ``class_counts`` and column sums ``party_sizes`` that
    differs from ``m`` by less than 1 in most cells: floor everything, then give the missing
    units to the cells with the largest fractional parts whose row and column still lack
    units. Any cell may take a unit, so the loop always closes both margins."""
    base = np.floor(m).astype(np.int64)
    row_need = class_counts - base.sum(axis=1)
    col_need = party_sizes - base.sum(axis=0)
    if row_need.min() < 0 or col_need.min() < 0:
        raise AssertionError("flooring cannot exceed a margin")
    order = np.argsort(-(m - base), axis=None, kind="stable")
    while row_need.sum() > 0:
        for flat in order:
            c, p = divmod(int(flat), m.shape[1])
            if row_need[c] > 0 and col_need[p] > 0:
                base[c, p] += 1
                row_need[c] -= 1
                col_need[p] -= 1
    return base


def allocate(
    labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Give each party ``counts[c, p]`` random samples of class ``c``."""
    classes = np.unique(labels)
    parts: list[list[np.ndarray]] = [[] for _ in range(counts.shape[1])]
    for row, cls in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        bounds = np.concatenate([[0], np.cumsum(counts[row])])
        for p in range(counts.shape[1]):
            parts[p].append(idx[bounds[p] : bounds[p + 1]])
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]


def dirichlet_counts(
    labels: np.ndarray,
    party_sizes: np.ndarray,
    *,
    beta: float,
    capacity: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Class x party integer counts: per class ``q_c ~ Dir(beta 1)``, biased by the
    party capacity weights, then balanced to the exact party sizes."""
    classes, class_counts = np.unique(labels, return_counts=True)
    q = rng.dirichlet(np.full(party_sizes.shape[0], beta), size=classes.shape[0])
    q = q * capacity[None, :]
    q /= q.sum(axis=1, keepdims=True)
    fitted = fit_to_sizes(q, class_counts, party_sizes)
    return round_preserving_margins(fitted, class_counts, party_sizes)
