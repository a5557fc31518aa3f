from __future__ import annotations

from bench.common import verdict


def test_verdict_reads_the_direction_of_the_target():
    assert verdict(0.5, 0.5) == "<= 0.50 met"
    assert verdict(0.51, 0.5) == "<= 0.50 NOT met"
    assert verdict(0.95, 0.95, at_least=True) == ">= 0.95 met"
    assert verdict(0.686, 0.90, at_least=True) == ">= 0.90 NOT met"
