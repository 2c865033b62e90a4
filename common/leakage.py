"""Measured leakage of a release: the empirical directional SNR of Theorem 2.

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

from .calibration import theorem2_direction_bound
from .mixup import MixupRelease

__all__ = ["SnrReport", "directional_snr", "measure_release_snr", "top_principal_directions"]


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
