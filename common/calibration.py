"""Noise calibration (Theorem 2) and the minimax reconstruction bound (Theorem 1).

Theorem 2. For i.i.d. centred data with ``V = E||X||^2``, ``D = E||X - X'||`` and
``c = D^2 / (2V)``, noise of radius ``r = m_f D`` with::

    m_f >= sqrt( d / (2c) * ( alpha^2 / (tau (1 - alpha)^2) - 1 ) )

keeps the directional SNR ``E<S_i,u>^2 / E<I_i,u>^2`` of every unit direction ``u`` below
``tau``. It is an average-case statement about the *strict* mechanism (no clamping).

Theorem 1. With ``W = D1 + D2 P_pi`` (``D1 = diag(w_i1)``, ``D2 = diag(w_i2)``), any
estimator of ``x_i`` from the release and the weights has worst-case mean squared error at
least ``r^2 T_i`` with ``T_i = sum_l (W^-1)_il^2 w_l2^2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "DataStatistics",
    "MF_FORMULAS",
    "data_statistics",
    "streamed_statistics",
    "noise_multiplier",
    "noise_radius",
    "theorem1_bound",
    "theorem2_direction_bound",
]


@dataclass(frozen=True)
class DataStatistics:
    """Second-order statistics of a party's data used by Theorem 2.

    Attributes
    ----------
    V : float
        ``mean ||x_i - mean(x)||^2`` (the theorem assumes centred data).
    D : float
        Mean pairwise L2 distance ``E||X - X'||``, estimated on random pairs ``i != j``.
    c : float
        ``D^2 / (2V)``; in ``(0, 1]`` for the population, by Jensen.
    dim : int
        Dimension ``d`` of the flattened inputs.
    num_pairs : int
        Number of random pairs behind the estimate of ``D``.
    """

    V: float
    D: float
    c: float
    dim: int
    num_pairs: int


MF_FORMULAS = ("paper", "paper-code")


def noise_multiplier(*, tau: float, alpha: float, dim: int, c: float, formula: str = "paper") -> float:
    """Return Theorem 2's ``m_f = sqrt(d / (2c) * (alpha^2 / (tau (1-alpha)^2) - 1))``.

    ``formula = "paper-code"`` returns what the authors' public code computes instead,
    ``sqrt(1 / (2c) * (...))``: the same expression without the ``sqrt(d)`` factor, hence a
    radius ``sqrt(d)`` times smaller (388x for 3x224x224 images) and no Theorem 2 guarantee.

    Returns 0 when the bracket is ``<= 0``: then even noiseless mixing already keeps the
    directional SNR below ``tau``.
    """
    if formula not in MF_FORMULAS:
        raise ValueError(f"formula must be one of {MF_FORMULAS}, got {formula!r}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c}")
    bracket = alpha**2 / (tau * (1 - alpha) ** 2) - 1
    if bracket <= 0:
        return 0.0
    scale = dim if formula == "paper" else 1
    return math.sqrt(scale / (2 * c) * bracket)


def data_statistics(
    x: torch.Tensor,
    *,
    num_pairs: int = 20_000,
    generator: torch.Generator | None = None,
) -> DataStatistics:
    """Estimate ``V``, ``D``, ``c`` and ``d`` of Theorem 2 from one party's data.

    ``V`` is exact on the centred rows. ``D`` averages ``||x_i - x_j||`` over
    ``min(num_pairs, n (n-1))`` pairs with ``i != j`` drawn uniformly (all ordered pairs when
    they are fewer); the distance is translation invariant, so centring does not matter.
    Computation is in float64.
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"statistics need at least 2 samples, got {n}")
    flat = x.reshape(n, -1).to(torch.float64)
    centred = flat - flat.mean(dim=0, keepdim=True)
    v = float((centred * centred).sum(dim=1).mean())
    i, j = _pairs(n, num_pairs, generator)
    i, j = i.to(flat.device), j.to(flat.device)
    dists = torch.cat([
        torch.linalg.vector_norm(flat[i[s : s + 4096]] - flat[j[s : s + 4096]], dim=1)
        for s in range(0, i.numel(), 4096)
    ])
    d_mean = float(dists.mean())
    if v <= 0 or d_mean <= 0:
        raise ValueError("data has zero variance: all samples are identical")
    return DataStatistics(V=v, D=d_mean, c=d_mean**2 / (2 * v), dim=flat.shape[1], num_pairs=int(i.numel()))


