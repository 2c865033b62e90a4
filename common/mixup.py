"""Algorithm 1 of the singularized-mixup paper (section 3.2), vectorised.

Each private sample ``x_i`` is mixed with exactly one other private sample of the same
party, its *partner* ``x_pi(i)``, and only the partner is perturbed::

    x~_i = w_i1 x_i + w_i2 (x_pi(i) + e_i),      e_i ~ Uniform(S(0, r))
    y~_i = w_i1 y_i + w_i2 y_pi(i)

with ``pi`` a permutation without fixed point, ``||w_i||_1 = 1`` and ``||w_i||_inf <= alpha``.

Privacy caveats
---------------
* The guarantees of the paper (Theorems 1-2) hold for the *strict* mechanism above. With
  ``clamp=(lo, hi)`` the noisy partner ``x_pi(i) + e_i`` is clipped to the valid input range
  before mixing, as the authors' public code does; clipping destroys the isotropy of the
  noise that Theorem 2 relies on, so a clamped release carries no Theorem 2 guarantee
  (measure it with :mod:`common.leakage` instead).
* A release is meant to be produced once per party. Drawing fresh mixtures of the same
  private data again (for instance every epoch) exposes every private sample again.
* ``generator=None`` draws every random bit of the release (partner permutation, weights,
  noise) from the operating system's CSPRNG (:class:`common.secure_random.SystemRandom`):
  unpredictable, and not reproducible. A seeded PyTorch generator (Mersenne Twister on CPU,
  Philox on CUDA) is predictable from its seed and output; it is for simulation and tests
  only.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch

from .secure_random import SystemRandom, fill_normal_, randperm, uniform

__all__ = [
    "MixupRelease",
    "sample_derangement",
    "sample_mixing_weights",
    "secure_generator",
    "singularized_mixup",
]

# Temporaries of one chunk stay below this many bytes and below a tenth of the data, so
# that input + output + one chunk stays under 2.2x the data's memory.
_CHUNK_BUDGET_BYTES = 256 * 2**20


@dataclass(frozen=True)
class MixupRelease:
    """What one application of Algorithm 1 produces.

    Attributes
    ----------
    x : torch.Tensor
        Mixed inputs ``x~``, same shape and dtype as the private inputs.
    y : torch.Tensor
        Soft labels ``y~``, shape ``(n, C)``; every row lies on the probability simplex.
    partner : torch.Tensor
        LongTensor ``pi`` of shape ``(n,)``: row ``i`` was mixed with private row ``pi[i]``;
        ``pi`` is a permutation with ``pi[i] != i`` for all ``i``.
    weights : torch.Tensor
        Mixing weights ``w``, shape ``(n, 2)``: rows sum to 1, ``max <= alpha``.
        Column 0 weighs the sample itself, column 1 its noisy partner.
    radius : float
        Norm ``r`` of every noise vector ``e_i``.
    clamp : tuple | None
        Range the noisy partner was clipped to (floats, or per-coordinate vectors),
        ``None`` in strict mode.
    """

    x: torch.Tensor
    y: torch.Tensor
    partner: torch.Tensor
    weights: torch.Tensor
    radius: float
    clamp: tuple[float, float] | tuple[torch.Tensor, torch.Tensor] | None


def secure_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """Return a PyTorch generator seeded with 63 bits from :func:`secrets.randbits`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63))
    return generator


