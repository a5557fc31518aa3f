"""The speedup over the baseline, and what is said when it cannot be given."""

from __future__ import annotations

import pytest

from explorer.record import Outcome, TrialRecord
from explorer.speedup import speedup


def _r(number, tta=None, state=Outcome.COMPLETED, baseline=False, acc=0.5):
    return TrialRecord(number=number, state=state, tta_s=tta, tta_interp_s=tta and tta - 1,
                       best_val_accuracy=acc, baseline=baseline,
                       fixed={"name": "seed"} if baseline else {})


def test_baseline_tta_over_the_best_searched_tta():
    found = speedup([_r(0, 90.0, baseline=True), _r(1, 60.0), _r(2, 45.0), _r(3)], "tta_s")
    assert found is not None and found.best is not None
    assert found.ratio == pytest.approx(2.0) and found.best.number == 2
    assert found.describe().startswith("2.00× faster than the baseline (seed): 45.0 s vs 90.0 s")
    assert "unconfirmed" in found.describe()
    interp = speedup([_r(0, 90.0, baseline=True), _r(2, 45.0)], "tta_interp_s")
    assert interp is not None and interp.ratio == pytest.approx(89.0 / 44.0)


def test_what_is_said_without_a_figure():
    missed = speedup([_r(0, None, baseline=True, acc=0.41), _r(1, 50.0)], "tta_s")
    assert missed is not None and missed.ratio is None
    assert "the baseline (seed) missed the target (best accuracy 0.410)" in missed.describe()
    assert "best TTA 50.0 s (trial 1)" in missed.describe()
    behind = speedup([_r(0, 80.0, baseline=True), _r(1, 120.0)], "tta_s")
    assert behind is not None and behind.ratio == pytest.approx(80.0 / 120.0)
    assert "has not beaten the baseline (seed) yet: its best, trial 1, is 1.50× slower" in (
        behind.describe())
    nobody = speedup([_r(0, 80.0, baseline=True), _r(1, None)], "tta_s")
    assert nobody is not None and "no searched trial reached the target" in nobody.describe()
    failed = speedup([_r(0, None, state=Outcome.FAILED, baseline=True)], "tta_s")
    assert failed is not None and "did not finish" in failed.describe()
    assert speedup([_r(1, 50.0)], "tta_s") is None  # no baseline trial
    assert speedup([_r(0, 80.0, baseline=True)], "images_per_sec") is None


def test_lost_repeats_say_nothing_about_a_config():
    from explorer.confirm import groups

    lost = TrialRecord(number=5, state=Outcome.FAILED, reason="interrupted: the driver was "
                       "stopped", confirm_of=1)
    ran = TrialRecord(number=6, state=Outcome.COMPLETED, tta_s=50.0, confirm_of=1)
    (g,) = [g for g in groups([_r(1, 40.0), lost, ran], "tta_s") if g.root.number == 1]
    assert [r.number for r in g.runs] == [1, 6] and g.median == pytest.approx(45.0)
    behind = speedup([_r(0, 30.0, baseline=True), _r(1, 40.0), ran,
                      TrialRecord(number=7, state=Outcome.COMPLETED, tta_s=31.0, confirm_of=0,
                                  baseline=False)], "tta_s")
    assert behind is not None and behind.confirmed
    assert "slower than (the search has not beaten) the baseline" in behind.describe()
