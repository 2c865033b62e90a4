"""Joint label-skew and size-skew partitioner with one data-poor party (paper, eq. 5)."""

from __future__ import annotations

import numpy as np

from ._balance import allocate, check_common, check_labels, dirichlet_counts, equal_sizes
from .base import PARTITIONERS, Partitioner


def size_skew_partition(
    labels: np.ndarray,
    *,
    num_parties: int,
    beta: float,
    rho: float,
    seed: int,
    poor_party: int = 0,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Dirichlet label skew plus one data-poor party of ``rho`` times a rich party's size.

    Sizes follow equation 5 with the total fixed: ``n = (P - 1) n_rich + n_poor`` and
    ``n_poor = rho n_rich``, so ``n_rich = n / (P - 1 + rho)``. The poor party gets
    ``max(min_size, round(rho n_rich))`` samples and the ``P - 1`` rich parties share the rest
    equally (sizes differ by at most 1). Per class, ``q_c ~ Dir(beta 1)`` is reweighted by
    capacity weights (``rho`` for the poor party, 1 for the others) and balanced to the exact
    sizes as in :func:`common.partition.dirichlet_partition`. Balancing fixes column sums,
    so it alone determines the party sizes.

    What the capacity weights change: nothing. Iterative proportional fitting converges to
    the same table whatever positive factor multiplies a party's column of the start, so
    once the sizes are balanced exactly the weights cancel (checked: identical counts with
    and without them). The data-poor party's label mix is drawn from ``Dir(beta)`` like every
    other party's; only its size differs. The weights are kept because equation 5 states them.

    Parameters
    ----------
    labels : np.ndarray
        Integer class ids, shape ``(n,)``.
    num_parties : int
        Number of parties ``P >= 2``.
    beta : float
        Dirichlet concentration, ``> 0``.
    rho : float
        Size ratio ``n_poor / n_rich`` in ``(0, 1]``.
    seed : int
        Seed of the NumPy generator.
    poor_party : int
        Index of the data-poor party.
    min_size : int
        Lower bound on every party's size.

    Returns
    -------
    list of np.ndarray
        ``P`` sorted, disjoint index arrays covering ``range(n)``.
    """
    labels = check_labels(labels)
    check_common(num_parties=num_parties, beta=beta, n=labels.size, min_size=min_size)
    if num_parties < 2:
        raise ValueError("size skew needs at least 2 parties")
    if not 0 < rho <= 1:
        raise ValueError(f"rho must lie in (0, 1], got {rho}")
    if not 0 <= poor_party < num_parties:
        raise ValueError(f"poor_party must lie in [0, {num_parties}), got {poor_party}")
    n = labels.size
    n_rich = n / (num_parties - 1 + rho)
    n_poor = max(min_size, int(round(rho * n_rich)))
    rich = equal_sizes(n - n_poor, num_parties - 1)
    if rich.min() < min_size:
        raise ValueError(f"rich parties would hold fewer than min_size={min_size} samples")
    sizes = np.insert(rich, poor_party, n_poor)
    capacity = np.ones(num_parties)
    capacity[poor_party] = rho
    rng = np.random.default_rng(seed)
    counts = dirichlet_counts(labels, sizes, beta=beta, capacity=capacity, rng=rng)
    return allocate(labels, counts, rng)


@PARTITIONERS.register
class SizeSkewPartitioner(Partitioner):
    """Dirichlet label skew plus one data-poor party (the paper's Table 6, equation 5)."""

    name = "size-skew"
    label = "Dirichlet label skew, one data-poor party"

    def check_parties(self, cfg, num_parties: int) -> None:  # noqa: ANN001
        if cfg.poor_party >= num_parties:
            raise ValueError(f"poor-party {cfg.poor_party} outside [0, {num_parties})")

    def split(self, labels: np.ndarray, *, num_parties: int, cfg) -> list[np.ndarray]:  # noqa: ANN001
        return size_skew_partition(labels, num_parties=num_parties, beta=cfg.beta, rho=cfg.rho, seed=cfg.seed,
                                   poor_party=cfg.poor_party, min_size=cfg.min_party_size)

    def describe(self, cfg) -> str:  # noqa: ANN001
        return f"{self.name} beta = {cfg.beta}, rho = {cfg.rho}, poor party {cfg.poor_party}"
