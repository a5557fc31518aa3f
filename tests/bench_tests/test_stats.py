"""bench.stats: the interval on a ratio of SDs (bench.signal's whole-space ratio)."""

from __future__ import annotations

import math

import pytest

from bench.stats import sd_ratio_interval


def test_the_interval_is_the_f_distributions():
    stats = pytest.importorskip("scipy.stats")
    lo, hi = sd_ratio_interval(3.0, 100, 8)
    assert lo == pytest.approx(3.0 / math.sqrt(stats.f.ppf(0.95, 100, 8)), rel=0.01)
    assert hi == pytest.approx(3.0 / math.sqrt(stats.f.ppf(0.05, 100, 8)), rel=0.01)


def test_few_seeds_give_a_wide_interval_around_the_ratio():
    narrow, wide = sd_ratio_interval(3.0, 140, 200), sd_ratio_interval(3.0, 140, 6)
    assert narrow[0] < 3.0 < narrow[1] and wide[0] < 3.0 < wide[1]
    assert wide[1] - wide[0] > 3 * (narrow[1] - narrow[0])


def test_no_degrees_of_freedom_give_no_interval():
    assert all(math.isnan(x) for x in sd_ratio_interval(3.0, 140, 0))
    assert all(math.isnan(x) for x in sd_ratio_interval(math.nan, 140, 6))
