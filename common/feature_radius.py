"""From an image-space radius to a feature-space radius (section 5 of the paper).

Algorithm 1 is calibrated in image space (Theorem 2 on the party's preprocessed images), but
training runs on frozen-backbone features. The paper maps the radius by measuring how an
image-space perturbation moves the features::

    r_feat = mean_i || f(x_i + e_i) - f(x_i) ||,    e_i ~ Uniform(S(0, r_img))

over a sample of the party's own images. In the clamped mode the noisy image is clipped to
the valid (normalised) pixel range first, ``f(clip(x_i + e_i))``, as the authors' code does.

Privacy caveat: Theorem 2 speaks about image-space releases. A release mixed in feature
space with ``r_feat`` inherits no formal guarantee from this mapping; it matches the average
*size* of the displacement, not its distribution. The measured feature-space SNR of each
release is reported beside it for that reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["FeatureRadius", "map_radius_to_features", "spherical_noise"]


@dataclass(frozen=True)
class FeatureRadius:
    """Outcome of the radius mapping.

    Attributes
    ----------
    radius : float
        ``r_feat``, the mean feature displacement.
    std : float
        Standard deviation of the displacement over the sample.
    image_radius : float
        ``r_img`` the displacement was measured for.
    num_images : int
        Sample size.
    clamped : bool
        Whether noisy images were clipped to the valid range.
    """

    radius: float
    std: float
    image_radius: float
    num_images: int
    clamped: bool


def spherical_noise(
    shape: tuple[int, ...], *, radius: float, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """``shape[0]`` vectors uniform on the sphere of radius ``radius`` (over the trailing dims)."""
    g = torch.randn(shape, generator=generator, device=device)
    norms = torch.linalg.vector_norm(g.reshape(shape[0], -1), dim=1).clamp_min(torch.finfo(g.dtype).tiny)
    return g * (radius / norms).view(-1, *([1] * (len(shape) - 1)))


@torch.inference_mode()
def map_radius_to_features(
    images: torch.Tensor,
    *,
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    image_radius: float,
    generator: torch.Generator,
    clamp: tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_size: int = 64,
) -> FeatureRadius:
    """Measure ``r_feat`` for preprocessed ``images`` ``(n, C, H, W)``.

    Parameters
    ----------
    images : torch.Tensor
        Preprocessed images (normalised, backbone size) on the device ``feature_fn`` uses.
    feature_fn : callable
        The frozen backbone: ``(B, C, H, W) -> (B, F)`` or any shape with ``B`` rows.
    image_radius : float
        ``r_img = m_f D`` from Theorem 2 in image space.
    generator : torch.Generator
        On the images' device.
    clamp : (lo, hi), optional
        Tensors broadcastable to ``(1, C, H, W)``: the clamped mode. ``None``: strict.
    """
    n = images.shape[0]
    if n < 1:
        raise ValueError("need at least one image to measure the displacement")
    if not math.isfinite(image_radius) or image_radius < 0:
        raise ValueError(f"image_radius must be finite and >= 0, got {image_radius}")
    displacements = []
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size].float()
        noisy = x + spherical_noise(tuple(x.shape), radius=image_radius, generator=generator, device=x.device)
        if clamp is not None:
            noisy = torch.maximum(torch.minimum(noisy, clamp[1]), clamp[0])
        clean = feature_fn(x).float().reshape(x.shape[0], -1)
        moved = feature_fn(noisy).float().reshape(x.shape[0], -1)
        displacements.append(torch.linalg.vector_norm(moved - clean, dim=1).double().cpu())
    d = torch.cat(displacements)
    return FeatureRadius(
        radius=float(d.mean()),
        std=float(d.std()) if n > 1 else 0.0,
        image_radius=float(image_radius),
        num_images=n,
        clamped=clamp is not None,
    )
