"""The non-linear reconstruction attack of the paper (section 5.1, appendix F): a U-Net.

Threat model
------------
The attacker owns a *public* image set (Tiny-ImageNet restricted to CIFAR-10-like classes in
the paper) and knows the mechanism: Algorithm 1 with the same ``alpha``, the same privacy
parameter ``tau`` and the same noise mode as the attacked release. It mixes its own public
images exactly as a party would (radius calibrated with Theorem 2 *on the public data*,
``r = m_f D``), trains a U-Net to map a mixed input back to the row's clean component
``x_i``, and applies that network **zero-shot** to the private release. The attack uses no
private sample, no mixing weight, no partner index and no radius of the release; of
:class:`~attacks.threat_model.AttackerKnowledge` it reads only ``valid_range`` (to clamp its
output). One U-Net is trained per ``tau`` (the paper's Table 3), and per seed: the paper
repeats every experiment over five seeds and reports mean +- std and the best SNR.

Architecture (appendix F)
-------------------------
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

Loss (appendix F)
-----------------
``L = mean |x_hat - x| + lambda_tv * TV(x_hat)`` with ``lambda_tv = 1e-4`` and the
anisotropic total variation ``TV(z) = mean |z[..., 1:, :] - z[..., :-1, :]| +
mean |z[..., :, 1:] - z[..., :, :-1]|``; Adam, learning rate ``1e-3``, batch size 32,
30 epochs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from attacks.threat_model import NOISE_MODES, AttackerKnowledge, ObservedRelease, Reconstruction
from common.calibration import (
    MF_FORMULAS,
    DataStatistics,
    data_statistics,
    noise_multiplier,
    streamed_statistics,
)
from common.mixup import MixupRelease, singularized_mixup

__all__ = [
    "DoubleConv",
    "MixturePairs",
    "MixtureSampler",
    "TrainedUNet",
    "UNet",
    "UNetAttack",
    "nonlinear_attack_over_seeds",
    "public_mixtures",
    "total_variation",
    "train_unet_attacker",
    "unet_loss",
]

# Above this many bytes of float64 copy, the public data's Theorem 2 statistics are streamed.
_STATS_IN_MEMORY_BYTES = 2**30

# Seed streams of one attacker seed (model initialisation, mixtures, batch order).
_STREAM_INIT, _STREAM_MIX, _STREAM_SHUFFLE = 0, 1, 2

Bounds = tuple[float, float] | tuple[Tensor, Tensor]


# --------------------------------------------------------------------------- architecture


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


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ----------------------------------------------------------------------- public mixtures


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


# ------------------------------------------------------------------------------ training


def total_variation(z: Tensor) -> Tensor:
    """Anisotropic TV: ``mean |dz/dh| + mean |dz/dw|`` (finite differences, per element)."""
    tv = z.new_zeros(())
    if z.shape[-2] > 1:
        tv = tv + (z[..., 1:, :] - z[..., :-1, :]).abs().mean()
    if z.shape[-1] > 1:
        tv = tv + (z[..., :, 1:] - z[..., :, :-1]).abs().mean()
    return tv


def unet_loss(pred: Tensor, target: Tensor, *, tv_weight: float = 1e-4) -> tuple[Tensor, Tensor]:
    """``(L1(pred, target) + tv_weight * TV(pred), L1(pred, target))``, L1 being the mean."""
    l1 = F.l1_loss(pred, target)
    return l1 + tv_weight * total_variation(pred), l1


@dataclass
class TrainedUNet:
    """A U-Net attacker and how it was trained.

    Attributes
    ----------
    model : UNet
        The trained network (eval mode).
    history : list[float]
        Mean training loss (L1 + TV) of every epoch.
    l1_history : list[float]
        Mean L1 term of every epoch.
    image_shape : (C, H, W)
        Shape the samples were viewed as.
    tau, alpha, radius, noise_mode, mf_formula, seed :
        The mechanism imitated on the public data and the attacker's seed.
    """

    model: UNet
    history: list[float]
    l1_history: list[float]
    image_shape: tuple[int, int, int]
    tau: float
    alpha: float
    radius: float
    noise_mode: str
    mf_formula: str
    seed: int
    config: dict = field(default_factory=dict)

    def attack(self, *, device: str | torch.device = "cpu", batch_size: int = 256) -> UNetAttack:
        """The zero-shot attack that applies this network to a release."""
        return UNetAttack(self, device=device, batch_size=batch_size)


def train_unet_attacker(
    public_x: Tensor,
    *,
    tau: float,
    alpha: float = 0.7,
    noise_mode: str,
    valid_range: Bounds | None,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    tv_weight: float = 1e-4,
    base: int = 48,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    remix_every_epoch: bool = True,
    mf_formula: str = "paper",
    image_shape: tuple[int, int, int] | None = None,
) -> TrainedUNet:
    """Train appendix F's U-Net to undo singularized mixup on public data.

    Loss ``mean |x_hat - x| + tv_weight * TV(x_hat)`` (anisotropic TV, see
    :func:`total_variation`), Adam with learning rate ``lr``, ``epochs`` passes over the
    public set in shuffled batches of ``batch_size`` (paper: 30 epochs, batch 32, lr 1e-3,
    TV weight 1e-4, base width 48). Inputs are the mixtures of :class:`MixtureSampler`
    (same ``tau``, ``alpha`` and noise mode as the attacked release, radius calibrated on
    the public data), targets the public samples; the output is clamped to ``valid_range``.

    Parameters
    ----------
    public_x : Tensor
        Public samples ``(n, C, H, W)``, ``(n, H, W)`` or flat ``(n, d)`` (then viewed as
        ``image_shape``, by default square single-channel images).
    tau, alpha, noise_mode, valid_range, mf_formula :
        The attacked mechanism (see :class:`MixtureSampler`).
    seed : int
        Seeds the initialisation, the mixtures and the batch order (independent streams).
        Mixtures of epoch ``e`` use a generator seeded from ``(seed, e)`` only, so the same
        public samples are paired identically whatever ``tau``.
    remix_every_epoch : bool
        Draw fresh mixtures of the public data every epoch (default) rather than one set
        reused for all epochs. This is a choice *of the attacker*, not a property of the
        attacked release: remixing its own public data costs the attacker nothing and gives
        it more (input, target) pairs, i.e. a stronger attack. It exposes no private data
        (unlike a party that re-releases fresh mixtures of its private samples). The
        paper's appendix does not say which one it used.
    progress : bool
        Show a tqdm progress bar over the training batches.

    Returns
    -------
    TrainedUNet
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = torch.device(device)
    public_x = public_x.detach().to(torch.float32)
    shape = _image_shape(public_x.shape[1:], channels=None) if image_shape is None else tuple(image_shape)
    if len(shape) != 3 or math.prod(shape) != math.prod(public_x.shape[1:]):
        raise ValueError(f"image_shape {shape} does not match public samples of shape {tuple(public_x.shape[1:])}")
    sampler = MixtureSampler(
        public_x, tau=tau, alpha=alpha, noise_mode=noise_mode, valid_range=valid_range, mf_formula=mf_formula
    )
    channels = shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_derive_seed(seed, _STREAM_INIT))
        model = UNet(in_channels=channels, out_channels=channels, base=base)
    if valid_range is not None:
        model.set_bounds(tuple(_image_bound(v, channels=channels, image_shape=shape) for v in valid_range))
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(_derive_seed(seed, _STREAM_SHUFFLE))
    targets = public_x.reshape(-1, *shape).to(device)
    n = targets.shape[0]
    batches = math.ceil(n / batch_size)

    def mixtures(epoch: int) -> Tensor:
        gen = torch.Generator(device=public_x.device).manual_seed(_derive_seed(seed, _STREAM_MIX, epoch))
        return sampler.sample(generator=gen).inputs.reshape(-1, *shape).to(device)

    history: list[float] = []
    l1_history: list[float] = []
    inputs = None
    model.train()
    with tqdm(total=epochs * batches, desc=f"U-Net tau={tau:g} seed={seed}", disable=not progress, leave=False) as bar:
        for epoch in range(epochs):
            if inputs is None or remix_every_epoch:
                inputs = mixtures(epoch if remix_every_epoch else 0)
            order = torch.randperm(n, generator=shuffle).to(device)
            total = total_l1 = 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                pred = model(inputs[idx])
                loss, l1 = unet_loss(pred, targets[idx], tv_weight=tv_weight)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * idx.numel()
                total_l1 += float(l1.detach()) * idx.numel()
                bar.update(1)
            history.append(total / n)
            l1_history.append(total_l1 / n)
            bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.4f}")
    model.eval()
    return TrainedUNet(
        model=model,
        history=history,
        l1_history=l1_history,
        image_shape=shape,  # type: ignore[arg-type]
        tau=float(tau),
        alpha=float(alpha),
        radius=sampler.radius,
        noise_mode=noise_mode,
        mf_formula=mf_formula,
        seed=int(seed),
        config={
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "tv_weight": tv_weight, "base": base,
            "remix_every_epoch": remix_every_epoch, "num_public": n,
            "public_D": sampler.statistics.D, "public_c": sampler.statistics.c,
            "noise_multiplier": sampler.noise_multiplier,
        },
    )


