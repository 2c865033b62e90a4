"""AugMix (Algorithm 2 of Fed-AugMix): random augmentation chains mixed with the image.

AugMix (Hendrycks et al., 2020) mixes ``n`` random augmentation chains of one image and
interpolates the mixture with the image itself::

    x_aug    = sum_{i=1..n} b_i ch_i(x),      (b_1, ..., b_n) ~ Dirichlet(alpha, ..., alpha)   (3)
    x_augmix = m x + (1 - m) x_aug,            m ~ Beta(alpha, alpha)                          (4)

where ``ch_i = op_l o ... o op_1`` has a length ``l ~ Uniform{1, ..., max_depth}`` and
operations drawn uniformly from :data:`AUGMIX_OPERATIONS`. Every application of an
operation draws its own level (equation 2)::

    AugLevel = SampLevel / 10 * MaxVal,        SampLevel ~ U(0.1, s)

with ``s`` the severity (``0.1 <= s <= 10``; ``MaxVal`` is approached at ``s = 10``).

The client's loss that uses these draws (the Jensen-Shannon consistency and its loss
scaling) is in :mod:`common.fed_augmix_loss`.

Everything here is plain tensor maths: the operations are re-implemented in PyTorch on float
tensors (no PIL), vectorised over a batch, and every random draw comes from the caller's CPU
``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

import torch
from torch.nn import functional as F


__all__ = ["AUGMIX_OPERATIONS", "augmix"]

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
