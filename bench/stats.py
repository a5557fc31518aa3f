"""Intervals for the benchmarks' figures: medians and their ratios with percentile-bootstrap
intervals (every search figure in ``bench``), and a ratio of two SDs with the F distribution's
(``bench.signal``)."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_median", "bootstrap_ratio", "interval", "median", "sd_ratio_interval"]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def bootstrap_median(a: Sequence[float], *, level: float = 0.90, reps: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """median(a) with a percentile bootstrap interval at ``level``."""
    rng = random.Random(seed)
    draws = sorted(median(rng.choices(a, k=len(a))) for _ in range(reps))
    tail = (1.0 - level) / 2.0
    return (median(a), draws[int(tail * (reps - 1))], draws[int((1.0 - tail) * (reps - 1))])


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], *, level: float = 0.90,
                    reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """median(a) ÷ median(b) with a percentile bootstrap interval at ``level`` (each sample
    resampled on its own; ∞ ÷ ∞ draws are dropped)."""
    rng = random.Random(seed)

    def ratio(x: Sequence[float], y: Sequence[float]) -> float:
        mx, my = median(x), median(y)
        if math.isinf(mx) and math.isinf(my):
            return math.nan
        return math.inf if my == 0 else mx / my

    point = ratio(a, b)
    draws = sorted(r for r in (ratio(rng.choices(a, k=len(a)), rng.choices(b, k=len(b)))
                               for _ in range(reps)) if not math.isnan(r))
    if not draws:
        return point, math.nan, math.nan
    tail = (1.0 - level) / 2.0
    return (point, draws[int(tail * (len(draws) - 1))],
            draws[int((1.0 - tail) * (len(draws) - 1))])


def interval(v: tuple[float, float, float], digits: int = 0) -> str:
    def f(x: float) -> str:
        return "∞" if math.isinf(x) else "-" if math.isnan(x) else f"{x:.{digits}f}"
    return f"{f(v[0])} [{f(v[1])}, {f(v[2])}]"


def sd_ratio_interval(ratio: float, df_between: int, df_within: int,
                      level: float = 0.9) -> tuple[float, float]:
    """An interval for the ratio of two true SDs, from an observed ratio of sample SDs with
    ``df_between`` and ``df_within`` degrees of freedom: the F distribution's, as if log TTA were
    normal and the two samples independent (quantiles drawn from a fixed-seed simulation, so
    that no statistics library is needed)."""
    if not (df_between > 0 and df_within > 0 and math.isfinite(ratio)):
        return math.nan, math.nan
    rng = np.random.default_rng(0)
    n = 400_000
    f = (rng.chisquare(df_between, n) / df_between) / (rng.chisquare(df_within, n) / df_within)
    upper_f, lower_f = np.quantile(f, [(1 + level) / 2, (1 - level) / 2])
    return ratio / math.sqrt(float(upper_f)), ratio / math.sqrt(float(lower_f))
