"""Image preprocessing of the paper's appendix E, as pure tensor maths.

Every image goes through the same deterministic map before anything else sees it::

    x  ->  resize(x / 255, size) with channels repeated to 3  ->  (x - mean_c) / std_c

with the per-data-set channel statistics of the paper's Table 7. Images fed to a backbone
are resized to ``size`` (224 in the paper) and grey images get three channels; raw inputs
(``backbone = "none"``) keep their native size and channels.

Because every step is affine per channel, the *valid range* of a preprocessed pixel is the
image of ``[0, 1]``: ``[(0 - mean_c) / std_c, (1 - mean_c) / std_c]``, different per channel.
The clamped noise mode clips noisy images to that range, as the authors' code clips to the
normalised range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = ["NORMALISATION", "ImagePreprocessing", "channel_bounds"]

# Table 7 of the paper (appendix E). MNIST's single-channel statistics are repeated over the
# three channels after grey -> RGB. The paper gives CIFAR-100's statistics for Tiny-ImageNet
# too; we keep that choice. Digits (8x8, already in [0, 1]) is not in the paper: identity.
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.0,), (1.0,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "tiny-imagenet": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


@dataclass(frozen=True)
class ImagePreprocessing:
    """The deterministic map from stored pixels to model-space images.

    Parameters
    ----------
    mean, std : tuple of float
        Per-channel statistics (one value is broadcast over all channels).
    size : int or None
        Side of the square output; ``None`` keeps the native size.
    channels : int or None
        Output channels; a one-channel image is repeated to reach it. ``None`` keeps them.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError("mean and std need the same, non-zero length")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")

    def output_shape(self, stored_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(C, H, W)`` produced for stored images of shape ``(C, H, W)``."""
        c, h, w = stored_shape
        c = self.channels or c
        if self.size is not None:
            h = w = self.size
        return c, h, w

    def _stats(self, channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device)
        std = torch.tensor(self.std, dtype=torch.float32, device=device)
        if mean.numel() == 1:
            mean, std = mean.expand(channels), std.expand(channels)
        elif mean.numel() != channels:
            raise ValueError(f"{mean.numel()} channel statistics for {channels}-channel images")
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Map a batch ``(N, C, H, W)`` of uint8 (0..255) or float (0..1) pixels.

        Returns float32 on ``device`` (default: the input's). Work happens on ``device``,
        so uint8 images travel there at a quarter of the float size.
        """
        if images.ndim != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
        x = images.to(device) if device is not None else images
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(f"cannot turn {x.shape[1]} channels into {self.channels}")
            x = x.expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            # Bilinear, no antialiasing: the paper's torchvision Resize on upsampled images.
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean, std = self._stats(x.shape[1], x.device)
        return (x - mean) / std

    def valid_bounds(self, channels: int, *, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(lo, hi)`` of preprocessed pixels, shaped ``(1, C, 1, 1)``."""
        mean, std = self._stats(channels, torch.device(device))
        return (0.0 - mean) / std, (1.0 - mean) / std


def channel_bounds(
    preprocessing: ImagePreprocessing, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid range of every coordinate of a *flattened* preprocessed image of ``shape``.

    Returns two float32 vectors of length ``C * H * W`` (channel-major, as ``reshape``
    flattens ``(C, H, W)``), usable as a per-coordinate clamp.
    """
    c, h, w = shape
    lo, hi = preprocessing.valid_bounds(c)
    return lo.expand(1, c, h, w).reshape(-1).contiguous(), hi.expand(1, c, h, w).reshape(-1).contiguous()
