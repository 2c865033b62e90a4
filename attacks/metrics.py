"""Per-sample reconstruction metrics: SNR (dB), PSNR, SSIM, and a summary helper.

All functions take ``original`` and ``estimate`` of the same shape ``(n, ...)`` and return
a float64 tensor of shape ``(n,)``: one value per sample. They are evaluation tools: they
need the private originals and are never called by an attack.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["psnr", "snr_db", "ssim", "summarise"]

# Values per chunk of samples processed at once by ssim (float64 temporaries).
_SSIM_CHUNK_VALUES = 2**22


def _pair(original: torch.Tensor, estimate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if original.shape != estimate.shape:
        raise ValueError(f"original {tuple(original.shape)} and estimate {tuple(estimate.shape)} differ in shape")
    if original.ndim < 2:
        raise ValueError(f"expected a batch (n, ...) of samples, got shape {tuple(original.shape)}")
    return original.detach().to(torch.float64), estimate.detach().to(torch.float64)


def snr_db(original: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    r"""Signal-to-noise ratio of each estimate, in dB.

    .. math:: \mathrm{SNR}_i = 10 \log_{10} \frac{\lVert x_i \rVert_2^2}{\lVert x_i - \hat x_i \rVert_2^2}

    over the flattened sample; ``+inf`` for an exact estimate. Note that the value depends
    on where zero is (it is computed in whatever space the tensors live in, e.g. normalised
    pixels).
    """
    x, x_hat = _pair(original, estimate)
    signal = x.flatten(1).square().sum(1)
    error = (x - x_hat).flatten(1).square().sum(1)
    return 10.0 * (torch.log10(signal) - torch.log10(error))


def _per_channel(data_range, channels: int, *, name: str = "data_range") -> torch.Tensor:
    """``data_range`` as a float64 vector of one positive width per channel."""
    values = torch.as_tensor(data_range, dtype=torch.float64).reshape(-1)
    if values.numel() == 1:
        values = values.expand(channels)
    elif values.numel() != channels:
        raise ValueError(f"{name} needs 1 or {channels} (one per channel) values, got {values.numel()}")
    if not bool((values > 0).all()) or not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} must be positive and finite, got {data_range}")
    return values


def psnr(original: torch.Tensor, estimate: torch.Tensor, *, data_range) -> torch.Tensor:
    r"""Peak signal-to-noise ratio of each estimate, in dB.

    .. math:: \mathrm{PSNR}_i = 10 \log_{10} \frac{L^2}{\operatorname{mean}(x_i - \hat x_i)^2}

    Parameters
    ----------
    data_range : float or sequence of float
        Width ``L = hi - lo`` of the valid value range. One value per channel (axis 1 of
        image batches ``(n, C, H, W)``) is accepted for normalised images: the error is
        then divided by its channel's width and the peak is 1, i.e. PSNR in the ``[0, 1]``
        pixel scale.
    """
    x, x_hat = _pair(original, estimate)
    widths = torch.as_tensor(data_range, dtype=torch.float64).reshape(-1)
    if widths.numel() == 1:
        L = _per_channel(widths, 1)[0]
        mse = (x - x_hat).flatten(1).square().mean(1)
        return 10.0 * (2 * torch.log10(L) - torch.log10(mse))
    if x.ndim < 3:
        raise ValueError("a per-channel data_range needs samples shaped (C, ...)")
    L = _per_channel(widths, x.shape[1]).reshape(1, -1, *([1] * (x.ndim - 2)))
    mse = ((x - x_hat) / L).flatten(1).square().mean(1)
    return -10.0 * torch.log10(mse)


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-coords.square() / (2 * sigma**2))
    return kernel / kernel.sum()


def _as_images(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim == 4:
        return x
    raise ValueError(f"ssim needs images (n, C, H, W) or (n, H, W), got shape {tuple(x.shape)}")


def ssim(
    original: torch.Tensor,
    estimate: torch.Tensor,
    *,
    data_range,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    r"""Structural similarity (Wang et al., 2004) of each estimate to its original.

    Local statistics are Gaussian-weighted means over a ``window x window`` window
    (standard deviation ``sigma``, weights summing to 1), evaluated at every position where
    the window fits entirely inside the image ("valid" positions, no padding):

    .. math::

        \mathrm{SSIM}(x, y) = \frac{(2 \mu_x \mu_y + C_1)(2 \sigma_{xy} + C_2)}
                                   {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
        \quad C_1 = (K_1 L)^2,\; C_2 = (K_2 L)^2,\; K_1 = 0.01,\; K_2 = 0.03,

    with biased (weighted) variances. The map is averaged over positions per channel, then
    over channels.

    Images smaller than the window (e.g. the 8x8 digits with the default 11) use a window
    clipped to the image: ``min(window, H) x min(window, W)`` taps of the same Gaussian
    (same ``sigma``, centred, renormalised), so such an image has a single window position
    and SSIM is computed from its global, Gaussian-weighted statistics. This differs from
    implementations that pad or refuse small images; it is stated in reports through this
    docstring.

    Parameters
    ----------
    original, estimate : torch.Tensor
        Images ``(n, C, H, W)`` or ``(n, H, W)``.
    data_range : float or sequence of float
        Width ``L`` of the value range, or one width per channel (normalised images).
    window : int
        Side of the Gaussian window (11 in the standard definition).
    sigma : float
        Standard deviation of the Gaussian window, in pixels.

    Returns
    -------
    torch.Tensor
        Float64 ``(n,)``; 1 for identical images, symmetric in its two arguments.
    """
    if window < 1 or sigma <= 0:
        raise ValueError(f"window must be >= 1 and sigma > 0, got {window}, {sigma}")
    x, y = _pair(original, estimate)
    x, y = _as_images(x), _as_images(y)
    n, c, h, w = x.shape
    L = _per_channel(data_range, c)
    c1 = (0.01 * L).square().reshape(1, c, 1, 1)
    c2 = (0.03 * L).square().reshape(1, c, 1, 1)
    kh, kw = min(window, h), min(window, w)
    gh = _gaussian(kh, sigma).reshape(1, 1, kh, 1).expand(c, 1, kh, 1).contiguous()
    gw = _gaussian(kw, sigma).reshape(1, 1, 1, kw).expand(c, 1, 1, kw).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gw, groups=c)

    out = torch.empty(n, dtype=torch.float64)
    step = max(1, _SSIM_CHUNK_VALUES // max(c * h * w, 1))
    for start in range(0, n, step):
        a, b = x[start:start + step], y[start:start + step]
        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a * mu_a
        var_b = blur(b * b) - mu_b * mu_b
        cov = blur(a * b) - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
        den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
        out[start:start + step] = (num / den).mean(dim=(2, 3)).mean(dim=1)
    return out


def summarise(values, *, higher_is_better: bool = True) -> dict[str, float]:
    """Mean, standard deviation, min, max and best of per-sample values.

    ``std`` is the population standard deviation (divisor ``n``; 0 for a single value).
    ``best`` is ``max`` when ``higher_is_better`` (SNR, PSNR, SSIM) and ``min`` otherwise
    (LPIPS). Non-finite values (an exact reconstruction has ``SNR = +inf``) are kept, so
    they show in the mean; ``count`` gives the number of values.
    """
    t = torch.as_tensor(values, dtype=torch.float64).detach().reshape(-1)
    if t.numel() == 0:
        nan = math.nan
        return {"mean": nan, "std": nan, "min": nan, "max": nan, "best": nan, "count": 0}
    lo, hi = float(t.min()), float(t.max())
    return {
        "mean": float(t.mean()),
        "std": float(t.std(correction=0)) if t.numel() > 1 else 0.0,
        "min": lo,
        "max": hi,
        "best": hi if higher_is_better else lo,
        "count": int(t.numel()),
    }
