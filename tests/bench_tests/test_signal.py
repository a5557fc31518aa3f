"""bench.signal: the pooled within-config SD and which runs each reading pools."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.signal import _repeats, own_run, pooled_log_sd, reached_logs


def test_pooling_weights_each_config_by_its_degrees_of_freedom():
    sd, df = pooled_log_sd([[0.0, 0.2], [0.0, 0.1, 0.2, 0.3]])  # variances 0.02 (1 df), 1/60 (3)
    assert df == 4 and sd == pytest.approx(math.sqrt((0.02 + 3 / 60) / 4))
    assert pooled_log_sd([[1.0], [2.0]]) == (pytest.approx(math.nan, nan_ok=True), 0)
    assert pooled_log_sd([[], [0.0, 0.2]]) == pooled_log_sd([[0.0, 0.2]])  # no run, no df


def _rec(config_id: str, phase: str, seed: int, overrides: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    return {"config_id": config_id, "phase": phase, "seed": seed,
            "digest": config_id.removeprefix("best:"), "overrides": overrides or {},
            "curve": [[1.0, 10.0 + seed, 0.95]], "startup_s": 1.0,
            "state": "completed"}


def test_the_test_pools_only_the_grid_points_seeds_recorded_for_it():
    records = ([_rec("baseline", "repeat", s, {"schedule": {}}) for s in (0, 1, 2)]
               + [_rec("baseline", "signal", s, {"schedule": {}}) for s in (3, 4)]
               + [_rec("g1", "repeat", s) for s in (0, 1, 2)]
               + [_rec("g1", "signal", s) for s in (3, 4, 5)]
               + [_rec("g2", "grid", 0)] + [_rec("best:g2", "confirm", s) for s in (10, 11)])
    fresh = _repeats(records, own_run, ("signal",), grid_only=True)
    assert {k: [r.seed for r in v] for k, v in fresh.items()} == {"g1": [3, 4, 5]}
    every = _repeats(records, own_run, ("repeat", "confirm", "signal"), grid_only=True)
    # the best's fresh seeds without its grid run (seed 0 chose it)
    assert {k: [r.seed for r in v] for k, v in every.items()} == {"g1": [0, 1, 2, 3, 4, 5],
                                                                 "g2": [10, 11]}
    assert set(_repeats(records, own_run)) == {"baseline", "g1", "g2"}  # the default reading


def test_the_test_counts_a_miss_at_the_end_of_its_time_axis():
    hit, miss = _rec("g1", "signal", 3), _rec("g1", "signal", 4)
    miss["curve"] = [[1.0, 20.0, 0.5], [2.0, 40.0, 0.6]]
    runs = {"g1": [own_run(hit), own_run(miss)]}
    assert reached_logs(runs, 0.9) == []  # the other readings drop the config
    assert reached_logs(runs, 0.9, censor=True) == [[math.log(13.0), math.log(40.0)]]
