"""Section 5.1's LPIPS post-filter: drop releases that still look like their own original.

Where this runs
---------------
The filter compares every released (singularized) image with *its own private original*,
so it runs on the **party side**, before anything is uploaded; it is a defence-side
post-processing step, not an attack, and deliberately lives outside the attack API of
:mod:`attacks.threat_model` (no attack may see originals).

Threshold
---------
The paper's text (sec. 5.1) discards samples "whose LPIPS is below 0.7", while the caption
of its Table 1 says ``LPIPS < 0.9``. The two disagree, so ``threshold`` is a required
argument: report which one was used. A sample is excluded when its distance is strictly
below the threshold (a distance equal to the threshold is kept); a NaN distance is excluded
(it cannot be shown to be far enough).

LPIPS values are only meaningful with the published backbone: ``FilterResult.calibrated``
carries the metric's ``calibrated`` flag so that reports can flag uncalibrated runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FilterResult", "lpips_filter"]

PAPER_THRESHOLD_TEXT = 0.7
PAPER_THRESHOLD_TABLE1 = 0.9


@dataclass(frozen=True)
class FilterResult:
    """Outcome of the post-filter on one party's release.

    Attributes
    ----------
    keep_mask : torch.Tensor
        Bool ``(n,)``: ``True`` for released rows that stay (distance >= threshold).
    excluded_fraction : float
        Share of rows dropped, in ``[0, 1]`` (Table 1 reports it in percent).
    distances : torch.Tensor
        LPIPS of every released row to its own original, ``(n,)``.
    threshold : float
        The threshold used.
    calibrated : bool
        Whether the metric used published LPIPS weights.
    """

    keep_mask: torch.Tensor
    excluded_fraction: float
    distances: torch.Tensor
    threshold: float
    calibrated: bool

    @property
    def excluded_percent(self) -> float:
        return 100.0 * self.excluded_fraction


def lpips_filter(released_images: torch.Tensor, originals: torch.Tensor, *, metric, threshold: float) -> FilterResult:
    """Party-side post-filter: exclude released rows whose LPIPS to their original is < ``threshold``.

    Parameters
    ----------
    released_images : torch.Tensor
        Released (mixed) images, ``(n, C, H, W)``; row ``i`` is paired with ``originals[i]``,
        the private sample that is its clean component.
    originals : torch.Tensor
        The party's private images, same shape.
    metric : LpipsMetric
        Called as ``metric(released_images, originals)``, returning ``(n,)`` distances; its
        ``calibrated`` attribute is passed through (``False`` if absent).
    threshold : float
        0.7 in the paper's text, 0.9 in its Table 1 caption; no default on purpose.
    """
    threshold = float(threshold)
    if released_images.shape != originals.shape:
        raise ValueError(f"released {tuple(released_images.shape)} and originals {tuple(originals.shape)} differ in shape")
    distances = torch.as_tensor(metric(released_images, originals)).detach().cpu().reshape(-1)
    n = released_images.shape[0]
    if distances.numel() != n:
        raise ValueError(f"metric returned {distances.numel()} distances for {n} images")
    keep = distances >= threshold  # strict "< threshold" is excluded; NaN compares False -> excluded
    excluded = float((~keep).sum()) / n if n else 0.0
    return FilterResult(
        keep_mask=keep,
        excluded_fraction=excluded,
        distances=distances,
        threshold=threshold,
        calibrated=bool(getattr(metric, "calibrated", False)),
    )
