"""Privacy accounting of DP-Mix: steps per epoch and the RDP epsilon of the steps taken.

Uses only Opacus' public RDP analysis (:func:`opacus.accountants.analysis.rdp.compute_rdp`
and :func:`~opacus.accountants.analysis.rdp.get_privacy_spent`, over the orders of
:attr:`opacus.accountants.RDPAccountant.DEFAULT_ALPHAS`): the same arithmetic as an
``RDPAccountant`` stepped ``steps`` times with one ``(noise_multiplier, sample_rate)``.
"""

from __future__ import annotations

import math

from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from ._checks import _check_int, _check_positive

__all__ = ["dp_epsilon", "steps_per_epoch"]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of Poisson-sampled steps of one epoch: ``ceil(n / batch_size)``.

    :func:`~common.dp_mix.train_local_dp_mix` takes exactly
    ``epochs * steps_per_epoch(n, batch_size)`` steps (empty batches included); the
    accountant must count the same number.

    Parameters
    ----------
    n : int
        The party's number of training rows, ``>= 1``.
    batch_size : int
        The expected batch size ``>= 1`` (the sampling rate is ``min(1, batch_size / n)``).
    """
    n = _check_int("n", n, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    return -(-n // batch_size)


def dp_epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps at ``delta``.

    With ``q = sample_rate``, ``sigma = noise_multiplier`` and ``T = steps``, the
    subsampled Gaussian mechanism has Renyi DP ``T * R_alpha(q, sigma)`` at every order
    ``alpha`` (Mironov, Talwar & Zhang 2019), converted to ``(epsilon, delta)``-DP by
    (Balle et al. 2020, Thm. 21)::

        epsilon = min_alpha  T R_alpha(q, sigma) - (log delta + log alpha) / (alpha - 1)
                             + log((alpha - 1) / alpha),

    the minimum over Opacus' default orders ``alpha in {1.1, ..., 10.9, 12, ..., 63}``.
    Bit for bit what ``RDPAccountant.get_epsilon(delta)`` returns after ``T`` calls of
    ``step(noise_multiplier=sigma, sample_rate=q)``.

    Record-level, for the records of the party that took the steps; valid only if the noise
    is truly random (seeded simulation noise is not: whoever knows the seed can remove it)
    and the batches were Poisson-sampled with ``sample_rate`` from a fixed data set.

    Parameters
    ----------
    noise_multiplier : float
        ``sigma >= 0``; 0 gives ``inf`` (no privacy) once a step is taken.
    sample_rate : float
        ``q`` in ``(0, 1]``.
    steps : int
        ``T >= 0``; 0 gives 0.
    delta : float
        In ``(0, 1)``.
    """
    sigma = _check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    q = _check_positive("sample_rate", sample_rate)
    if q > 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    steps = _check_int("steps", steps, 0)
    d = _check_positive("delta", delta)
    if d >= 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
    epsilon, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=d)
    return float(epsilon)
