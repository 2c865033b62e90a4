"""Argument checks shared by the DP-Mix modules: each names the argument in its message."""

from __future__ import annotations

import math

import numpy as np
import torch


def _check_int(name: str, value, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a finite ``float > 0`` (``>= 0`` with ``allow_zero``), else ``ValueError``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def _check_images(name: str, images) -> torch.Tensor:
    """``images`` if it is a floating-point ``(B, C, H, W)`` tensor, else ``ValueError``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, C, H, W), got {shape}")
    return images


def _check_finite(name: str, values: torch.Tensor) -> None:
    """Refuse NaN or infinite entries: they would defeat the clip (see :func:`train_local_dp_mix`)."""
    if (values.is_floating_point() or values.is_complex()) and not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"{name} holds NaN or infinite values: a non-finite record makes its per-sample gradient "
            "non-finite, which the clip cannot bound (min(1, C / NaN) is NaN), so the whole noisy update "
            "would reveal it; DP-SGD needs finite inputs"
        )


def _check_generator(generator) -> torch.Generator:
    """``generator`` if it is a :class:`torch.Generator`, else ``ValueError``."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _check_view_arguments(num_augmentations, num_mixups, alpha, max_shift) -> tuple[int, int, float, int]:
    """``(K, M, alpha, max_shift)`` checked: ``K >= 1``, ``M >= 0``, ``alpha > 0``, ``max_shift >= 0``."""
    k = _check_int("num_augmentations", num_augmentations, 1)
    m = _check_int("num_mixups", num_mixups, 0)
    a = _check_positive("alpha", alpha)
    s = _check_int("max_shift", max_shift, 0)
    return k, m, a, s
