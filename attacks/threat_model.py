"""The threat model as data: what the server received, and what the attacker is granted.

Design rule
-----------
An attack sees *only* two objects:

* :class:`ObservedRelease` - exactly what the server received from one party (the mixed
  inputs and the soft labels), and
* :class:`AttackerKnowledge` - the side information the threat model grants on top of
  that (mixing weights, partner graph, noise radius, noise mode, valid input range), each
  field ``None`` when not granted.

Neither object has a field through which private inputs could reach an attack, and the
``reconstruct`` of :class:`Attack` (the one attack interface, :mod:`attacks.base`,
re-exported here) takes nothing else. Comparing a
:class:`Reconstruction` with the private originals is a separate *evaluation* step
(:mod:`attacks.evaluation`), run by the experimenter, never by the attack.

:func:`observe` builds the observed release from any release object with ``x`` and ``y``
tensors (:class:`common.mixup.MixupRelease`, :class:`common.instahide.InstaHideRelease`, see
:class:`ReleaseLike`) and copies nothing else. :func:`grant_knowledge` builds the side
information for singularized mixup; :func:`attacks.instahide.grant_instahide_knowledge` is
its InstaHide counterpart. All tensors are detached CPU copies, so an attack can neither
mutate the release nor reach a device buffer shared with the party.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from common.mixup import MixupRelease

from .base import Attack

__all__ = [
    "NOISE_MODES",
    "Attack",
    "AttackerKnowledge",
    "ObservedRelease",
    "Reconstruction",
    "ReleaseLike",
    "grant_knowledge",
    "observe",
]

NOISE_MODES = ("strict", "clamped")

ValidRange = tuple[float, float] | tuple[torch.Tensor, torch.Tensor]


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True)


@dataclass(frozen=True)
class ObservedRelease:
    """Exactly what the server received from one party.

    Attributes
    ----------
    x : torch.Tensor
        Mixed inputs ``x~``, shape ``(n, *sample_shape)``.
    y : torch.Tensor
        Soft labels ``y~``, shape ``(n, C)``.
    sample_shape : tuple of int
        Shape of one sample, e.g. ``(1, 8, 8)`` for digits images, ``(3, 224, 224)`` for
        preprocessed images, ``(64,)`` for flat vectors or features.
    """

    x: torch.Tensor
    y: torch.Tensor
    sample_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.sample_shape)
        object.__setattr__(self, "sample_shape", shape)
        n = self.x.shape[0]
        row = self.x[0].numel() if n else math.prod(self.x.shape[1:])
        if math.prod(shape) != row:
            raise ValueError(f"sample_shape {shape} has {math.prod(shape)} values but rows of x have {row}")
        if tuple(self.x.shape[1:]) != shape:
            object.__setattr__(self, "x", self.x.reshape(n, *shape))
        if self.y.shape[0] != n:
            raise ValueError(f"x has {n} rows but y has {self.y.shape[0]}")

    @property
    def n(self) -> int:
        """Number of released rows."""
        return int(self.x.shape[0])

    def images(self) -> torch.Tensor:
        """Mixed inputs reshaped to ``(n, *sample_shape)``."""
        return self.x.reshape(self.n, *self.sample_shape)


@dataclass(frozen=True)
class AttackerKnowledge:
    """Side information granted by the threat model; ``None`` means *not granted*.

    Attributes
    ----------
    weights : torch.Tensor or None
        Mixing weights, shape ``(n, 2)``; column 0 weighs the row's own sample, column 1
        its noisy partner.
    partner : torch.Tensor or None
        Partner permutation ``pi``, LongTensor of shape ``(n,)``.
    radius : float or None
        Norm ``r`` of every noise vector.
    noise_mode : str
        ``"strict"`` (noise added unclipped, the mechanism of Theorems 1-2) or
        ``"clamped"`` (noisy partner clipped to the valid range, the authors' code).
    valid_range : (lo, hi) or None
        Range of a valid input: floats, or per-coordinate vectors of length ``d`` (one
        range per channel for normalised images, flattened channel-major).
    description : str
        Human-readable statement of the threat model, for reports.
    """

    weights: torch.Tensor | None
    partner: torch.Tensor | None
    radius: float | None
    noise_mode: str
    valid_range: ValidRange | None
    description: str

    def __post_init__(self) -> None:
        if self.noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}")
        if self.weights is not None and (self.weights.ndim != 2 or self.weights.shape[1] != 2):
            raise ValueError(f"weights must have shape (n, 2), got {tuple(self.weights.shape)}")
        if self.partner is not None and self.partner.ndim != 1:
            raise ValueError(f"partner must have shape (n,), got {tuple(self.partner.shape)}")

    def require(self, *names: str, attack: str = "this attack") -> None:
        """Raise ``ValueError`` naming every field in ``names`` that was not granted."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"{attack} needs attacker knowledge of {', '.join(missing)}, which the threat model "
                f"did not grant (AttackerKnowledge.{missing[0]} is None)"
            )


