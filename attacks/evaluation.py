"""Evaluation of attacks against the private originals (experimenter side, never the attacker).

Everything here needs the party's private originals, so it is an *evaluation* of an attack,
outside the threat model: attacks themselves only see
:class:`~attacks.threat_model.ObservedRelease` and
:class:`~attacks.threat_model.AttackerKnowledge`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from common.leakage import nearest_source_rate

from .metrics import psnr, snr_db, ssim, summarise
from .threat_model import ObservedRelease, Reconstruction

__all__ = ["ReconstructionScores", "evaluate_reconstruction", "reidentification_rate"]



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
