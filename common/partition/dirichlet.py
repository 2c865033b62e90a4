"""Dirichlet label-skew partitioner with equal party sizes (paper, section 5.3)."""

from __future__ import annotations

import numpy as np

from ._balance import allocate, check_common, check_labels, dirichlet_counts, equal_sizes
from .base import PARTITIONERS, Partitioner


def dirichlet_partition(
    labels: np.ndarray,
    *,
    num_parties: int,
    beta: float,
    seed: int,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Split sample indices among parties with Dirichlet label skew and equal sizes.

    For every class ``c`` the proportions across parties are drawn as
    ``q_c ~ Dir(beta 1_P)``. The class x party matrix ``n_c q_c`` is then balanced by
    iterative proportional fitting so that every party holds ``n // P`` or ``n // P + 1``
    samples (the paper's "disjoint local subset of equal size"), rounded to integers without
    losing a sample, and each party receives that many random indices of each class.
    Smaller ``beta`` gives stronger label skew; ``beta -> inf`` approaches an i.i.d. split.

    Parameters
    ----------
    labels : np.ndarray
        Integer class ids, shape ``(n,)``.
    num_parties : int
        Number of parties ``P``.
    beta : float
        Dirichlet concentration, ``> 0``.
    seed : int
        Seed of the NumPy generator; the same seed gives the same partition.
    min_size : int
        Every party must hold at least this many samples (2 are needed to mix); an error is
        raised when ``n // P`` is smaller.

    Returns
    -------
    list of np.ndarray
        ``P`` sorted index arrays, disjoint and covering ``range(n)``.
    """
    labels = check_labels(labels)
    check_common(num_parties=num_parties, beta=beta, n=labels.size, min_size=min_size)
    rng = np.random.default_rng(seed)
    sizes = equal_sizes(labels.size, num_parties)
    counts = dirichlet_counts(
        labels, sizes, beta=beta, capacity=np.ones(num_parties), rng=rng
    )
    return allocate(labels, counts, rng)


@PARTITIONERS.register
class DirichletPartitioner(Partitioner):
    """Equal party sizes, per-class proportions from ``Dir(beta)`` (the paper's Table 5)."""

    name = "dirichlet"
    label = "Dirichlet label skew, equal sizes"

    def check_config(self, cfg) -> None:  # noqa: ANN001
        if cfg.rho != 1.0:
            raise ValueError("rho: only used with partitioner = 'size-skew'; set it to 1.0 or change partitioner")

    def split(self, labels: np.ndarray, *, num_parties: int, cfg) -> list[np.ndarray]:  # noqa: ANN001
        return dirichlet_partition(labels, num_parties=num_parties, beta=cfg.beta, seed=cfg.seed,
                                   min_size=cfg.min_party_size)
