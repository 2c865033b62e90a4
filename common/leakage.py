"""Measured leakage of a release: the empirical directional SNR of Theorem 2, the
re-identification rate, and Theorem 1's per-sample minimax bound.

Theorem 2 bounds, for every unit direction ``u``, the ratio of the energy of the signal
``S_i = w_i1 (x_i - mu)`` to that of the interference ``I_i = (x~_i - mu) - S_i`` (the
noisy, possibly clamped, partner term). Here both are *measured* on an actual release, so
the number holds whatever the noise mode; with clamping it can exceed ``tau`` by orders of
magnitude, which the bound (valid for the strict mechanism only) does not show.

Measuring needs the private data, so it runs where that data lives (the party), and only
the resulting scalars are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import numpy as np

from .calibration import theorem1_bound, theorem2_direction_bound
from .mixup import MixupRelease

__all__ = [
    "SnrReport",
    "Theorem1Report",
    "directional_snr",
    "instahide_reidentification_rate",
    "measure_release_snr",
    "nearest_in_sources_rate",
    "nearest_private_rows",
    "nearest_source_rate",
    "reidentification_rate",
    "theorem1_report",
    "top_principal_directions",
]


def top_principal_directions(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Unit vectors of the ``k`` leading principal directions of ``x``, shape ``(k, d)``."""
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    centred = flat - flat.mean(dim=0, keepdim=True)
    if min(centred.shape) <= 512:
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        return vh[:k]
    # Large party (e.g. 5,000 x 25,088 features): a full SVD costs O(n^2 d). Randomised
    # subspace iteration (6 power steps, 10 extra columns, fixed sketch seed) followed by a
    # Rayleigh-Ritz step finds the leading directions to high accuracy in O(n d k).
    gen = torch.Generator(device=centred.device).manual_seed(0)
    q = torch.randn((centred.shape[1], k + 10), generator=gen, dtype=torch.float64, device=centred.device)
    for _ in range(6):
        q, _ = torch.linalg.qr(centred.T @ (centred @ q))
    _, _, vh = torch.linalg.svd(centred @ q, full_matrices=False)
    v = q @ vh.T
    return v[:, :k].T.contiguous()


def directional_snr(
    private_x: torch.Tensor, release: MixupRelease, directions: torch.Tensor
) -> torch.Tensor:
    """``mean_i <S_i,u>^2 / mean_i <I_i,u>^2`` for every row ``u`` of ``directions``."""
    n = private_x.shape[0]
    flat = private_x.reshape(n, -1).to(torch.float64)
    mixed = release.x.reshape(n, -1).to(torch.float64)
    mu = flat.mean(dim=0, keepdim=True)
    w1 = release.weights[:, 0:1].to(torch.float64)
    signal = w1 * (flat - mu)
    interference = (mixed - mu) - signal
    u = directions.to(torch.float64)
    u = u / torch.linalg.vector_norm(u, dim=1, keepdim=True)
    s_energy = (signal @ u.T).pow(2).mean(dim=0)
    i_energy = (interference @ u.T).pow(2).mean(dim=0)
    return s_energy / i_energy


@dataclass(frozen=True)
class SnrReport:
    """Directional SNR of one release, measured and as bounded by Theorem 2.

    ``*_pc1`` refers to the leading principal direction of the party's data (where the
    signal is strongest), ``*_random`` to the mean over random unit directions.
    """

    snr_pc1: float
    bound_pc1: float
    snr_random: float
    bound_random: float
    num_random: int

    def as_metrics(self) -> dict[str, float]:
        return {
            "snr-pc1": self.snr_pc1,
            "snr-bound-pc1": self.bound_pc1,
            "snr-random": self.snr_random,
            "snr-bound-random": self.bound_random,
        }


def measure_release_snr(
    private_x: torch.Tensor,
    release: MixupRelease,
    *,
    alpha: float,
    num_random: int = 16,
    generator: torch.Generator | None = None,
) -> SnrReport:
    """Measure the directional SNR of ``release`` and put Theorem 2's bound beside it."""
    n = private_x.shape[0]
    flat = private_x.reshape(n, -1).to(torch.float64)
    centred = flat - flat.mean(dim=0, keepdim=True)
    dim = flat.shape[1]
    pc1 = top_principal_directions(private_x, 1)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    rand = torch.randn((num_random, dim), generator=gen, dtype=torch.float64).to(flat.device)
    rand = rand / torch.linalg.vector_norm(rand, dim=1, keepdim=True)
    snr_pc1 = float(directional_snr(private_x, release, pc1)[0])
    snr_rand = directional_snr(private_x, release, rand)

    def bound(u: torch.Tensor) -> float:
        second_moment = float((centred @ u).pow(2).mean())
        return theorem2_direction_bound(
            alpha=alpha, second_moment=second_moment, radius=release.radius, dim=dim
        )

    return SnrReport(
        snr_pc1=snr_pc1,
        bound_pc1=bound(pc1[0]),
        snr_random=float(snr_rand.mean()),
        bound_random=sum(bound(u) for u in rand) / num_random,
        num_random=num_random,
    )


