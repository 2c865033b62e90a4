"""Fed-AugMix's client-side maths: AugMix (Algorithm 2), the Jensen-Shannon consistency loss
(equations 5-6), and the loss-scaling rule of section IV-E.

AugMix (Hendrycks et al., 2020) mixes ``n`` random augmentation chains of one image and
interpolates the mixture with the image itself::

    x_aug    = sum_{i=1..n} b_i ch_i(x),      (b_1, ..., b_n) ~ Dirichlet(alpha, ..., alpha)   (3)
    x_augmix = m x + (1 - m) x_aug,            m ~ Beta(alpha, alpha)                          (4)

where ``ch_i = op_l o ... o op_1`` has a length ``l ~ Uniform{1, ..., max_depth}`` and
operations drawn uniformly from :data:`AUGMIX_OPERATIONS`. Every application of an
operation draws its own level (equation 2)::

    AugLevel = SampLevel / 10 * MaxVal,        SampLevel ~ U(0.1, s)

with ``s`` the severity (``0.1 <= s <= 10``; ``MaxVal`` is approached at ``s = 10``).

Each client then trains on (Algorithm 1, lines 4-9)::

    L = L_c(p_orig, y) + lambda * D_JS(p_orig; p_augmix1; p_augmix2)                          (5)

with two independent AugMix draws of every image. :class:`FedAugMixObjective` is that loss
as a :data:`common.training.LocalObjective`.

Everything here is plain tensor maths: the operations are re-implemented in PyTorch on float
tensors (no PIL), vectorised over a batch, and every random draw comes from the caller's CPU
``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real

import torch
from torch import nn
from torch.nn import functional as F

from .training import soft_cross_entropy

__all__ = [
    "AUGMIX_OPERATIONS",
    "FedAugMixObjective",
    "LossScaling",
    "augmix",
    "jensen_shannon_consistency",
]

AUGMIX_OPERATIONS: tuple[str, ...] = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
"""AugMix's operation set (the reference ``augmentations.augmentations``): the AutoAugment
operations that do not overlap the ImageNet-C corruptions used for testing (no contrast,
colour, brightness, sharpness, cutout)."""

# MaxVal of equation (2) for the operations that have a level.
_MAX_DEGREES = 30.0  # rotate
_MAX_SHEAR = 0.3  # shear_x, shear_y: horizontal (vertical) offset per pixel of height (width)
_MAX_TRANSLATE_FRACTION = 1.0 / 3.0  # translate_x, translate_y: a third of the side
_MAX_POSTERIZE_DROP = 4  # posterize keeps 4 - floor(AugLevel) bits of 8
_MAX_SOLARIZE = 1.0  # solarize threshold 1 - AugLevel

_LEVELS_8BIT = 255.0  # AugMix works on 8-bit images; posterize and equalize count in those levels


# --------------------------------------------------------------------------- operations
#
# Every operation maps images ``x`` of shape (G, C, H, W) with values in [0, 1] to images of
# the same shape with values in [0, 1], given ``level`` of shape (G,): the signed fraction
# ``+-SampLevel / 10`` in [-1, 1] of the operation's MaxVal, on the CPU whatever the device
# of ``x``. Geometric operations use the sign (AugMix flips a fair coin for rotate, shear and
# translate); the others use ``|level|``.


def _autocontrast(x: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
    """Per image and channel, ``(x - min) / (max - min)``: the darkest value becomes 0 and
    the brightest 1 (PIL's ``ImageOps.autocontrast`` with no cutoff). A channel spanning
    less than one 8-bit level is left as it is (PIL's rule for a single-level histogram;
    stretching float noise would only amplify it)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    flat = span < 1.0 / _LEVELS_8BIT
    return torch.where(flat, x, (x - lo) / torch.where(flat, torch.ones_like(span), span))


def _equalize(x: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
    """Histogram equalisation per image and channel, by ranks::

        x' = (cdf(x) - cdf(min)) / (P - cdf(min)),      cdf(v) = #{pixels <= v}

    over the ``P = H W`` pixels, after rounding to 8-bit levels (so values that differ by
    float noise count as one level, as in PIL). The minimum maps to 0, the maximum to 1,
    and ``k`` distinct levels land on ``k`` evenly spaced cumulative fractions: the output
    histogram is as flat as the ties allow. PIL's ``ImageOps.equalize`` builds a 256-entry
    table with step ``(P - h_last) // 255``, which is 0 (no change at all) for any image
    under 256 pixels, such as 8x8 digits; ranks have no such floor. A constant channel is
    left as it is.
    """
    g, c, h, w = x.shape
    keys = torch.round(x.reshape(g * c, h * w) * _LEVELS_8BIT).long()
    # 256-bin histograms by scatter-add, then cdf(v) is the running count up to v's level.
    hist = torch.zeros(g * c, 256, dtype=x.dtype, device=x.device)
    hist.scatter_add_(1, keys, torch.ones_like(keys, dtype=x.dtype))
    cdf = hist.cumsum(dim=1)
    at_pixel = cdf.gather(1, keys)
    at_min = cdf.gather(1, keys.amin(dim=1, keepdim=True))
    denom = h * w - at_min
    constant = denom == 0
    out = (at_pixel - at_min) / torch.where(constant, torch.ones_like(denom), denom)
    out = torch.where(constant, x.reshape(g * c, h * w), out)
    return out.reshape(g, c, h, w)


def _posterize_bits(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the ``bits`` (shape (G,), 1..8) most significant bits of every 8-bit value, as
    PIL's ``ImageOps.posterize``: ``floor(round(255 x) / 2^(8 - bits)) * 2^(8 - bits) / 255``,
    which leaves ``2^bits`` levels."""
    step = torch.pow(2.0, 8.0 - bits.to(x.device, x.dtype)).reshape(-1, 1, 1, 1)
    return torch.floor(torch.round(x * _LEVELS_8BIT) / step) * step / _LEVELS_8BIT


def _posterize(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """AugMix's convention: ``bits = 4 - floor(AugLevel)`` with ``AugLevel = |level| * 4``, so
    higher severity keeps fewer bits (4 at the lowest levels, 1 near ``s = 10``). At least one
    bit is kept: zero bits would blank the image, which ``SampLevel < s <= 10`` excludes
    anyway but float rounding at the boundary might not."""
    bits = _MAX_POSTERIZE_DROP - torch.floor(level.abs() * _MAX_POSTERIZE_DROP)
    return _posterize_bits(x, bits.clamp(1, _MAX_POSTERIZE_DROP))


def _solarize_threshold(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert every value at or above ``threshold`` (shape (G,)): ``x -> 1 - x`` (PIL's
    ``ImageOps.solarize``)."""
    t = threshold.to(x.device, x.dtype).reshape(-1, 1, 1, 1)
    return torch.where(x >= t, 1.0 - x, x)


def _solarize(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Threshold ``1 - AugLevel`` with ``AugLevel = |level| * 1``: at low severity only the
    brightest values flip; near ``s = 10`` almost all of them do."""
    return _solarize_threshold(x, _MAX_SOLARIZE - level.abs())


def _affine(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` at ``input = matrix @ output + offset`` in *pixel* coordinates centred on
    the image (u to the right, v downwards), bilinearly, with black (0) outside the image,
    as PIL's ``Image.transform`` does. ``matrix`` is (G, 2, 2), ``offset`` (G, 2) pixels.

    ``affine_grid`` works in normalised coordinates ``u_n = 2u / W``, ``v_n = 2v / H``
    (``align_corners=False``: pixel centres sit at ``(2i + 1) / W - 1``, so integer shifts
    and quarter turns land exactly on pixel centres); the change of scale is folded into
    the matrix so that non-square images are not distorted.
    """
    g, _, h, w = x.shape
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=x.dtype, device=x.device)
    theta = torch.empty(g, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, :, :2] = matrix.to(x.device, x.dtype) * scale.reshape(1, 1, 2) / scale.reshape(1, 2, 1)
    theta[:, :, 2] = offset.to(x.device, x.dtype) / scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotate_degrees(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate counter-clockwise (as displayed, PIL's sign) by ``degrees`` (G,) about the
    centre: the output at ``p`` is the input at ``R(-angle) p`` in y-down coordinates."""
    rad = torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(rad), torch.sin(rad)
    matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return _affine(x, matrix, torch.zeros(len(degrees), 2, dtype=torch.float64))


def _rotate(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Rotate by ``level * 30`` degrees (the sign of ``level`` picks the direction)."""
    return _rotate_degrees(x, level * _MAX_DEGREES)


def _shear_matrix(k: torch.Tensor, *, horizontal: bool) -> torch.Tensor:
    eye = torch.eye(2, dtype=torch.float64).repeat(len(k), 1, 1)
    if horizontal:
        eye[:, 0, 1] = k  # input u = u + k v
    else:
        eye[:, 1, 0] = k  # input v = v + k u
    return eye


def _shear_x(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Horizontal shear ``u_in = u + k v`` with ``k = level * 0.3``, about the image centre
    (PIL shears about the top-left corner; that only adds a translation)."""
    k = level.to(torch.float64) * _MAX_SHEAR
    return _affine(x, _shear_matrix(k, horizontal=True), torch.zeros(len(k), 2, dtype=torch.float64))


def _shear_y(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Vertical shear ``v_in = v + k u`` with ``k = level * 0.3``, about the image centre."""
    k = level.to(torch.float64) * _MAX_SHEAR
    return _affine(x, _shear_matrix(k, horizontal=False), torch.zeros(len(k), 2, dtype=torch.float64))


def _translate_pixels(x: torch.Tensor, du: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
    """``out(u, v) = in(u + du, v + dv)``: content moves by ``(-du, -dv)`` pixels (PIL's
    affine convention), black where it uncovers the border."""
    eye = torch.eye(2, dtype=torch.float64).repeat(len(du), 1, 1)
    return _affine(x, eye, torch.stack([du.to(torch.float64), dv.to(torch.float64)], -1))


def _translate_x(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Shift by ``level * W / 3`` pixels horizontally. The shift is not rounded to whole
    pixels (the reference does round): on 8x8 digits ``W / 3 < 3`` pixels, and rounding would
    make translation a no-op at every severity below 3.75."""
    du = level.to(torch.float64) * x.shape[3] * _MAX_TRANSLATE_FRACTION
    return _translate_pixels(x, du, torch.zeros_like(du))


def _translate_y(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Shift by ``level * H / 3`` pixels vertically (not rounded, see :func:`_translate_x`)."""
    dv = level.to(torch.float64) * x.shape[2] * _MAX_TRANSLATE_FRACTION
    return _translate_pixels(x, torch.zeros_like(dv), dv)


_Operation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Looked up at call time, so a test may swap an operation for a stub.
_OPERATIONS: dict[str, _Operation] = {
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "posterize": _posterize,
    "rotate": _rotate,
    "solarize": _solarize,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}
assert tuple(_OPERATIONS) == AUGMIX_OPERATIONS


# --------------------------------------------------------------------------- random draws


def _log_gamma(concentration: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """``log G`` for ``count`` independent ``G ~ Gamma(concentration, 1)``, float64, from
    ``generator`` alone (``torch.distributions`` cannot take a generator).

    Marsaglia and Tsang (2000): for ``a >= 1``, with ``d = a - 1/3`` and ``c = 1 / sqrt(9 d)``,
    accept ``d v``, ``v = (1 + c z)^3``, when ``log u < z^2 / 2 + d - d v + d log v``
    (``z ~ N(0, 1)``, ``u ~ U(0, 1)``; more than 95% of proposals pass). For ``a < 1``,
    ``G = G' U^(1/a)`` with ``G' ~ Gamma(a + 1)``. Logarithms keep small concentrations
    usable: ``U^(1/a)`` underflows to 0 long before its logarithm loses precision. For
    ``a = 1`` (AugMix's default) ``G = -log U`` directly.
    """
    if concentration == 1.0:
        # Gamma(1) is Exponential(1): -log U, no rejection loop (the default alpha).
        u = 1.0 - torch.rand(count, generator=generator, dtype=torch.float64)  # in (0, 1]
        exponential = (-torch.log(u)).clamp_min(1e-300)  # u = 1 gives 0, whose log is -inf
        return torch.log(exponential)
    a = concentration + 1.0 if concentration < 1.0 else concentration
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(count, dtype=torch.float64)
    pending = torch.arange(count)
    while pending.numel() > 0:
        k = pending.numel()
        z = torch.randn(k, generator=generator, dtype=torch.float64)
        u = 1.0 - torch.rand(k, generator=generator, dtype=torch.float64)  # in (0, 1]
        v = (1.0 + c * z) ** 3
        positive = v > 0
        log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
        accept = positive & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
        out[pending[accept]] = math.log(d) + log_v[accept]
        pending = pending[~accept]
    if concentration < 1.0:
        u = 1.0 - torch.rand(count, generator=generator, dtype=torch.float64)
        out = out + torch.log(u) / concentration
    return out


def _dirichlet(alpha: float, rows: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``rows`` draws of ``Dirichlet(alpha, ..., alpha)`` over ``width`` components, (rows,
    width) float64: normalised Gamma draws, as a softmax of their logarithms."""
    return torch.softmax(_log_gamma(alpha, rows * width, generator).reshape(rows, width), dim=1)


# --------------------------------------------------------------------------- AugMix


def _check_augmix_arguments(
    *, severity: float, width: int, max_depth: int, alpha: float, value_range: tuple[float, float]
) -> tuple[float, float]:
    if not (isinstance(severity, Real) and 0.1 <= severity <= 10.0):
        raise ValueError(f"severity must lie in [0.1, 10] (SampLevel ~ U(0.1, s), eq. 2), got {severity!r}")
    if isinstance(width, bool) or not isinstance(width, Integral) or width < 1:
        raise ValueError(f"width (number of chains) must be an integer >= 1, got {width!r}")
    if isinstance(max_depth, bool) or not isinstance(max_depth, Integral) or max_depth < 1:
        raise ValueError(f"max_depth (longest chain) must be an integer >= 1, got {max_depth!r}")
    if not (isinstance(alpha, Real) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha (Dirichlet and Beta concentration) must be finite and > 0, got {alpha!r}")
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be a pair (lo, hi), got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite with lo < hi, got {value_range!r}")
    return lo, hi


def augmix(
    images: torch.Tensor,
    *,
    severity: float,
    generator: torch.Generator,
    width: int = 3,
    max_depth: int = 3,
    alpha: float = 1.0,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """AugMix (Algorithm 2 of Fed-AugMix), independently for every image of a batch.

    For each image ``x``::

        (b_1, ..., b_n) ~ Dirichlet(alpha, ..., alpha),      n = width
        ch_i = op_{i,l_i} o ... o op_{i,1},                   l_i ~ Uniform{1, ..., max_depth}
        op_{i,j} ~ Uniform(AUGMIX_OPERATIONS),  level SampLevel_{i,j} / 10 * MaxVal,
                                                SampLevel_{i,j} ~ U(0.1, severity)      (2)
        x_aug = sum_i b_i ch_i(x)                                                        (3)
        m ~ Beta(alpha, alpha)
        x_augmix = m x + (1 - m) x_aug                                                   (4)

    Rotate, shear and translate go either way with probability 1/2 each. MaxVal: rotate 30
    degrees; shear 0.3; translate a third of the side; posterize keeps ``4 - floor(4 *
    SampLevel / 10)`` bits; solarize inverts values above ``1 - SampLevel / 10`` of the
    range. Autocontrast (min-max stretch per channel) and equalize (rank equalisation per
    channel) have no level. The operations run on values rescaled to ``[0, 1]`` and the
    result is mapped back to ``value_range``.

    The batch is vectorised: at each chain position the images that drew the same
    operation go through it in one call.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` floating point, values in ``value_range``; any device.
    severity : float
        ``s`` of equation (2), ``0.1 <= s <= 10``; MaxVal is approached at ``s = 10``.
    generator : torch.Generator
        A CPU generator: every random draw (operations, levels, signs, chain lengths,
        Dirichlet and Beta weights) comes from it, so a seeded generator reproduces the
        augmentation whatever device the images are on.
    width : int
        Number of chains ``n`` (3 in the paper).
    max_depth : int
        Chain lengths are uniform on ``1..max_depth`` (3 in the paper).
    alpha : float
        Concentration of the Dirichlet chain weights and of the Beta skip weight.
    value_range : tuple of float
        ``(lo, hi)``: the values that black and white stand for.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``images``, values in ``value_range``.

    Raises
    ------
    ValueError
        On a severity outside ``[0.1, 10]``, ``width < 1``, ``max_depth < 1``, ``alpha <= 0``,
        a bad ``value_range``, images that are not a floating 4-D batch or lie outside
        ``value_range``, or a generator that is not on the CPU.
    """
    lo, hi = _check_augmix_arguments(
        severity=severity, width=width, max_depth=max_depth, alpha=alpha, value_range=value_range
    )
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a floating (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
        )
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    n, c, h, w = images.shape
    if n == 0:
        return images.clone()
    span = hi - lo
    # The operations read values as fractions of the range (black 0, white 1); data outside
    # it would be solarised, posterised and stretched as nonsense rather than fail.
    tol = 1e-5 * span
    if float(images.amin()) < lo - tol or float(images.amax()) > hi + tol:
        raise ValueError(
            f"images lie in [{float(images.amin()):.4g}, {float(images.amax()):.4g}], outside "
            f"value_range {value_range}; pass the range the data is in"
        )
    device = images.device
    # Half precision: grid_sample lacks CPU kernels and the histogram counts would round; work in float32.
    work_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32

    # All draws first, on the CPU, in a fixed order; unused slots of short chains are drawn
    # too so that the stream consumed does not depend on the chain lengths.
    width, max_depth = int(width), int(max_depth)
    rows = n * width
    chain_weights = _dirichlet(alpha, n, width, generator)  # (n, width)
    skip = _dirichlet(alpha, n, 2, generator)[:, 0]  # Beta(alpha, alpha) = first of Dirichlet(alpha, alpha)
    depth = torch.randint(1, max_depth + 1, (rows,), generator=generator)
    ops = torch.randint(0, len(AUGMIX_OPERATIONS), (rows, max_depth), generator=generator)
    samp_level = 0.1 + (severity - 0.1) * torch.rand(rows, max_depth, generator=generator, dtype=torch.float64)
    sign = torch.randint(0, 2, (rows, max_depth), generator=generator, dtype=torch.float64) * 2.0 - 1.0
    level = sign * samp_level / 10.0  # signed fraction of MaxVal, eq. (2)

    x01 = ((images.to(work_dtype) - lo) / span).clamp(0.0, 1.0)
    chains = x01.unsqueeze(1).expand(n, width, c, h, w).reshape(rows, c, h, w).clone()
    for position in range(max_depth):
        # -1 marks chains that already ended; sorting groups the rows by operation.
        op_here = torch.where(depth > position, ops[:, position], torch.full_like(depth, -1))
        order = torch.argsort(op_here, stable=True)
        counts = torch.bincount(op_here + 1, minlength=len(AUGMIX_OPERATIONS) + 1).tolist()
        start = counts[0]
        for k, name in enumerate(AUGMIX_OPERATIONS):
            count = counts[k + 1]
            if count == 0:
                continue
            idx = order[start : start + count]
            start += count
            idx_dev = idx.to(device)
            # Levels stay on the CPU: the operations build their small parameter tensors there.
            out = _OPERATIONS[name](chains.index_select(0, idx_dev), level[idx, position])
            chains.index_copy_(0, idx_dev, out.to(work_dtype))

    b = chain_weights.to(device=device, dtype=work_dtype).reshape(n, width, 1, 1, 1)
    x_aug = (b * chains.reshape(n, width, c, h, w)).sum(dim=1)
    m = skip.to(device=device, dtype=work_dtype).reshape(n, 1, 1, 1)
    mixed = (m * x01 + (1.0 - m) * x_aug).clamp(0.0, 1.0)  # clamp: float rounding only
    return (lo + span * mixed).clamp(lo, hi).to(images.dtype)


# --------------------------------------------------------------------------- JS consistency


def jensen_shannon_consistency(
    logits_orig: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor
) -> torch.Tensor:
    """Jensen-Shannon divergence of three predictive distributions (equation 6), batch mean.

    With ``p_k = softmax(logits_k)`` per sample and ``q = (p_orig + p_aug1 + p_aug2) / 3``::

        D_JS = (KL(p_orig || q) + KL(p_aug1 || q) + KL(p_aug2 || q)) / 3,
        KL(p || q) = sum_c p_c (log p_c - log q_c)

    per sample, averaged over the batch. ``0 <= D_JS <= log 3`` (and ``<= log C`` for ``C``
    classes, since ``D_JS = H(q) - mean_k H(p_k)``); it is 0 exactly when the three
    distributions agree.

    Numerics: ``log p_k`` come from ``log_softmax``, and ``log q`` from ``logsumexp`` over the
    three ``log p_k`` minus ``log 3``, so no probability is exponentiated and logged again;
    ``log q`` is then clamped at the smallest normal float so that a class every
    distribution gives zero mass cannot produce ``-inf``. Each term ``log p_k - log q`` is
    at most ``log 3``. Differentiable in all three inputs.

    Parameters
    ----------
    logits_orig, logits_aug1, logits_aug2 : torch.Tensor
        ``(N, C)`` logits of the original images and their two AugMix views.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    shapes = {tuple(t.shape) for t in (logits_orig, logits_aug1, logits_aug2)}
    if len(shapes) != 1 or logits_orig.ndim != 2:
        raise ValueError(
            "logits_orig, logits_aug1 and logits_aug2 must all be (N, C) of one shape, got "
            f"{tuple(logits_orig.shape)}, {tuple(logits_aug1.shape)}, {tuple(logits_aug2.shape)}"
        )
    if logits_orig.shape[0] == 0:
        raise ValueError("logits_orig is an empty batch")
    log_p = torch.stack([torch.log_softmax(t, dim=1) for t in (logits_orig, logits_aug1, logits_aug2)])
    log_q = torch.logsumexp(log_p, dim=0) - math.log(3.0)
    log_q = log_q.clamp_min(math.log(torch.finfo(log_q.dtype).tiny))
    kl = (log_p.exp() * (log_p - log_q.unsqueeze(0))).sum(dim=2)  # (3, N)
    return kl.mean(dim=0).mean()


# --------------------------------------------------------------------------- loss scaling


@dataclass(frozen=True)
class LossScaling:
    """Fed-AugMix's loss-scaling rule (section IV-E) for the weight ``lambda`` of ``D_JS``::

        lambda = large_weight   if L_c > scale * D_JS
                 base_weight    otherwise

    Early in training (an untrained model: ``L_c`` near ``1e5 D_JS`` in the paper) the large
    weight makes the consistency term, and the augmentation noise it carries into the
    gradient, big enough to hinder gradient-leakage attacks; once ``D_JS`` is no longer
    negligible beside ``L_c`` the weight falls back so that classification drives training.

    The paper says that otherwise "lambda retains its previous value", and also that lambda
    is *reduced* in later stages. Read literally (sticky), lambda could never come back down
    once it had been raised, contradicting the second statement; "previous value" is read
    here as the configured base lambda, so the rule is re-evaluated at every step.

    Attributes
    ----------
    base_weight : float
        lambda (50 in section V).
    large_weight : float
        LargeVal (5e3).
    scale : float
        Scale (5e4), the condition's sensitivity.
    """

    base_weight: float = 50.0
    large_weight: float = 5e3
    scale: float = 5e4

    def __post_init__(self) -> None:
        # A zero weight is a meaningful ablation (no consistency term); a negative one would
        # reward divergence.
        for name in ("base_weight", "large_weight"):
            value = getattr(self, name)
            if not (isinstance(value, Real) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not (isinstance(self.scale, Real) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {self.scale!r}")

    @classmethod
    def constant(cls, weight: float) -> LossScaling:
        """A constant ``lambda = weight``: ``large_weight == base_weight``, so the rule never
        changes anything."""
        return cls(base_weight=weight, large_weight=weight)

    @property
    def is_constant(self) -> bool:
        return self.large_weight == self.base_weight

    def uses_large_weight(self, *, classification_loss: float, divergence: float) -> bool:
        """Whether the rule raises lambda: ``L_c > scale * D_JS`` and the weights differ."""
        return (not self.is_constant) and classification_loss > self.scale * divergence

    def weight(self, *, classification_loss: float, divergence: float) -> float:
        """``large_weight`` if ``classification_loss > scale * divergence``, else ``base_weight``."""
        if self.uses_large_weight(classification_loss=classification_loss, divergence=divergence):
            return float(self.large_weight)
        return float(self.base_weight)


# --------------------------------------------------------------------------- objective


class FedAugMixObjective:
    """Fed-AugMix's client loss (Algorithm 1, lines 4-9) as a ``LocalObjective``::

        x_1 = AugMix(x),  x_2 = AugMix(x)                  (independent draws, no gradient)
        o, o_1, o_2 = split(f(w, cat[x, x_1, x_2]))
        L = soft_CE(o, y) + lambda * D_JS(o; o_1; o_2)     (5)

    with ``lambda = scaling.weight(classification_loss=L_c, divergence=D_JS)`` (section IV-E).
    The three views go through the model in one forward pass, as in the AugMix reference
    code, so that BatchNorm normalises them with shared batch statistics. ``y`` may be
    class indices or soft labels.

    Parameters
    ----------
    sample_shape : tuple of int
        ``(C, H, W)`` of one image; a batch ``xb`` may hold each sample flat (digits rows are
        ``(B, 64)`` with ``sample_shape = (1, 8, 8)``) or in any shape with that many values.
    severity, generator, width, max_depth, alpha, value_range
        As for :func:`augmix`; ``generator`` is consumed by every call.
    scaling : LossScaling
        The lambda rule; ``LossScaling.constant(w)`` for a fixed weight.

    Attributes
    ----------
    steps : int
        Batches seen.
    large_weight_steps : int
        Batches on which the rule raised lambda to ``scaling.large_weight``.
    last_weight, last_divergence, last_classification_loss : float
        lambda, ``D_JS`` and ``L_c`` of the latest batch (``nan`` before the first).
    """

    def __init__(
        self,
        *,
        sample_shape: tuple[int, ...],
        severity: float,
        generator: torch.Generator,
        scaling: LossScaling = LossScaling(),
        width: int = 3,
        max_depth: int = 3,
        alpha: float = 1.0,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        shape = tuple(sample_shape)
        if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, Integral) or d < 1 for d in shape):
            raise ValueError(f"sample_shape must be (C, H, W) of positive integers, got {sample_shape!r}")
        shape = tuple(int(d) for d in shape)
        _check_augmix_arguments(
            severity=severity, width=width, max_depth=max_depth, alpha=alpha, value_range=value_range
        )
        if not isinstance(scaling, LossScaling):
            raise ValueError(f"scaling must be a LossScaling, got {type(scaling).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
        self.sample_shape = shape
        self.severity = severity
        self.generator = generator
        self.scaling = scaling
        self.width = width
        self.max_depth = max_depth
        self.alpha = alpha
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.steps = 0
        self.large_weight_steps = 0
        self.last_weight = math.nan
        self.last_divergence = math.nan
        self.last_classification_loss = math.nan

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        return augmix(
            images,
            severity=self.severity,
            generator=self.generator,
            width=self.width,
            max_depth=self.max_depth,
            alpha=self.alpha,
            value_range=self.value_range,
        )

    def __call__(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        per_sample = math.prod(self.sample_shape)
        if xb.ndim < 1 or xb.shape[0] == 0 or math.prod(xb.shape[1:]) != per_sample:
            raise ValueError(
                f"xb of shape {tuple(xb.shape)} does not hold samples of sample_shape "
                f"{self.sample_shape} ({per_sample} values each)"
            )
        b = xb.shape[0]
        with torch.no_grad():
            images = xb.detach().reshape(b, *self.sample_shape)
            aug1 = self._augment(images).reshape(xb.shape)
            aug2 = self._augment(images).reshape(xb.shape)
        logits = model(torch.cat([xb, aug1, aug2]))
        logits_orig, logits_aug1, logits_aug2 = logits.split(b)
        classification = soft_cross_entropy(logits_orig, yb)
        divergence = jensen_shannon_consistency(logits_orig, logits_aug1, logits_aug2)
        l_c, d_js = classification.item(), divergence.item()
        large = self.scaling.uses_large_weight(classification_loss=l_c, divergence=d_js)
        weight = self.scaling.weight(classification_loss=l_c, divergence=d_js)
        self.steps += 1
        self.large_weight_steps += int(large)
        self.last_weight = weight
        self.last_divergence = d_js
        self.last_classification_loss = l_c
        return classification + weight * divergence

    def summary(self) -> dict[str, float]:
        """Counters for reporting: ``steps``, ``large_weight_steps``, ``large_weight_share``
        (their ratio, 0 before the first step), ``last_weight``, ``last_divergence``,
        ``last_classification_loss``."""
        return {
            "steps": float(self.steps),
            "large_weight_steps": float(self.large_weight_steps),
            "large_weight_share": self.large_weight_steps / self.steps if self.steps else 0.0,
            "last_weight": self.last_weight,
            "last_divergence": self.last_divergence,
            "last_classification_loss": self.last_classification_loss,
        }
