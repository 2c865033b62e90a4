"""Evaluation of attacks against the private originals (experimenter side, never the attacker).

Everything here needs the party's private originals, so it is an *evaluation* of an attack,
outside the threat model: attacks themselves only see
:class:`~attacks.threat_model.ObservedRelease` and
:class:`~attacks.threat_model.AttackerKnowledge`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from common.leakage import nearest_source_rate

from .metrics import psnr, snr_db, ssim, summarise
from .threat_model import ObservedRelease, Reconstruction

__all__ = ["ReconstructionScores", "evaluate_reconstruction", "reconstruction_scores", "reidentification_rate"]


@dataclass(frozen=True)
class ReconstructionScores:
    """Per-sample scores of one reconstruction, with their summaries.

    Attributes
    ----------
    method : str
        The attack's name.
    snr_db, psnr : torch.Tensor
        Float64 ``(n,)``, higher is better for the attacker.
    ssim : torch.Tensor or None
        Float64 ``(n,)``, higher is better; ``None`` for 1-D samples (not images).
    lpips : torch.Tensor or None
        ``(n,)``, lower is better; ``None`` without a metric or for 1-D samples.
    lpips_calibrated : bool or None
        The metric's ``calibrated`` flag (``None`` without LPIPS).
    summary : dict
        ``{"snr_db": summarise(...), ...}`` for every score computed; ``best`` is the
        attacker's best (max SNR/PSNR/SSIM, min LPIPS).
    """

    method: str
    snr_db: torch.Tensor
    psnr: torch.Tensor
    ssim: torch.Tensor | None
    lpips: torch.Tensor | None
    lpips_calibrated: bool | None
    summary: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_reconstruction(
    reconstruction: Reconstruction,
    originals: torch.Tensor,
    *,
    data_range,
    lpips=None,
) -> ReconstructionScores:
    """Score ``reconstruction.x[i]`` against ``originals[i]`` (row ``i`` <-> private sample ``i``).

    Parameters
    ----------
    reconstruction : Reconstruction
        An attack's output, ``(n, *sample_shape)``.
    originals : torch.Tensor
        The party's private inputs in the same order and space, any shape with the same
        number of values per row (flat rows are reshaped to the reconstruction's shape).
    data_range : float or sequence of float
        Width of the valid value range (one per channel for normalised images), for PSNR
        and SSIM.
    lpips : LpipsMetric, optional
        Adds per-sample LPIPS (images with 1 or 3 channels only).
    """
    estimate = reconstruction.x.detach().cpu()
    n = estimate.shape[0]
    if originals.shape[0] != n or originals[0].numel() != estimate[0].numel():
        raise ValueError(f"originals {tuple(originals.shape)} do not match the reconstruction {tuple(estimate.shape)}")
    truth = originals.detach().cpu().reshape(estimate.shape).to(estimate.dtype)
    is_image = estimate.ndim in (3, 4)
    scores = {"snr_db": snr_db(truth, estimate), "psnr": psnr(truth, estimate, data_range=data_range)}
    scores["ssim"] = ssim(truth, estimate, data_range=data_range) if is_image else None
    scores["lpips"] = lpips(estimate, truth) if (lpips is not None and is_image) else None
    summary = {
        name: summarise(values, higher_is_better=(name != "lpips"))
        for name, values in scores.items()
        if values is not None
    }
    return ReconstructionScores(
        method=reconstruction.method,
        snr_db=scores["snr_db"],
        psnr=scores["psnr"],
        ssim=scores["ssim"],
        lpips=scores["lpips"],
        lpips_calibrated=None if scores["lpips"] is None else bool(getattr(lpips, "calibrated", False)),
        summary=summary,
    )


def reidentification_rate(observed: ObservedRelease, originals: torch.Tensor, partner: torch.Tensor) -> float:
    """Share of released rows whose nearest original is one of their two sources.

    This is an *evaluation* (it uses the party's private originals and the true partner
    graph), not an attack. For every released row ``x~_i`` the nearest row of
    ``originals`` in Euclidean distance (flattened, over all the party's originals) is
    found; the row counts as re-identified when that nearest original is ``i`` or
    ``partner[i]`` (its own sample or its partner). A release that hides its sources
    scores near the chance level ``2 / n``.
    """
    # One implementation, shared with the parties' own measurement in every run summary.
    return nearest_source_rate(originals.detach().cpu(), observed.x.detach().cpu(), torch.as_tensor(partner).cpu())


# -- gradient inversion's batch scores ---------------------------------------------------------


def reconstruction_scores(original: torch.Tensor, estimate: torch.Tensor, *, data_range: float) -> dict[str, float]:
    """Mean MSE, PSNR (dB) and SSIM of a reconstructed batch, paired by index and matched.

    ``original`` and ``estimate`` are ``(B, *sample_shape)``. The index pairing (row ``i``
    against original ``i``) is the natural one since the labels are known and the attack
    keeps their order; samples sharing a label can nevertheless come out permuted, so the
    ``*_matched`` scores use the assignment of reconstructions to originals that minimises
    the total MSE (:func:`scipy.optimize.linear_sum_assignment`). PSNR and SSIM are the
    per-sample values of :mod:`attacks.metrics` averaged over the batch; SSIM is ``nan`` for
    samples that are not images (fewer than two axes).

    ``mse_centred`` and ``psnr_centred`` (index pairing) compare ``x_i - mean_j x_j`` with
    ``x^_i - mean_j x^_j``: the batch with its own mean image removed. A model whose first
    layer is ``Linear -> BatchNorm`` (:class:`common.model.MixupClassifier` with
    ``norm="batch"``) has a parameter update that is exactly invariant to a common shift
    ``x_i -> x_i + b`` of the whole batch (BatchNorm removes ``W b``, and the first-layer
    weight gradient ``sum_i delta_i x_i^T`` has ``sum_i delta_i = 0``), and nearly invariant
    to a common scale; the batch mean is then not identifiable from the parameters (only
    from the BatchNorm buffers, which
    :class:`~attacks.gradient_inversion.InvertingGradientsAttack` ignores), and the
    centred scores measure what is.

    Returns
    -------
    dict
        ``mse``, ``psnr``, ``ssim``, ``mse_matched``, ``psnr_matched``, ``ssim_matched``,
        ``mse_centred``, ``psnr_centred`` and ``matched_in_place`` (fraction of rows the
        matching leaves at their index).
    """
    from scipy.optimize import linear_sum_assignment

    if original.shape != estimate.shape:
        raise ValueError(f"original {tuple(original.shape)} and estimate {tuple(estimate.shape)} differ in shape")
    if original.ndim < 2 or original.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch (B, *sample_shape), got shape {tuple(original.shape)}")
    x = original.detach().to("cpu", torch.float64)
    x_hat = estimate.detach().to("cpu", torch.float64)
    b = x.shape[0]
    images = x.ndim in (3, 4)

    def scores(est: torch.Tensor) -> tuple[float, float, float]:
        mse = (x - est).flatten(1).square().mean(1)
        p = summarise(psnr(x, est, data_range=data_range))["mean"]
        s = summarise(ssim(x, est, data_range=data_range))["mean"] if images else math.nan
        return float(mse.mean()), p, s

    cost = (x_hat.reshape(b, 1, -1) - x.reshape(1, b, -1)).square().mean(2)  # cost[j, i]: estimate j vs original i
    rows, cols = linear_sum_assignment(cost.numpy())
    matched = torch.empty_like(x_hat)
    matched[torch.as_tensor(cols)] = x_hat[torch.as_tensor(rows)]
    mse, p, s = scores(x_hat)
    mse_m, p_m, s_m = scores(matched)
    x_c, x_hat_c = x - x.mean(0, keepdim=True), x_hat - x_hat.mean(0, keepdim=True)
    mse_c = (x_c - x_hat_c).flatten(1).square().mean(1)
    p_c = summarise(psnr(x_c, x_hat_c, data_range=data_range))["mean"]
    return {
        "mse": mse,
        "psnr": p,
        "ssim": s,
        "mse_matched": mse_m,
        "psnr_matched": p_m,
        "ssim_matched": s_m,
        "mse_centred": float(mse_c.mean()),
        "psnr_centred": p_c,
        "matched_in_place": float((torch.as_tensor(rows) == torch.as_tensor(cols)).double().mean()),
    }
