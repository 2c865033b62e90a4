r"""Appendix F's U-Net denoiser, the network of the non-linear reconstruction attack.

Architecture
------------
Three-level encoder-decoder with base width ``B`` (48 in the paper)::

    DoubleConv(c, c') = Conv3x3(c, c', pad 1) -> ReLU -> Conv3x3(c', c', pad 1) -> ReLU

    encoder     DoubleConv(in, B)  -> MaxPool2x2
                DoubleConv(B, 2B)  -> MaxPool2x2
                DoubleConv(2B, 4B) -> MaxPool2x2
    bottleneck  DoubleConv(4B, 8B)
    decoder     ConvT2x2(8B, 4B) -> concat skip(4B) -> DoubleConv(8B, 4B)
                ConvT2x2(4B, 2B) -> concat skip(2B) -> DoubleConv(4B, 2B)
                ConvT2x2(2B, B)  -> concat skip(B)  -> DoubleConv(2B, B)
    head        Conv1x1(B, out), clamped to the valid range when bounds are given

The helpers below view samples of any supported shape as ``(C, H, W)`` images and turn a
valid range into bounds broadcastable to ``(N, C, H, W)``. Threat model and training:
:mod:`attacks.unet`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Bounds", "DoubleConv", "UNet"]

Bounds = tuple[float, float] | tuple[Tensor, Tensor]


class DoubleConv(nn.Sequential):
    """``Conv3x3 -> ReLU -> Conv3x3 -> ReLU`` with padding 1 (spatial size unchanged).

    The two convolutions are reachable as ``conv1`` and ``conv2``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)


class UNet(nn.Module):
    """Appendix F's three-level U-Net denoiser.

    Parameters
    ----------
    in_channels : int
        Channels of the mixed input (3 for images, 1 for digits).
    out_channels : int
        Channels of the reconstruction.
    base : int
        Base width ``B``; the encoder runs ``in -> B -> 2B -> 4B -> 8B`` (the ``8B`` block is
        the bottleneck), the decoder ``8B -> 4B -> 2B -> B``, then a 1x1 convolution to
        ``out_channels``.
    bounds : (lo, hi), optional
        Valid output range: floats, per-channel vectors (``C`` values or shape
        ``(1, C, 1, 1)``) or per-pixel tensors of shape ``(C, H, W)``. When given, the output
        is clamped to it in :meth:`forward`, as the paper clamps to the normalised range
        (with a straight-through gradient while training, so that outputs stuck beyond a
        bound still receive the L1 gradient).

    Notes
    -----
    Inputs are ``(N, C, H, W)`` with ``H, W >= 8`` (three 2x2 poolings). Sizes that are not
    multiples of 8 are handled in the decoder: an upsampled map smaller than its skip
    connection is zero-padded on the bottom/right to the skip's size before concatenation
    (the floor of the pooling only ever makes it smaller), so the output always has the
    input's spatial size.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        base: int = 48,
        bounds: Bounds | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("base", base)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.base = int(base)
        b = self.base
        self.down = nn.ModuleList([DoubleConv(in_channels, b), DoubleConv(b, 2 * b), DoubleConv(2 * b, 4 * b)])
        self.pools = nn.ModuleList([nn.MaxPool2d(kernel_size=2, stride=2) for _ in range(3)])
        self.bottleneck = DoubleConv(4 * b, 8 * b)
        self.ups = nn.ModuleList([
            nn.ConvTranspose2d(8 * b, 4 * b, kernel_size=2, stride=2),
            nn.ConvTranspose2d(4 * b, 2 * b, kernel_size=2, stride=2),
            nn.ConvTranspose2d(2 * b, b, kernel_size=2, stride=2),
        ])
        self.up = nn.ModuleList([DoubleConv(8 * b, 4 * b), DoubleConv(4 * b, 2 * b), DoubleConv(2 * b, b)])
        self.head = nn.Conv2d(b, out_channels, kernel_size=1)
        self.register_buffer("bound_lo", None)
        self.register_buffer("bound_hi", None)
        self.set_bounds(bounds)

    @property
    def encoder_blocks(self) -> list[DoubleConv]:
        """The four encoder DoubleConvs in order, the last one being the bottleneck."""
        return [*self.down, self.bottleneck]

    @property
    def decoder_blocks(self) -> list[DoubleConv]:
        """The three decoder DoubleConvs in order (``8B -> 4B -> 2B -> B``)."""
        return list(self.up)

    def set_bounds(self, bounds: Bounds | None) -> None:
        """Set (or remove, with ``None``) the range the output is clamped to."""
        if bounds is None:
            self.bound_lo, self.bound_hi = None, None
            return
        device = self.head.weight.device
        lo, hi = (_image_bound(v, channels=self.out_channels, image_shape=None).to(device) for v in bounds)
        if not bool((lo < hi).all()):
            raise ValueError("bounds must satisfy lo < hi")
        self.bound_lo, self.bound_hi = lo, hi

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects (N, {self.in_channels}, H, W) inputs, got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 8:
            raise ValueError(f"UNet needs H, W >= 8 (three 2x2 poolings), got {tuple(x.shape[-2:])}")
        skips = []
        h = x
        for block, pool in zip(self.down, self.pools):
            h = block(h)
            skips.append(h)
            h = pool(h)
        h = self.bottleneck(h)
        for upsample, block, skip in zip(self.ups, self.up, reversed(skips)):
            h = _match(upsample(h), skip)
            h = block(torch.cat([skip, h], dim=1))
        out = self.head(h)
        if self.bound_lo is not None:
            clamped = _clamp(out, self.bound_lo, self.bound_hi)
            # Straight-through: the value is clamped, the gradient passes as if it were not.
            # A hard clamp has zero gradient at a bound, and on mostly-black images (digits)
            # the whole output can fall below the lower bound early on and never recover.
            out = out + (clamped - out).detach() if out.requires_grad else clamped
        return out


def _match(h: Tensor, skip: Tensor) -> Tensor:
    """Zero-pad (or crop) ``h`` on the bottom/right to ``skip``'s spatial size."""
    dh, dw = skip.shape[-2] - h.shape[-2], skip.shape[-1] - h.shape[-1]
    if dh == 0 and dw == 0:
        return h
    return F.pad(h, (0, dw, 0, dh))  # negative amounts crop


