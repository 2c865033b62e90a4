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

__all__ = ["Interval", "Spread", "describe", "mean_max", "paired_differences", "t_interval"]


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


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval from Student's t over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def verdict(self) -> str:
        """``"ahead"`` when the whole interval is above 0, ``"behind"`` below 0, else
        ``"inconclusive"`` (a single value has no interval: inconclusive)."""
        if self.n < 2 or not math.isfinite(self.low) or not math.isfinite(self.high):
            return "inconclusive"
        if self.low > 0:
            return "ahead"
        if self.high < 0:
            return "behind"
        return "inconclusive"


def t_interval(values: Iterable[float], *, confidence: float = 0.95) -> Interval | None:
    """Mean and ``confidence`` interval ``mean ± t_{(1+c)/2, n-1} s / sqrt(n)`` (sample std
    ``s``); ``None`` for no values, an infinite interval for one value (no spread measured).

    The t interval assumes the values are independent draws of a roughly normal quantity:
    here, one run per seed of the same configuration (or one paired difference per seed).
    """
    from scipy.stats import t as student_t

    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    mean = statistics.fmean(vals)
    if len(vals) == 1:
        return Interval(mean=mean, low=-math.inf, high=math.inf, n=1, confidence=confidence)
    half = float(student_t.ppf((1 + confidence) / 2, len(vals) - 1)) * statistics.stdev(vals) / math.sqrt(len(vals))
    return Interval(mean=mean, low=mean - half, high=mean + half, n=len(vals), confidence=confidence)


def paired_differences(a: dict[object, float], b: dict[object, float]) -> list[float]:
    """``a[k] - b[k]`` for every key both hold (e.g. per seed: both arms saw the same
    partition, split and test set), in key order."""
    return [a[k] - b[k] for k in sorted(set(a) & set(b), key=str)]
