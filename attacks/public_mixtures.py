r"""The U-Net attacker's training data: Algorithm 1 applied to its own *public* images.

The attacker knows the mechanism (Algorithm 1 with the attacked release's ``alpha``, privacy
parameter ``tau`` and noise mode) but none of the release's randomness. It calibrates the
noise radius with Theorem 2 *on the public data*, ``r = m_f D`` (:mod:`common.calibration`),
and mixes its public images exactly as a party would
(:func:`common.mixup.singularized_mixup`): row ``i`` is

.. math::

    \tilde x_i = w_{i1} x_i + w_{i2} (x_{\pi(i)} + e_i), \qquad \lVert e_i \rVert = r,

(the noisy partner clipped to the valid range in ``"clamped"`` mode) and its training
target is the clean component ``x_i``. Nothing here touches a private sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from common.calibration import (
    MF_FORMULAS,
    DataStatistics,
    data_statistics,
    noise_multiplier,
    streamed_statistics,
)
from common.mixup import MixupRelease, singularized_mixup

from .threat_model import NOISE_MODES
from .unet_model import Bounds

__all__ = ["MixturePairs", "MixtureSampler", "public_mixtures"]

# Above this many bytes of float64 copy, the public data's Theorem 2 statistics are streamed.
_STATS_IN_MEMORY_BYTES = 2**30


def _mixup_clamp(valid_range, sample_shape: tuple[int, ...], *, device, dtype) -> Bounds:
    """``valid_range`` in the form :func:`singularized_mixup` takes: floats or ``(d,)`` vectors.

    A tensor bound of ``k`` values with ``k`` dividing ``d`` is expanded channel-major
    (``(C,)`` per-channel bounds of ``(C, H, W)`` samples).
    """
    d = math.prod(sample_shape)
    out = []
    for value in valid_range:
        t = torch.as_tensor(value, dtype=dtype).detach()
        if t.numel() == 1:
            out.append(float(t))
            continue
        if d % t.numel() != 0:
            raise ValueError(f"a bound of {t.numel()} values does not fit samples of shape {sample_shape}")
        k = t.numel()
        out.append(t.reshape(k, 1).expand(k, d // k).reshape(-1).to(device))
    if all(isinstance(v, float) for v in out):
        return out[0], out[1]
    lo, hi = (v if isinstance(v, Tensor) else torch.full((d,), v, dtype=dtype, device=device) for v in out)
    return lo, hi


def _check_noise_mode(noise_mode: str, valid_range) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    if noise_mode == "clamped" and valid_range is None:
        raise ValueError("noise_mode='clamped' needs valid_range=(lo, hi)")


@dataclass(frozen=True)
class MixturePairs:
    """Training pairs of the attacker, made from public data.

    Attributes
    ----------
    inputs : Tensor
        Mixed public inputs ``x~_i = w_i1 x_i + w_i2 (x_pi(i) + e_i)``, shaped like the
        public data (exactly :func:`~common.mixup.singularized_mixup`'s ``x``).
    targets : Tensor
        Clean component of every row: the public sample ``x_i`` itself.
    release : MixupRelease
        The full mixup output (partner, weights, radius, clamp).
    radius : float
        ``r = m_f D`` calibrated on the public data.
    statistics : DataStatistics
        Theorem 2 statistics of the public data.
    noise_multiplier : float
        ``m_f``.
    """

    inputs: Tensor
    targets: Tensor
    release: MixupRelease
    radius: float
    statistics: DataStatistics
    noise_multiplier: float


class MixtureSampler:
    """Draws Algorithm 1 mixtures of a public data set, calibrated once.

    The radius is Theorem 2's ``r = m_f D`` computed on the *public* data with the attacked
    release's ``tau`` and ``alpha`` (``formula = mf_formula``); ``noise_mode = "clamped"``
    clips the noisy partner to ``valid_range`` as the release does, ``"strict"`` does not.

    Parameters
    ----------
    public_x : Tensor
        Public samples ``(n, *sample_shape)`` (floating point, any device).
    tau, alpha : float
        Privacy parameter and weight bound of the attacked release.
    noise_mode : {"strict", "clamped"}
    valid_range : (lo, hi) or None
        Floats, per-channel or per-coordinate bounds; required in clamped mode.
    mf_formula : {"paper", "paper-code"}
        See :func:`common.calibration.noise_multiplier`.
    """

    def __init__(
        self,
        public_x: Tensor,
        *,
        tau: float,
        alpha: float,
        noise_mode: str,
        valid_range: Bounds | None,
        mf_formula: str = "paper",
    ) -> None:
        _check_noise_mode(noise_mode, valid_range)
        if mf_formula not in MF_FORMULAS:
            raise ValueError(f"mf_formula must be one of {MF_FORMULAS}, got {mf_formula!r}")
        if not torch.is_floating_point(public_x):
            raise TypeError(f"public_x must be floating point, got {public_x.dtype}")
        if public_x.shape[0] < 2:
            raise ValueError(f"public data needs at least 2 samples, got {public_x.shape[0]}")
        self.public_x = public_x
        self.tau = float(tau)
        self.alpha = float(alpha)
        self.noise_mode = noise_mode
        self.mf_formula = mf_formula
        self.sample_shape = tuple(public_x.shape[1:])
        self.statistics = _public_statistics(public_x)
        self.noise_multiplier = noise_multiplier(
            tau=tau, alpha=alpha, dim=self.statistics.dim, c=self.statistics.c, formula=mf_formula
        )
        self.radius = self.noise_multiplier * self.statistics.D
        self.clamp = (
            _mixup_clamp(valid_range, self.sample_shape, device=public_x.device, dtype=public_x.dtype)
            if noise_mode == "clamped"
            else None
        )
        # Labels play no part in the attack; one dummy class keeps Algorithm 1's signature.
        self._labels = torch.zeros(public_x.shape[0], dtype=torch.long, device=public_x.device)

    def sample(self, *, generator: torch.Generator) -> MixturePairs:
        """One mixture of every public sample.

        The draws are exactly those of ``singularized_mixup(public_x, ..., generator=generator)``:
        the partner permutation and the weights come first from ``generator`` and do not
        depend on ``tau``, so a given seed pairs the same samples, with the same weights and
        noise directions, at every ``tau`` (only the noise norm changes).
        """
        release = singularized_mixup(
            self.public_x,
            self._labels,
            radius=self.radius,
            alpha=self.alpha,
            generator=generator,
            clamp=self.clamp,
            num_classes=1,
        )
        return MixturePairs(
            inputs=release.x,
            targets=self.public_x,
            release=release,
            radius=self.radius,
            statistics=self.statistics,
            noise_multiplier=self.noise_multiplier,
        )


def _public_statistics(public_x: Tensor) -> DataStatistics:
    """Theorem 2 statistics; streamed when a float64 copy would exceed 1 GiB (same pairs)."""
    if public_x.numel() * 8 <= _STATS_IN_MEMORY_BYTES:
        return data_statistics(public_x)
    return streamed_statistics(public_x.shape[0], lambda idx: public_x[idx.to(public_x.device)])


def public_mixtures(
    public_x: Tensor,
    *,
    tau: float,
    alpha: float,
    noise_mode: str,
    valid_range: Bounds | None,
    generator: torch.Generator,
    mf_formula: str = "paper",
) -> MixturePairs:
    """Training pairs ``(mixed input, clean target)`` from public data, one per sample.

    Same mechanism and same ``tau`` as the attacked release: ``r = m_f D`` from Theorem 2 on
    the public data (:func:`~common.calibration.data_statistics` and
    :func:`~common.calibration.noise_multiplier`), then Algorithm 1 with
    ``clamp = valid_range`` in ``"clamped"`` mode and no clamp in ``"strict"`` mode. The
    target of row ``i`` is ``public_x[i]``, the clean component of ``x~_i``. See
    :class:`MixtureSampler` (which calibrates once for repeated draws).
    """
    sampler = MixtureSampler(
        public_x, tau=tau, alpha=alpha, noise_mode=noise_mode, valid_range=valid_range, mf_formula=mf_formula
    )
    return sampler.sample(generator=generator)
