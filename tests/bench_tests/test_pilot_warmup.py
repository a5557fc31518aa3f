from __future__ import annotations

import math

from bench.pilot_warmup import planned, read, verdict
from launchers.hosts import HostInfo

WARM = ["lr0.01-wu0.333-dec5-b32-r1-t2", "lr0.02-wu0.333-dec3-b16-r1-t2"]
COLD = ["lr0.01-wu0-dec5-b32-r1-t2", "lr0.02-wu0-dec3-b16-r1-t2"]


def _record(config_id: str, seed: int, crossing_s: float, phase: str = "pilot") -> dict:
    # accuracy 0.5 at 5 s, then 0.95 from crossing_s on; the clock ends at 60 s
    curve = [[0.5, 5.0, 0.5], [1.0, crossing_s, 0.95], [6.0, 60.0, 0.95]]
    return {"config_id": config_id, "seed": seed, "phase": phase, "state": "completed",
            "curve": curve}


def test_the_pilot_plans_the_pre_registered_23_runs():
    runs = planned([HostInfo("localhost", 2)])
    assert len(runs) == 23 and len({r.key for r in runs}) == 23
    assert [r.seed for r in runs if r.config_id == "practitioner"] == list(range(5, 12))
    for name in WARM:
        mine = [r for r in runs if r.config_id == name]
        assert [r.seed for r in mine] == list(range(8))
        assert all(r.params["warmup_epochs"] == 0.333 for r in mine)


def test_the_reading_pools_each_side_and_gives_the_sd_ratio(capsys):
    pilot = [_record(c, s, t) for c in ["practitioner", *WARM]
             for s, t in ((5, 10.0), (6, 20.0))]
    table = [_record(c, s, t, "repeat") for c in COLD for s, t in ((0, 10.0), (1, 40.0))]
    table.append({**_record("practitioner", 9, 99.0), "state": "failed"})  # not read
    table.append(_record("practitioner", 0, 10.0, "confirm"))  # the table's seeds are read
    table.append(_record("practitioner", 7, 99.0, "neighbour"))  # another phase is not
    (row,) = read(pilot, table, targets=(0.85,))
    out = capsys.readouterr().out
    assert "practitioner                      3 seeds" in out
    # the no-warm-up side: log 4 apart per config, twice the SD of the warm-up side's log 2
    assert (row["df_warm"], row["df_cold"]) == (4, 2)
    assert math.isclose(row["sd_cold"], math.log(4) / math.sqrt(2))
    # twice the SD, but on 4 and 2 degrees of freedom the interval reaches below 1
    assert 2.0 < row["ratio"] < 2.2 and row["ci"][0] < 1.0 < row["ci"][1]
    assert row["verdict"] == "no effect shown"


def test_a_pilot_still_recording_is_read_without_its_missing_configs(capsys):
    pilot = [_record("practitioner", s, t) for s, t in ((5, 10.0), (6, 20.0))]
    table = [_record(c, s, t, "repeat") for c in COLD for s, t in ((0, 10.0), (1, 40.0))]
    (row,) = read(pilot, table, targets=(0.9,))
    assert row["df_warm"] == 1 and row["verdict"] is None  # the verdict is read at 0.85 only
    assert capsys.readouterr().out.count("no completed run yet") == 2


def test_the_verdict_needs_twice_the_sd_and_an_interval_above_one():
    assert verdict(2.0, 1.01) == "the warm-up helps"
    assert verdict(2.5, 1.0) == verdict(1.9, 1.5) == "no effect shown"