def sample_derangement(
    n: int, *, generator: torch.Generator | SystemRandom, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Draw ``pi`` uniformly among the permutations of ``n`` items without fixed point.

    Rejection sampling: draw a uniform permutation and keep it if it has no fixed point.
    The acceptance probability tends to ``1/e``, so about 2.7 draws are needed on average,
    and the accepted permutation is uniform over derangements (conditioning a uniform law
    on an event keeps it uniform on that event).
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 samples, got n={n}")
    arange = torch.arange(n, device=device)
    while True:
        perm = randperm(generator, n, device=device)
        if not bool((perm == arange).any()):
            return perm


def sample_mixing_weights(
    n: int,
    *,
    alpha: float,
    generator: torch.Generator | SystemRandom,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw ``n`` weight pairs as Algorithm 1 (line 3) words it.

    ``u ~ Uniform([0, 1]^2)``, ``w = u / ||u||_1``, and the pair is rejected unless
    ``||w||_inf <= alpha``. The accepted first weight has the density of ``u1 / (u1 + u2)``
    restricted to ``[1 - alpha, alpha]``; the acceptance probability is
    ``(2 alpha - 1) / alpha`` (0.571 at ``alpha = 0.7``), so ``alpha`` must exceed 1/2.
    Rejected pairs are redrawn in vectorised batches until ``n`` are accepted.
    """
    _check_alpha(alpha)
    accept_rate = (2 * alpha - 1) / alpha
    accepted: list[torch.Tensor] = []
    missing = n
    while missing > 0:
        draw = max(16, math.ceil(1.2 * missing / accept_rate))
        u = uniform(generator, (draw, 2), device=device)
        w = u / u.sum(dim=1, keepdim=True)
        w = w[w.max(dim=1).values <= alpha][:missing]
        accepted.append(w)
        missing -= w.shape[0]
    return torch.cat(accepted).to(dtype)


def singularized_mixup(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    radius: float,
    alpha: float,
    generator: torch.Generator | SystemRandom | None = None,
    clamp: tuple[float, float] | tuple[torch.Tensor, torch.Tensor] | None = None,
    num_classes: int | None = None,
) -> MixupRelease:
    """Apply Algorithm 1 once to one party's private data.

    Parameters
    ----------
    x : torch.Tensor
        Private inputs, shape ``(n, ...)`` with ``n >= 2``, floating point; any device.
        The noise lives in the flattened input space of dimension ``d = prod(x.shape[1:])``.
    y : torch.Tensor
        Labels: either class indices of shape ``(n,)`` (then ``num_classes`` is required,
        because a party under label skew may lack the highest classes) or soft labels of
        shape ``(n, C)`` whose rows lie on the simplex.
    radius : float
        Norm ``r >= 0`` of the noise: every ``e_i`` is uniform on the sphere of radius ``r``,
        drawn as ``r g / ||g||`` with ``g ~ N(0, I_d)``.
    alpha : float
        Bound on the largest mixing weight, ``1/2 < alpha < 1``.
    generator : torch.Generator or SystemRandom, optional
        Source of randomness: a PyTorch generator on ``x``'s device (seeded: simulation and
        tests only), or ``None`` / :class:`~common.secure_random.SystemRandom` for the
        operating system's CSPRNG (deployment; not reproducible).
    clamp : (lo, hi), optional
        Clip ``x_pi(i) + e_i`` to ``[lo, hi]`` before mixing (the authors' code). ``lo`` and
        ``hi`` are floats, or vectors of length ``d`` giving every flattened coordinate its
        own range (normalised images: one range per channel). ``None`` is the strict
        mechanism that Theorems 1-2 analyse.
    num_classes : int, optional
        Number of classes when ``y`` holds class indices.

    Returns
    -------
    MixupRelease
        Mixed inputs, soft labels, partner permutation and weights.

    Notes
    -----
    Work is chunked over rows and done in place in the output buffer, so peak memory is
    the input, the output and one chunk of at most ``min(256 MiB, data / 10)``: below
    2.2x the data for e.g. 50,000 x 25,088 float32. CUDA inputs are processed on CUDA.
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"singularized mixup needs at least 2 samples per party, got {n}")
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius}")
    _check_alpha(alpha)
    clamp = _check_clamp(clamp, dim=int(x[0].numel()), device=x.device, dtype=x.dtype)
    soft = _as_soft_labels(y, n=n, num_classes=num_classes, device=x.device)

    device = x.device
    if generator is None:
        generator = SystemRandom()
    elif isinstance(generator, SystemRandom):
        pass
    elif generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {device}: "
            "create the generator on the data's device"
        )

    partner = sample_derangement(n, generator=generator, device=device)
    weights = sample_mixing_weights(
        n, alpha=alpha, generator=generator, device=device, dtype=x.dtype
    )

    flat_x = x.reshape(n, -1)
    dim = flat_x.shape[1]
    out = torch.empty_like(flat_x)
    row_bytes = dim * flat_x.element_size()
    chunk = max(1, min(_CHUNK_BUDGET_BYTES // max(row_bytes, 1), math.ceil(n / 10)))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = out[start:stop]
        # e_i = r g / ||g||, written straight into the output rows.
        fill_normal_(generator, block)
        norms = torch.linalg.vector_norm(block, dim=1, keepdim=True)
        block.mul_(radius / norms.clamp_min(torch.finfo(block.dtype).tiny))
        block.add_(flat_x.index_select(0, partner[start:stop]))
        if clamp is not None:
            block.clamp_(clamp[0], clamp[1])
        block.mul_(weights[start:stop, 1:2])
        block.addcmul_(flat_x[start:stop], weights[start:stop, 0:1])

    mixed_y = weights[:, 0:1].to(soft.dtype) * soft + weights[:, 1:2].to(soft.dtype) * soft[partner]
    return MixupRelease(
        x=out.reshape(x.shape),
        y=mixed_y,
        partner=partner,
        weights=weights,
        radius=float(radius),
        clamp=clamp,
    )


def _check_clamp(clamp, *, dim: int, device: torch.device, dtype: torch.dtype):
    """Validate ``(lo, hi)``: floats stay floats, vectors become ``(d,)`` tensors on ``device``."""
    if clamp is None:
        return None
    lo, hi = clamp
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        lo_t = torch.as_tensor(lo, dtype=dtype, device=device).reshape(-1)
        hi_t = torch.as_tensor(hi, dtype=dtype, device=device).reshape(-1)
        if lo_t.numel() != dim or hi_t.numel() != dim:
            raise ValueError(f"per-coordinate clamp needs {dim} values, got {lo_t.numel()} and {hi_t.numel()}")
        if not bool((lo_t < hi_t).all()):
            raise ValueError("clamp must satisfy lo < hi in every coordinate")
        return lo_t, hi_t
    if not float(lo) < float(hi):
        raise ValueError(f"clamp must be (lo, hi) with lo < hi, got {clamp}")
    return float(lo), float(hi)


def _check_alpha(alpha: float) -> None:
    if not 0.5 < alpha < 1.0:
        raise ValueError(
            f"alpha must satisfy 1/2 < alpha < 1 (||w||_inf <= alpha with ||w||_1 = 1 "
            f"needs alpha >= 1/2, and Theorem 2 divides by 1 - alpha), got {alpha}"
        )


def _as_soft_labels(
    y: torch.Tensor, *, n: int, num_classes: int | None, device: torch.device
) -> torch.Tensor:
    if y.shape[0] != n:
        raise ValueError(f"x has {n} rows but y has {y.shape[0]}")
    y = y.to(device)
    if y.ndim == 1:
        if torch.is_floating_point(y):
            raise TypeError("1-D labels must be integer class indices")
        if num_classes is None:
            raise ValueError(
                "num_classes is required with integer labels (a party may lack some classes)"
            )
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
        return torch.nn.functional.one_hot(y.long(), num_classes).float()
    if y.ndim != 2 or not torch.is_floating_point(y):
        raise ValueError(f"y must be (n,) class indices or (n, C) soft labels, got {tuple(y.shape)}")
    if bool((y < 0).any()) or not torch.allclose(y.sum(dim=1), torch.ones(n, device=device, dtype=y.dtype), atol=1e-4):
        raise ValueError("soft labels must be non-negative rows summing to 1")
    return y