def reidentification_rate(private_x: torch.Tensor, release: MixupRelease, *, batch_size: int = 1024) -> float:
    """Share of released rows whose nearest private row is one of the row's two sources.

    For every mixed row ``x~_i`` the nearest row of ``private_x`` (Euclidean) is found; the
    row counts as re-identified when that nearest row is ``x_i`` or its partner
    ``x_pi(i)``. Chance level is about ``2 / n``. An evaluation, not an attack: it needs the
    private rows, so it runs where they live (the party) and only the rate is reported.
    """
    return nearest_source_rate(private_x, release.x, release.partner, batch_size=batch_size)


def nearest_source_rate(
    private_x: torch.Tensor, mixed_x: torch.Tensor, partner: torch.Tensor, *, batch_size: int = 1024
) -> float:
    """:func:`reidentification_rate` on plain tensors: ``mixed_x[i]`` has sources ``i`` and
    ``partner[i]`` among the rows of ``private_x``."""
    n = private_x.shape[0]
    partner = torch.as_tensor(partner).reshape(-1).long()
    if partner.numel() != n:
        raise ValueError(f"partner has {partner.numel()} entries for {n} rows")
    return nearest_in_sources_rate(private_x, mixed_x, torch.stack([torch.arange(n), partner.cpu()], dim=1),
                                   batch_size=batch_size)


def nearest_in_sources_rate(
    private_x: torch.Tensor, mixed_x: torch.Tensor, sources: torch.Tensor, *, batch_size: int = 1024
) -> float:
    """Share of rows ``mixed_x[i]`` whose nearest row of ``private_x`` is one of
    ``sources[i]`` (an ``(n, s)`` index table: the private rows mixed into row ``i``).
    Chance level is about ``s / n``."""
    n = private_x.shape[0]
    if mixed_x.shape[0] != n:
        raise ValueError(f"release has {mixed_x.shape[0]} rows but there are {n} private rows")
    sources = torch.as_tensor(sources).long().cpu()
    if sources.ndim != 2 or sources.shape[0] != n:
        raise ValueError(f"sources must be an (n, s) index table for n = {n}, got {tuple(sources.shape)}")
    if n == 0:
        return float("nan")
    _, nearest = nearest_private_rows(private_x, mixed_x, batch_size=batch_size)
    return int((sources == nearest[:, None]).any(dim=1).sum()) / n


def instahide_reidentification_rate(private_x: torch.Tensor, release, *, batch_size: int = 1024) -> float:
    """Re-identification of an InstaHide release, on absolute values.

    The sign mask makes raw distances meaningless, and every attack on InstaHide starts by
    taking ``|x~|`` (Carlini et al., 2021). A row counts as re-identified when the nearest
    ``|x_j|`` to ``|x~_i|`` is one of its ``k_s`` private sources. Chance is about ``k_s / n``.
    An evaluation on the party's own data, like :func:`reidentification_rate`.
    """
    return nearest_in_sources_rate(private_x.abs(), release.x.abs(), release.private_index, batch_size=batch_size)


def nearest_private_rows(
    private_x: torch.Tensor, mixed_x: torch.Tensor, *, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row of ``mixed_x``: the Euclidean distance to the nearest row of
    ``private_x`` and that row's index (CPU float64 / int64 tensors)."""
    flat = private_x.reshape(private_x.shape[0], -1).to(torch.float64)
    mixed = mixed_x.reshape(mixed_x.shape[0], -1).to(device=flat.device, dtype=torch.float64)
    if mixed.shape[1] != flat.shape[1]:
        raise ValueError(f"released rows have {mixed.shape[1]} values, private rows {flat.shape[1]}")
    sq = flat.pow(2).sum(dim=1)
    distances, indices = [], []
    for start in range(0, mixed.shape[0], batch_size):
        block = mixed[start : start + batch_size]
        # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2, clipped at 0 against rounding.
        d2 = (block.pow(2).sum(dim=1, keepdim=True) - 2 * block @ flat.T + sq[None, :]).clamp_min_(0)
        best, idx = d2.min(dim=1)
        distances.append(best.sqrt().cpu())
        indices.append(idx.cpu())
    if not distances:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(distances), torch.cat(indices)


@dataclass(frozen=True)
class Theorem1Report:
    """Theorem 1's minimax lower bound ``r^2 T_i`` on ``E||x_i - x_hat_i||^2`` per sample.

    The bound holds for the strict mechanism (spherical noise of radius ``r``) against any
    estimator that knows the mixing weights; a clamped release carries no such bound. The
    relative figures divide by the party's mean squared row norm, so ``min_relative < 1``
    means the bound allows a reconstruction error smaller than the data's own energy for
    the weakest sample.
    """

    min: float
    median: float
    min_relative: float
    median_relative: float

    def as_metrics(self) -> dict[str, float]:
        return {
            "theorem1-mse-min": self.min,
            "theorem1-mse-median": self.median,
            "theorem1-relative-min": self.min_relative,
            "theorem1-relative-median": self.median_relative,
        }


def theorem1_report(private_x: torch.Tensor, release: MixupRelease) -> Theorem1Report:
    """Summarise Theorem 1's per-sample bound for ``release`` (see :class:`Theorem1Report`)."""
    bound = theorem1_bound(release.weights, release.partner, release.radius)
    energy = float(private_x.reshape(private_x.shape[0], -1).to(torch.float64).pow(2).sum(dim=1).mean())
    finite = bound[np.isfinite(bound)]
    low = float(finite.min()) if finite.size else float("inf")
    mid = float(np.median(bound))
    return Theorem1Report(min=low, median=mid, min_relative=low / energy, median_relative=mid / energy)