def _clamp(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(x, lo.to(x.dtype)), hi.to(x.dtype))


# ------------------------------------------------------------------------------- shapes


def _image_shape(sample_shape: Sequence[int], *, channels: int | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of samples of ``sample_shape``.

    ``(C, H, W)`` is kept, ``(H, W)`` becomes ``(1, H, W)``, and a flat ``(d,)`` (the digits
    loader's rows) becomes ``(channels, s, s)`` with ``s = sqrt(d / channels)`` (``channels``
    defaults to 1), which must be an integer.
    """
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) == 3:
        if channels is not None and shape[0] != channels:
            raise ValueError(f"samples of shape {shape} have {shape[0]} channels, the U-Net expects {channels}")
        return shape  # type: ignore[return-value]
    if len(shape) == 2:
        if channels not in (None, 1):
            raise ValueError(f"samples of shape {shape} have 1 channel, the U-Net expects {channels}")
        return (1, *shape)  # type: ignore[return-value]
    if len(shape) == 1:
        c = 1 if channels is None else channels
        side = math.isqrt(shape[0] // c) if shape[0] % c == 0 else 0
        if side < 1 or c * side * side != shape[0]:
            raise ValueError(
                f"flat samples of dimension {shape[0]} are not {c}-channel square images; "
                "pass image_shape=(C, H, W)"
            )
        return (c, side, side)
    raise ValueError(f"samples must be (C, H, W), (H, W) or flat (d,), got sample shape {shape}")


def _image_bound(value, *, channels: int, image_shape: tuple[int, int, int] | None) -> Tensor:
    """A bound (float, per-channel or per-coordinate) as a tensor broadcastable to ``(N, C, H, W)``."""
    t = torch.as_tensor(value, dtype=torch.float32).detach()
    if t.numel() == 1:
        return t.reshape(())
    if t.numel() == channels:
        return t.reshape(1, channels, 1, 1)
    if image_shape is not None and t.numel() == math.prod(image_shape):
        return t.reshape(1, *image_shape)
    if t.ndim >= 3 and t.shape[-3] == channels:
        return t.reshape(1, *t.shape[-3:])
    raise ValueError(
        f"a bound must be a float, {channels} per-channel values or a per-pixel tensor, "
        f"got shape {tuple(t.shape)}"
    )