@dataclass(frozen=True)
class Reconstruction:
    """An attack's output.

    Attributes
    ----------
    x : torch.Tensor
        Shape ``(n, *sample_shape)``: row ``i`` estimates the private sample that is row
        ``i``'s clean component (row ``i`` <-> private sample ``i``).
    method : str
        Name of the attack that produced it.
    details : dict
        Attack-specific diagnostics (final loss, hyper-parameters, ...).
    """

    x: torch.Tensor
    method: str
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ReleaseLike(Protocol):
    """Any party-side release: :class:`common.mixup.MixupRelease`,
    :class:`common.instahide.InstaHideRelease`, ... Only ``x`` and ``y`` are ever read by
    :func:`observe`; whatever else the release carries (partner graph, weights, noise
    radius, sign masks, public indices) stays with the party."""

    x: torch.Tensor
    y: torch.Tensor


def observe(release: ReleaseLike, *, sample_shape) -> ObservedRelease:
    """What the server receives from a party that published ``release``.

    Only ``release.x`` and ``release.y`` are copied (detached, CPU). Everything else the
    release holds stays with the party unless a grant function hands it out explicitly:
    for singularized mixup (:class:`common.mixup.MixupRelease`) the partner graph, weights
    and radius (:func:`grant_knowledge`); for InstaHide
    (:class:`common.instahide.InstaHideRelease`) the mixing graph, weights and public-pool
    mean (:func:`attacks.instahide.grant_instahide_knowledge`), never the sign masks or
    which public images were used.

    Parameters
    ----------
    release : ReleaseLike
        Any object with tensors ``x`` (``(n, ...)``) and ``y`` (``(n, C)``).
    sample_shape : tuple of int
        Shape of one sample; must hold as many values as one row of ``release.x``.
    """
    n = release.x.shape[0]
    shape = tuple(int(s) for s in sample_shape)
    if math.prod(shape) * n != release.x.numel():
        raise ValueError(
            f"sample_shape {shape} has {math.prod(shape)} values but rows of the release have "
            f"{release.x[0].numel() if n else 0}"
        )
    x = _cpu_copy(release.x).reshape(n, *shape)
    return ObservedRelease(x=x, y=_cpu_copy(release.y), sample_shape=shape)


def _copy_range(valid_range) -> ValidRange | None:
    if valid_range is None:
        return None
    lo, hi = valid_range
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        lo_t = _cpu_copy(torch.as_tensor(lo)).reshape(-1)
        hi_t = _cpu_copy(torch.as_tensor(hi)).reshape(-1)
        if lo_t.numel() != hi_t.numel():
            raise ValueError("valid_range bounds must have the same number of values")
        if not bool((lo_t < hi_t).all()):
            raise ValueError("valid_range must satisfy lo < hi in every coordinate")
        return lo_t, hi_t
    if not float(lo) < float(hi):
        raise ValueError(f"valid_range must be (lo, hi) with lo < hi, got {valid_range}")
    return float(lo), float(hi)


def grant_knowledge(
    release: MixupRelease,
    *,
    noise_mode: str,
    valid_range,
    weights: bool = True,
    partner: bool = True,
    radius: bool = True,
) -> AttackerKnowledge:
    """Side information a threat model grants about ``release``.

    The default (everything granted) is the paper's conservative threat model of sec. 5.1:
    the attacker knows the linear mixing matrix (weights and partner graph) and the noise
    radius, but not the noise vectors themselves.

    Parameters
    ----------
    release : MixupRelease
        The party's release (holds no private inputs).
    noise_mode : {"strict", "clamped"}
        How the noise was applied; checked against ``release.clamp``.
    valid_range : (lo, hi) or None
        Range of valid inputs known to the attacker (floats or per-coordinate vectors).
    weights, partner, radius : bool
        Whether each piece of side information is granted.
    """
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    if (noise_mode == "clamped") != (release.clamp is not None):
        raise ValueError(
            f"noise_mode={noise_mode!r} contradicts the release (clamp={'set' if release.clamp is not None else 'None'})"
        )
    granted = [name for name, flag in (("mixing weights", weights), ("partner graph", partner), ("noise radius", radius)) if flag]
    if weights and partner:
        label = "conservative: mixing weights and partner graph known (paper, sec. 5.1)"
    elif granted:
        label = "partial side information"
    else:
        label = "release only: no side information"
    description = f"{label}; granted: {', '.join(granted) or 'nothing'}; noise mode {noise_mode}"
    return AttackerKnowledge(
        weights=_cpu_copy(release.weights) if weights else None,
        partner=_cpu_copy(release.partner).long() if partner else None,
        radius=float(release.radius) if radius else None,
        noise_mode=noise_mode,
        valid_range=_copy_range(valid_range),
        description=description,
    )
