"""Spreads over seeds and differences of means (Δ), and how the tables print them.

Every mean ± std in the report is over the seeds of one configuration, with the sample
standard deviation (divisor n - 1, :func:`common.stats.describe` with ``ddof = 1``): the seeds
are a sample of the repeated experiment. A single seed has no spread; the tables say "(1 seed)"
and the CSVs leave the std cell empty (:func:`sample_std`). Signs of Δ are judged on the two
decimals the tables print (:func:`rounded_delta`).
"""

from __future__ import annotations

from collections.abc import Iterable

from common.stats import Interval, Spread, describe, t_interval

__all__ = ["format_delta", "format_interval", "format_mean_std", "format_spread", "format_wall", "mean_delta",
           "rounded_delta", "sample_std", "seed_interval", "seed_spread"]


def seed_spread(values: Iterable[float]) -> Spread | None:
    """Mean and sample std (n - 1) of one configuration's values over seeds; None for none.

    Non-finite values are kept, so that a diverged run shows as ``nan`` instead of silently
    shrinking the seed count.
    """
    return describe(values, ddof=1, finite_only=False)


def sample_std(spread: Spread) -> float | None:
    """The spread's std, or None for a single seed (where no spread was measured)."""
    return spread.std if spread.n > 1 else None


def mean_delta(minuend: Spread | None, subtrahend: Spread | None) -> float | None:
    """``minuend.mean - subtrahend.mean``, or None when either is missing."""
    if minuend is None or subtrahend is None:
        return None
    return minuend.mean - subtrahend.mean


def rounded_delta(delta: float) -> float:
    """Δ rounded to the two decimals the tables print (never ``-0.0``)."""
    # Signs are judged on the two decimals the table prints, so the count below the table
    # never disagrees with what a reader sees in the Δ column.
    rounded = round(delta, 2)
    return 0.0 if rounded == 0 else rounded


def format_delta(delta: float | None) -> str:
    """Δ with its sign and two decimals; "0.00" when it rounds to zero, "–" when missing."""
    if delta is None:
        return "–"
    rounded = rounded_delta(delta)
    return "0.00" if rounded == 0 else f"{rounded:+.2f}"


def format_mean_std(mean: float, std: float | None, n: int, *, expected_n: int | None = None) -> str:
    """``mean ± std`` with two decimals; a single seed (``std`` None) and a seed count other
    than ``expected_n`` are said in the cell."""
    if std is None:
        return f"{mean:.2f} ± 0.00 (1 seed)"
    text = f"{mean:.2f} ± {std:.2f}"
    if expected_n is not None and n != expected_n:
        text += f" ({n} seeds)"
    return text


def format_spread(spread: Spread | None, *, expected_n: int | None = None) -> str:
    """A table cell for :func:`seed_spread`'s result ("–" for no runs)."""
    if spread is None:
        return "–"
    return format_mean_std(spread.mean, sample_std(spread), spread.n, expected_n=expected_n)


def format_wall(mean: float | None, std: float | None) -> str:
    """Wall time in seconds, one decimal, ``± std`` where several seeds ran."""
    if mean is None:
        return "–"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def seed_interval(values: Iterable[float], *, confidence: float = 0.95) -> Interval | None:
    """Mean and t interval over seeds (:func:`common.stats.t_interval`)."""
    return t_interval(values, confidence=confidence)


def format_interval(interval: Interval | None, *, signed: bool = False, expected_n: int | None = None) -> str:
    """``mean [low, high]`` with two decimals; one seed says "(1 seed, no interval)"."""
    if interval is None:
        return "–"
    mean = f"{interval.mean:+.2f}" if signed else f"{interval.mean:.2f}"
    if interval.n < 2:
        return f"{mean} (1 seed, no interval)"
    text = f"{mean} [{interval.low:.2f}, {interval.high:.2f}]"
    if expected_n is not None and interval.n != expected_n:
        text += f" ({interval.n} seeds)"
    return text
