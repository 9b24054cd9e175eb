"""The statistics a leaderboard owes each configuration: n, mean and std, the 95% confidence
interval of the mean (Student's t), a one-sided p-value for "mean >= target", and robust times.

SciPy's ``stats`` does the distributions (imported when first needed: it costs about a second).
With one seed there is no spread to estimate, so the interval and the p-value are ``None``
rather than a number that pretends to certainty. Times follow MLPerf Training's scoring: the
median, and with five or more runs the mean with the fastest and the slowest run dropped.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
TRIM_FROM = 5  # MLPerf: with at least five runs, drop the fastest and the slowest


@dataclass(frozen=True)
class Summary:
    """What ``summarize`` says of a sample of final accuracies (fractions of the test set)."""

    n: int
    mean: float
    std: float | None  # sample standard deviation (n - 1); None for n = 1
    ci_low: float | None  # the 95% confidence interval of the mean (Student's t)
    ci_high: float | None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """n, mean, std and the two-sided ``confidence`` interval of the mean of ``values``."""
    if not values:
        raise ValueError("no values to summarize")
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Summary(n, mean, None, None, None)
    from scipy import stats  # lazy: scipy (about a second to import)

    std = statistics.stdev(values)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def p_mean_at_least(values: Sequence[float], goal: float) -> float | None:
    """One-sided p-value of the t-test of "the mean reaches ``goal``" (H0: mean <= goal).

    Small means strong evidence that the configuration's true mean lies above the goal; 0.5 is a
    sample mean exactly at it. None with fewer than two values; with no spread at all, 0 or 1.
    """
    if len(values) < 2:
        return None
    mean, std = statistics.fmean(values), statistics.stdev(values)
    if std == 0:
        return 0.0 if mean > goal else 1.0
    from scipy import stats  # lazy: scipy

    t = (mean - goal) / (std / math.sqrt(len(values)))
    return float(stats.t.sf(t, len(values) - 1))


def median_seconds(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def trimmed_mean_seconds(values: Sequence[float]) -> float | None:
    """MLPerf's score: the mean without the fastest and slowest run, with at least ``TRIM_FROM`` runs."""
    if len(values) < TRIM_FROM:
        return None
    ordered = sorted(values)
    return statistics.fmean(ordered[1:-1])
