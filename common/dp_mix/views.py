"""DP-Mix views of one private sample: self-augmentations, self-mixups, diffusion mixups.

Every view of sample ``i`` is a function of ``x_i`` alone (and, for DP-Mix_diff, of public
synthetic images), so a per-sample gradient over the views of ``i`` depends on one record
and the DP-SGD sensitivity stays one clipped gradient. All randomness (shifts, flips, mixup
pairs, mixup weights) comes from a caller's :class:`torch.Generator`: the views need not be
secret, since the clip bounds a record's contribution whatever its views are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ._checks import _check_generator, _check_images, _check_int, _check_view_arguments

__all__ = ["diffusion_mixup_views", "self_augmentations", "self_mixup_views"]

_SEED_BOUND = 2**62


# --------------------------------------------------------------------------- random helpers


def _randint(high: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform integers on ``{0, ..., high - 1}``, on the generator's device."""
    return torch.randint(0, high, shape, generator=generator, device=generator.device)


def _draw_seed(generator: torch.Generator) -> int:
    """A seed uniform on ``{0, ..., 2^62 - 1}`` drawn from ``generator`` (one draw)."""
    return int(_randint(_SEED_BOUND, (1,), generator))


def _beta(alpha: float, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Beta(alpha, alpha) draws (float64, CPU) driven by ``generator``.

    PyTorch's Beta and Gamma samplers take no generator; NumPy's PCG64 is seeded with 62
    bits drawn from ``generator`` instead, so the draws stay reproducible from it.
    ``E[lam] = 1/2`` and ``Var[lam] = 1 / (4 (2 alpha + 1))``.
    """
    seed = _draw_seed(generator)
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=shape))


def _distinct_pairs(batch: int, views: int, count: int, generator: torch.Generator):
    """``(first, second)`` of shape ``(batch, count)``: uniform ordered pairs of distinct view
    indices, or ``(0, 0)`` when there is a single view.

    ``first ~ U{0..V-1}`` and ``second = (first + 1 + U{0..V-2}) mod V``, so every ordered pair
    ``p != q`` has probability ``1 / (V (V - 1))``.
    """
    first = _randint(views, (batch, count), generator)
    if views == 1:
        return first, first.clone()
    second = (first + 1 + _randint(views - 1, (batch, count), generator)) % views
    return first, second


# --------------------------------------------------------------------------- views


def self_augmentations(
    images: torch.Tensor, *, num_views: int, generator: torch.Generator, max_shift: int = 2, flip: bool = False
) -> torch.Tensor:
    """``K`` random self-augmentations of every image: ``(B, C, H, W) -> (B, K, C, H, W)``.

    View ``v`` of image ``x`` is ``x`` translated by ``(dy, dx)``, each uniform on
    ``{-s, ..., s}`` with ``s = max_shift``::

        view[c, i, j] = x[c, i + dy, j + dx]   (0 where that falls outside the image),

    i.e. zero padding by ``s`` then a random ``H x W`` crop. With ``flip`` each view is also
    mirrored left-right (``view[..., j] -> view[..., W - 1 - j]``) with probability 1/2 (on
    for natural images, off for digits).

    Parameters
    ----------
    images : torch.Tensor
        Floating-point ``(B, C, H, W)``.
    num_views : int
        ``K >= 1``.
    generator : torch.Generator
        Source of the shifts and flips (drawn in that order).
    max_shift : int
        Largest translation ``s`` in pixels (``>= 0``; 0 gives copies, possibly flipped).
    flip : bool
        Random horizontal flips.

    Returns
    -------
    torch.Tensor
        ``(B, K, C, H, W)``, contiguous, the images' dtype and device.
    """
    images = _check_images("images", images)
    k = _check_int("num_views", num_views, 1)
    s = _check_int("max_shift", max_shift, 0)
    generator = _check_generator(generator)
    b, c, h, w = images.shape
    device = images.device
    offsets = _randint(2 * s + 1, (2, b, k), generator).to(device)  # crop corner in the padded image
    flips = (torch.rand((b, k), generator=generator, device=generator.device) < 0.5).to(device) if flip else None
    padded = F.pad(images, (s, s, s, s)).permute(0, 2, 3, 1)  # (B, H + 2s, W + 2s, C)
    rows = offsets[0][..., None] + torch.arange(h, device=device)  # (B, K, H)
    cols = offsets[1][..., None] + torch.arange(w, device=device)  # (B, K, W)
    batch = torch.arange(b, device=device)[:, None, None, None]
    views = padded[batch, rows[:, :, :, None], cols[:, :, None, :]]  # (B, K, H, W, C)
    views = views.permute(0, 1, 4, 2, 3)
    if flips is not None:
        views = torch.where(flips[..., None, None, None], views.flip(-1), views)
    return views.contiguous()


def self_mixup_views(
    images: torch.Tensor,
    *,
    num_augmentations: int,
    num_mixups: int,
    alpha: float,
    generator: torch.Generator,
    max_shift: int = 2,
    flip: bool = False,
) -> torch.Tensor:
    """DP-Mix_self views: ``(B, C, H, W) -> (B, K + M, C, H, W)``.

    The ``K`` self-augmentations ``a_i1 .. a_iK`` of :func:`self_augmentations`, followed by
    ``M`` mixups of the *same* image's views::

        m_ij = lam_ij a_ip + (1 - lam_ij) a_iq,   lam_ij ~ Beta(alpha, alpha),   p != q,

    ``(p, q)`` uniform among ordered distinct pairs (with ``K = 1`` the pair is the one view
    with itself). No information crosses samples, so the labels stay the sample's own and a
    per-sample gradient over these views depends on one record.

    Parameters
    ----------
    images : torch.Tensor
        Floating-point ``(B, C, H, W)``.
    num_augmentations, num_mixups : int
        ``K >= 1`` and ``M >= 0``.
    alpha : float
        ``> 0``, the Beta parameter of the mixup weights.
    generator : torch.Generator
        Source of the views, then the pairs, then (one 62-bit seed) the weights.
    max_shift, flip
        As :func:`self_augmentations`.
    """
    k, m, a, s = _check_view_arguments(num_augmentations, num_mixups, alpha, max_shift)
    views = self_augmentations(images, num_views=k, generator=generator, max_shift=s, flip=flip)
    if m == 0:
        return views
    b = views.shape[0]
    first, second = _distinct_pairs(b, k, m, generator)
    lam = _beta(a, (b, m), generator).to(device=views.device, dtype=views.dtype)[..., None, None, None]
    rows = torch.arange(b, device=views.device)[:, None]
    mixed = lam * views[rows, first.to(views.device)] + (1 - lam) * views[rows, second.to(views.device)]
    return torch.cat([views, mixed], dim=1)


def diffusion_mixup_views(
    images: torch.Tensor,
    labels_onehot: torch.Tensor,
    synthetic_images: torch.Tensor,
    synthetic_labels_onehot: torch.Tensor,
    *,
    num_augmentations: int,
    num_mixups: int,
    alpha: float,
    generator: torch.Generator,
    max_shift: int = 2,
    flip: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DP-Mix_diff views and soft labels.

    The ``K`` self-augmentations ``a_ip`` of each image (label ``y_i``), then ``M`` mixups of a
    uniformly drawn self-augmentation with a uniformly drawn synthetic image ``s_j`` (used as
    generated, not augmented)::

        m = lam a_ip + (1 - lam) s_j,   label lam y_i + (1 - lam) y_j,   lam ~ Beta(alpha, alpha).

    The synthetic images must be public (generated without private data); the only private
    input of a view is its own sample.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, C, H, W)`` private images.
    labels_onehot : torch.Tensor
        ``(B, L)`` their one-hot (or soft) labels.
    synthetic_images : torch.Tensor
        ``(S, C, H, W)`` synthetic images, ``S >= 1``.
    synthetic_labels_onehot : torch.Tensor
        ``(S, L)`` their labels.
    num_augmentations, num_mixups, alpha, generator, max_shift, flip
        As :func:`self_mixup_views`; ``generator`` draws the views, then the picked
        self-augmentation, the synthetic partner and (one 62-bit seed) the weights.

    Returns
    -------
    views : torch.Tensor
        ``(B, K + M, C, H, W)``.
    labels : torch.Tensor
        ``(B, K + M, L)``; each row is a convex combination of label rows (sums to 1 when
        the inputs' rows do).
    """
    k, m, a, s = _check_view_arguments(num_augmentations, num_mixups, alpha, max_shift)
    images = _check_images("images", images)
    synthetic_images = _check_images("synthetic_images", synthetic_images)
    b = images.shape[0]
    if synthetic_images.shape[1:] != images.shape[1:]:
        raise ValueError(
            f"synthetic_images must have the images' sample shape {tuple(images.shape[1:])}, "
            f"got {tuple(synthetic_images.shape[1:])}"
        )
    if synthetic_images.shape[0] < 1:
        raise ValueError("synthetic_images is empty: DP-Mix_diff needs at least one synthetic sample")
    if not isinstance(labels_onehot, torch.Tensor) or labels_onehot.ndim != 2 or labels_onehot.shape[0] != b:
        raise ValueError(f"labels_onehot must have shape ({b}, L), got {getattr(labels_onehot, 'shape', None)}")
    width = labels_onehot.shape[1]
    n_syn = synthetic_images.shape[0]
    if (
        not isinstance(synthetic_labels_onehot, torch.Tensor)
        or tuple(synthetic_labels_onehot.shape) != (n_syn, width)
    ):
        raise ValueError(
            f"synthetic_labels_onehot must have shape ({n_syn}, {width}), "
            f"got {getattr(synthetic_labels_onehot, 'shape', None)}"
        )
    views = self_augmentations(images, num_views=k, generator=generator, max_shift=s, flip=flip)
    dtype, device = views.dtype, views.device
    labels = labels_onehot.to(device=device, dtype=dtype)
    view_labels = labels[:, None, :].expand(b, k, width)
    if m == 0:
        return views, view_labels.contiguous()
    pick = _randint(k, (b, m), generator).to(device)
    partner = _randint(n_syn, (b, m), generator).to(device)
    lam = _beta(a, (b, m), generator).to(device=device, dtype=dtype)
    rows = torch.arange(b, device=device)[:, None]
    syn = synthetic_images.to(device=device, dtype=dtype)[partner]  # (B, M, C, H, W)
    syn_labels = synthetic_labels_onehot.to(device=device, dtype=dtype)[partner]  # (B, M, L)
    lam_img = lam[..., None, None, None]
    mixed = lam_img * views[rows, pick] + (1 - lam_img) * syn
    mixed_labels = lam[..., None] * labels[:, None, :] + (1 - lam[..., None]) * syn_labels
    return torch.cat([views, mixed], dim=1), torch.cat([view_labels, mixed_labels], dim=1)
