from __future__ import annotations

import math

import optuna

from bench.search import best_at, compute_to, curve
from explorer.study import spent_node_s


def _study():
    study = optuna.create_study()
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        "x": optuna.distributions.FloatDistribution(0, 1)}
    for i, (state, wall, tta, nodes) in enumerate([
        ("COMPLETE", 30.0, None, 1),   # missed the target
        ("PRUNED", 10.0, None, 1),
        ("COMPLETE", 20.0, 12.0, 2),
        ("FAIL", 5.0, None, 1),
        ("COMPLETE", 25.0, 9.0, 1),
    ]):
        study.add_trial(optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state), params={"x": i / 10},
            distributions=dist, value=1.0 if state == "COMPLETE" else None,
            user_attrs={"wall_s": wall, "tta_s": tta, "derived": {"nodes": nodes}}))
    return study


def test_curve_accumulates_compute_and_best_tta():
    points = curve(_study())
    assert points == [(30.0, math.inf), (40.0, math.inf), (80.0, 12.0), (85.0, 12.0),
                      (110.0, 9.0)]
    assert compute_to(points, 12.0 * 1.1) == 80.0
    assert compute_to(points, 9.9) == 110.0 and compute_to(points, 5.0) == math.inf
    assert best_at(points, 50.0) == math.inf and best_at(points, 90.0) == 12.0


def test_spent_node_seconds_weights_nodes():
    assert spent_node_s(_study()) == 30 + 10 + 40 + 5 + 25


def test_censored_ratio_is_an_upper_bound_when_the_baseline_never_got_there():
    from bench.search import censored_ratio
    assert censored_ratio(60.0, 120.0, 300.0) == (0.5, False)
    assert censored_ratio(60.0, math.inf, 300.0) == (0.2, True)
    assert censored_ratio(math.inf, 120.0, 300.0) == (math.inf, False)


def test_matched_ratio_uses_the_worse_final_best_as_the_common_target():
    from bench.search import matched_ratio
    fast = [(10.0, 9.0), (20.0, 6.0), (30.0, 5.0)]    # final best 5.0
    slow = [(15.0, 12.0), (40.0, 8.0), (60.0, 7.0)]   # final best 7.0: the common target
    assert matched_ratio(fast, slow) == 20.0 / 60.0
    assert matched_ratio(slow, fast) == 60.0 / 20.0
    assert matched_ratio(fast, [(50.0, math.inf)]) == math.inf
