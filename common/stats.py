"""Summaries of a handful of numbers: mean, spread, extremes, and a 95 % interval.

One helper for every table of the platform. ``ddof`` is explicit because the two divisors
answer different questions: ``ddof = 0`` (population) describes the values at hand, e.g. the
parties of one run; ``ddof = 1`` (sample) estimates the spread of a repeated experiment, e.g.
runs over seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Spread", "describe", "mean_max"]


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation (with the stated divisor), extremes and count."""

    mean: float
    std: float
    min: float
    max: float
    n: int
    ddof: int

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max, "n": self.n}


def describe(values: Iterable[float | None], *, ddof: int, finite_only: bool = True) -> Spread | None:
    """Describe ``values``; ``None`` (and, with ``finite_only``, NaN/inf) are left out.

    Returns ``None`` when nothing is left. A single value has ``std = 0``.
    """
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (population) or 1 (sample), got {ddof}")
    vals = [float(v) for v in values if v is not None]
    if finite_only:
        vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return None
    if len(vals) == 1:
        std = 0.0
    elif not all(math.isfinite(v) for v in vals):
        std = math.nan  # statistics cannot take inf; the spread of such values is undefined
    else:
        std = statistics.pstdev(vals) if ddof == 0 else statistics.stdev(vals)
    return Spread(mean=statistics.fmean(vals), std=std, min=min(vals), max=max(vals), n=len(vals), ddof=ddof)


def mean_max(values: Iterable[float]) -> dict[str, float]:
    """Mean / max / min / population std of per-party figures (``{}`` for none); non-finite
    values are kept (a party's SNR bound may be inf), so they show."""
    spread = describe(values, ddof=0, finite_only=False)
    if spread is None:
        return {}
    return {"mean": spread.mean, "max": spread.max, "min": spread.min, "std": spread.std}
