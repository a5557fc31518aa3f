from __future__ import annotations

import math

from bench.pilot_warmup import _log_tta, read


def _record(config_id: str, seed: int, crossing_s: float, phase: str = "pilot") -> dict:
    # accuracy 0.5 at 5 s, then 0.95 from crossing_s on; the clock ends at 60 s
    curve = [[0.5, 5.0, 0.5], [1.0, crossing_s, 0.95], [6.0, 60.0, 0.95]]
    return {"config_id": config_id, "seed": seed, "phase": phase, "state": "completed",
            "curve": curve}


def test_a_miss_counts_at_the_end_of_its_own_clock():
    record = {"curve": [[0.5, 5.0, 0.5], [6.0, 61.0, 0.84]]}
    assert _log_tta(record, 0.85) == math.log(61.0)
    assert _log_tta(_record("x", 0, 12.0), 0.85) == math.log(12.0)


def test_the_reading_pools_each_side_and_gives_the_sd_ratio(capsys):
    warm = ["practitioner", "lr0.01-wu0.333-dec5-b32-r1-t2", "lr0.02-wu0.333-dec3-b16-r1-t2"]
    cold = ["lr0.01-wu0-dec5-b32-r1-t2", "lr0.02-wu0-dec3-b16-r1-t2"]
    pilot = [_record(c, s, t) for c in warm for s, t in ((0, 10.0), (1, 20.0))]
    table = [_record(c, s, t, "repeat") for c in cold for s, t in ((0, 10.0), (1, 40.0))]
    table.append({**_record("practitioner", 9, 99.0), "state": "failed"})  # not read
    read(pilot, table, targets=(0.9,))
    out = capsys.readouterr().out
    # each side: log(2) or log(4) apart per config, so the no-warm-up SD is twice the warm-up's
    assert "warm-up 0.490 (3 df), no warm-up 0.980 (2 df): ratio 2.00" in out