# -------------------------------------------------------------------------------- attack


class UNetAttack:
    """Zero-shot non-linear attack: a U-Net trained on public mixtures applied to a release.

    Parameters
    ----------
    model : UNet or TrainedUNet
        The network (a :class:`TrainedUNet` also fixes the image shape it was trained on).
    device : str or torch.device
        Where the network runs.
    batch_size : int
        Rows per forward pass.

    Notes
    -----
    As in the paper, the network is trained on mixtures of *public* data
    (:func:`train_unet_attacker`) and applied unchanged to the private release: it uses no
    private sample and ignores the attacker's knowledge of weights, partners and radius.
    Only ``knowledge.valid_range`` is used, to clamp the estimate.
    """

    name = "unet"

    def __init__(self, model: UNet | TrainedUNet, *, device: str | torch.device = "cpu", batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.trained = model if isinstance(model, TrainedUNet) else None
        self.model = model.model if isinstance(model, TrainedUNet) else model
        if not isinstance(self.model, UNet):
            raise TypeError(f"model must be a UNet or TrainedUNet, got {type(self.model).__name__}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    def _image_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
        channels = self.model.in_channels
        if self.trained is not None and math.prod(self.trained.image_shape) == math.prod(sample_shape):
            shape = self.trained.image_shape
            if len(sample_shape) == 3 and tuple(sample_shape) != tuple(shape):
                raise ValueError(f"release samples {sample_shape} differ from the training images {shape}")
            return shape
        return _image_shape(sample_shape, channels=channels)

    def reconstruct(self, observed: ObservedRelease, knowledge: AttackerKnowledge) -> Reconstruction:
        """Estimate every row's clean component ``x_i`` from the mixed inputs alone.

        Returns a :class:`Reconstruction` whose ``x`` has ``observed.x``'s shape.

        Raises
        ------
        ValueError
            If ``observed.x`` does not hold ``(n, *sample_shape)`` samples, or the samples do
            not fit the network's channels.
        """
        sample_shape = tuple(int(s) for s in observed.sample_shape)
        x = observed.x
        if x.ndim < 1 or x.numel() != x.shape[0] * math.prod(sample_shape):
            raise ValueError(
                f"observed.x of shape {tuple(x.shape)} does not hold (n, *sample_shape) rows "
                f"with sample_shape={sample_shape}"
            )
        shape = self._image_shape(sample_shape)
        images = x.reshape(x.shape[0], *shape)
        bounds = None
        if knowledge.valid_range is not None:
            bounds = tuple(
                _image_bound(v, channels=shape[0], image_shape=shape).to(self.device) for v in knowledge.valid_range
            )
        model = self.model.to(self.device).eval()
        out = torch.empty(images.shape, dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                batch = images[start : start + self.batch_size].to(self.device, torch.float32)
                pred = model(batch)
                if bounds is not None:
                    pred = _clamp(pred, *bounds)
                out[start : start + batch.shape[0]] = pred.cpu()
        details = {"zero_shot": True, "image_shape": shape, "base": self.model.base}
        if self.trained is not None:
            t = self.trained
            details.update(
                tau=t.tau, seed=t.seed, noise_mode=t.noise_mode, public_radius=t.radius,
                mf_formula=t.mf_formula, final_loss=t.history[-1] if t.history else None,
            )
        return Reconstruction(
            x=out.reshape(x.shape).to(device=x.device, dtype=x.dtype if torch.is_floating_point(x) else torch.float32),
            method=self.name,
            details=details,
        )


def nonlinear_attack_over_seeds(
    public_x: Tensor,
    observed: ObservedRelease,
    knowledge: AttackerKnowledge,
    *,
    seeds: Iterable[int],
    attack_batch_size: int = 256,
    **train_kwargs,
) -> list[Reconstruction]:
    """Train one U-Net per seed on public mixtures and attack ``observed`` with each.

    The paper repeats the non-linear attack over five seeds and reports mean +- std and the
    best SNR over them. ``train_kwargs`` go to :func:`train_unet_attacker` and must include
    ``tau``; ``noise_mode`` and ``valid_range`` default to ``knowledge.noise_mode`` and
    ``knowledge.valid_range``. Each reconstruction's ``details["seed"]`` names its seed.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    if "tau" not in train_kwargs:
        raise ValueError("train_kwargs must include tau (one U-Net is trained per tau)")
    if "seed" in train_kwargs:
        raise ValueError("pass seeds=..., not seed=")
    train_kwargs.setdefault("noise_mode", knowledge.noise_mode)
    train_kwargs.setdefault("valid_range", knowledge.valid_range)
    device = train_kwargs.get("device", "cpu")
    results = []
    for seed in seeds:
        trained = train_unet_attacker(public_x, seed=seed, **train_kwargs)
        results.append(UNetAttack(trained, device=device, batch_size=attack_batch_size).reconstruct(observed, knowledge))
    return results
