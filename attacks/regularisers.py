r"""The anisotropic total-variation prior, for every attack of the package.

All attacks use the same image prior, the anisotropic total variation of an image
``z`` of shape ``(C, H, W)``,

.. math::

    \mathrm{TV}(z) = \operatorname{mean}_{c,h,w} |z_{c,h+1,w} - z_{c,h,w}|
                   + \operatorname{mean}_{c,h,w} |z_{c,h,w+1} - z_{c,h,w}| ,

acting on the last two axes of a sample (a term is dropped when its axis has length 1).
It only ever sees the attacker's own estimate, never a private input. Three forms of it
are needed, and they are deliberately not merged: each keeps the exact floating-point
operations its attack always used, so that committed results do not move by a rounding.

* :func:`total_variation` - one mean over the whole batch (Inverting Gradients on a batch
  ``(B, *sample_shape)``; the U-Net's training loss on ``(N, C, H, W)``). Autograd
  differentiates it.
* :func:`tv_per_image` - one value per image (the reference objectives of the linear and
  InstaHide attacks, written with plain differentiable operations for gradient checks).
* :func:`tv_and_grad` - the sum of :func:`tv_per_image` over a chunk of images *and its
  gradient, written by hand*. The linear and InstaHide attacks run thousands of full-batch
  steps over up to ``n d ~ 10^9`` values; building an autograd graph for every step would
  cost several times the memory and time of the two neighbour differences computed here.
  It is checked against autograd of :func:`tv_per_image` in the tests.

For images of equal size the batch mean equals the mean of the per-image means, so
``total_variation(z) == tv_per_image(z).mean()`` up to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["has_tv", "total_variation", "tv_and_grad", "tv_per_image"]


def has_tv(sample_shape: Sequence[int]) -> bool:
    """Whether samples of ``sample_shape`` have a TV term: at least two axes, and the last two
    not both of length 1 (flat vectors and features have none)."""
    shape = tuple(sample_shape)
    return len(shape) >= 2 and shape[-1] * shape[-2] > 1


def total_variation(images: torch.Tensor) -> torch.Tensor:
    r"""Anisotropic TV of a batch ``(B, *sample_shape)``, one mean over the whole batch.

    .. math::

        \mathrm{TV}(x) = \operatorname{mean}_{b,\dots,i,j} |x_{\dots,i+1,j} - x_{\dots,i,j}|
                       + \operatorname{mean}_{b,\dots,i,j} |x_{\dots,i,j+1} - x_{\dots,i,j}|

    over the last two axes (Geiping et al.'s prior; the U-Net loss of appendix F). A batch
    of 1-D samples (``images.ndim < 3``) has TV 0: its last two axes are not an image.
    """
    if images.ndim < 3:
        return images.new_zeros(())
    tv = images.new_zeros(())
    if images.shape[-2] > 1:
        tv = tv + (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    if images.shape[-1] > 1:
        tv = tv + (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return tv


def tv_per_image(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of each image of ``(m, ..., H, W)``: a tensor of shape ``(m,)``.

    Every axis between the first and the last two is treated as a channel; the means run
    over one image's channels and neighbour pairs.
    """
    m = images.shape[0]
    flat = images.reshape(m, -1, images.shape[-2], images.shape[-1])
    tv = torch.zeros(m, dtype=images.dtype, device=images.device)
    if flat.shape[-2] > 1:
        tv = tv + (flat[:, :, 1:, :] - flat[:, :, :-1, :]).abs().flatten(1).mean(1)
    if flat.shape[-1] > 1:
        tv = tv + (flat[:, :, :, 1:] - flat[:, :, :, :-1]).abs().flatten(1).mean(1)
    return tv


def tv_and_grad(images: torch.Tensor, *, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""``sum_i TV(images[i])`` (as :func:`tv_per_image`) and, with ``need_grad``, its gradient.

    With ``D = z_{k+1} - z_k`` a neighbour difference along an axis of ``c`` pairs per image,
    ``d|D|/dz_{k+1} = sgn(D) / c`` and ``d|D|/dz_k = -sgn(D) / c``; the gradient sums these
    over both axes. ``sgn(0) = 0``, the subgradient autograd uses for ``abs``.

    Parameters
    ----------
    images : torch.Tensor
        ``(m, ..., H, W)``, not requiring grad (no graph is built).
    need_grad : bool
        Also return the gradient (same shape as ``images``); ``None`` otherwise.
    """
    m = images.shape[0]
    flat = images.reshape(m, -1, images.shape[-2], images.shape[-1])
    total = images.new_zeros(())
    grad = torch.zeros_like(flat) if need_grad else None
    for axis in (2, 3):
        size = flat.shape[axis]
        if size < 2:
            continue
        diff = flat.narrow(axis, 1, size - 1) - flat.narrow(axis, 0, size - 1)
        count = diff[0].numel()  # pairs per image: the per-image mean's denominator
        total = total + diff.abs().sum() / count
        if need_grad:
            sign = diff.sign_().div_(count)  # in place: diff is not needed any more
            grad.narrow(axis, 1, size - 1).add_(sign)
            grad.narrow(axis, 0, size - 1).sub_(sign)
    return total, (grad.reshape(images.shape) if need_grad else None)