def streamed_statistics(
    num_rows: int,
    rows: Callable[[torch.Tensor], torch.Tensor],
    *,
    num_pairs: int = 20_000,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> DataStatistics:
    """:func:`data_statistics` for data too large to hold at once (images at 224x224).

    ``rows(idx)`` returns the flattened or unflattened rows ``idx`` (a CPU LongTensor),
    e.g. preprocessed on a GPU. ``V = mean ||x||^2 - ||mean x||^2`` is accumulated in
    float64 over one pass; ``D`` averages ``||x_i - x_j||`` over the same uniformly drawn
    pairs ``i != j`` as :func:`data_statistics` (all ordered pairs when there are at most
    ``num_pairs``), fetched ``batch_size`` pairs at a time.
    """
    n = num_rows
    if n < 2:
        raise ValueError(f"statistics need at least 2 samples, got {n}")
    total, total_sq, dim = None, 0.0, 0
    for start in range(0, n, batch_size):
        block = rows(torch.arange(start, min(start + batch_size, n)))
        flat = block.reshape(block.shape[0], -1).to(torch.float64)
        dim = flat.shape[1]
        part = flat.sum(dim=0)
        total = part if total is None else total + part
        total_sq += float((flat * flat).sum())
    mean = total / n
    v = total_sq / n - float(mean @ mean)
    i, j = _pairs(n, num_pairs, generator)
    dist_sum = 0.0
    for start in range(0, i.numel(), batch_size):
        a = rows(i[start : start + batch_size]).reshape(-1, dim).to(torch.float64)
        b = rows(j[start : start + batch_size]).reshape(-1, dim).to(torch.float64)
        dist_sum += float(torch.linalg.vector_norm(a - b, dim=1).sum())
    d_mean = dist_sum / i.numel()
    if v <= 0 or d_mean <= 0:
        raise ValueError("data has zero variance: all samples are identical")
    return DataStatistics(V=v, D=d_mean, c=d_mean**2 / (2 * v), dim=dim, num_pairs=int(i.numel()))


def _pairs(n: int, num_pairs: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs ``i != j``: all ordered pairs if at most ``num_pairs``, else uniform draws."""
    if n * (n - 1) <= num_pairs:
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        keep = i != j
        return i[keep], j[keep]
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    i = torch.randint(0, n, (num_pairs,), generator=gen)
    # j uniform among the n - 1 indices other than i.
    j = torch.randint(0, n - 1, (num_pairs,), generator=gen)
    return i, j + (j >= i).long()


def noise_radius(
    x: torch.Tensor,
    *,
    tau: float,
    alpha: float,
    generator: torch.Generator | None = None,
) -> float:
    """Return the calibrated radius ``r = m_f D`` for a party's data ``x`` (Theorem 2)."""
    stats = data_statistics(x, generator=generator)
    return noise_multiplier(tau=tau, alpha=alpha, dim=stats.dim, c=stats.c) * stats.D


def theorem2_direction_bound(
    *, alpha: float, second_moment: float, radius: float, dim: int
) -> float:
    """Theorem 2's bound on ``SNR(u)`` for one direction ``u``.

    ``alpha^2 E<X,u>^2 / ((1 - alpha)^2 (E<X,u>^2 + r^2 / d))`` where ``second_moment`` is
    ``E<X,u>^2`` on centred data.
    """
    denominator = (1 - alpha) ** 2 * (second_moment + radius**2 / dim)
    if denominator == 0:
        return math.inf
    return alpha**2 * second_moment / denominator


def theorem1_bound(
    weights: torch.Tensor | np.ndarray,
    partner: torch.Tensor | np.ndarray,
    radius: float,
) -> np.ndarray:
    """Return ``r^2 T_i`` of Theorem 1 for every sample, without forming ``W^-1``.

    ``W = D1 + D2 P_pi`` decomposes along the cycles of ``pi``. On a cycle
    ``k -> pi(k) -> ...`` of length ``L``, with ``rho_k = w_k2 / w_k1`` and
    ``P = prod_k rho_k``, solving ``W x = b`` backwards gives::

        (W^-1)_{k, k+j} = (-1)^j (prod_{m<j} rho_{k+m}) / (w_{k+j,1} (1 - (-1)^L P))

    hence ``T_k = (sum_{j=0}^{L-1} prod_{m=0}^{j} rho_{k+m}^2) / (1 - (-1)^L P)^2``.
    The sums are evaluated for all ``k`` at once in log space from prefix and suffix
    log-sum-exps, which involve only positive terms (no cancellation), in ``O(n)``.
    ``W`` is singular when ``(-1)^L P = 1``; those samples get ``inf``.
    """
    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
    pi = np.asarray(partner.detach().cpu() if isinstance(partner, torch.Tensor) else partner, dtype=np.int64)
    n = pi.shape[0]
    if w.shape != (n, 2):
        raise ValueError(f"weights must have shape ({n}, 2), got {w.shape}")
    if np.any(w <= 0):
        raise ValueError("Theorem 1 bound needs positive weights")
    if sorted(pi.tolist()) != list(range(n)):
        raise ValueError("partner must be a permutation of range(n)")
    log_rho2 = 2 * (np.log(w[:, 1]) - np.log(w[:, 0]))
    t = np.empty(n)
    seen = np.zeros(n, dtype=bool)
    for start in range(n):
        if seen[start]:
            continue
        cycle = [start]
        seen[start] = True
        nxt = pi[start]
        while nxt != start:
            cycle.append(nxt)
            seen[nxt] = True
            nxt = pi[nxt]
        idx = np.asarray(cycle)
        t[idx] = _cycle_t(log_rho2[idx])
    return radius**2 * t


def _cycle_t(log_rho2: np.ndarray) -> np.ndarray:
    """``T_k`` along one cycle, positions ``0..L-1`` in the order ``k -> pi(k)``."""
    length = log_rho2.shape[0]
    c = np.cumsum(log_rho2)  # c_t = sum_{m<=t} log rho_m^2
    total = c[-1]  # log P^2
    # A_k = exp(-c_{k-1}) [ sum_{t>=k} exp(c_t) + exp(total) sum_{t<k} exp(c_t) ], c_{-1} = 0
    suffix = np.logaddexp.accumulate(c[::-1])[::-1]
    prefix = np.logaddexp.accumulate(c)
    c_prev = np.concatenate([[0.0], c[:-1]])
    wrapped = np.concatenate([[-np.inf], total + prefix[:-1]])
    log_a = np.logaddexp(suffix, wrapped) - c_prev
    half = total / 2  # log P
    if length % 2 == 1:  # (-1)^L = -1: |1 + P|
        log_den = np.logaddexp(0.0, half)
    elif half == 0:
        return np.full(length, np.inf)
    elif half > 0:  # |1 - P| = P (1 - 1/P)
        log_den = half + np.log(-np.expm1(-half))
    else:
        log_den = np.log(-np.expm1(half))
    return np.exp(log_a - 2 * log_den)
