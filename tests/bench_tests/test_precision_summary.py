"""The precision bench's summary: medians per mode, and ratios to float32 of the same seed."""

from __future__ import annotations

from typing import Any

import pytest

from bench.bf16 import summarize


def _run(mode: str, seed: int, rate: float, curve: list[list[float]],
         state: str = "completed") -> dict[str, Any]:
    return {"mode": mode, "seed": seed, "images_per_sec": rate, "curve": curve, "state": state}


def test_ratios_pair_runs_of_the_same_seed_and_a_missed_target_counts_as_missed():
    records = [
        _run("float32", 0, 100.0, [[1, 10.0, 0.5], [2, 20.0, 0.85]]),
        _run("float32", 1, 110.0, [[1, 9.0, 0.81], [2, 18.0, 0.9]]),
        _run("mixed_bfloat16", 0, 150.0, [[1, 7.0, 0.7], [2, 14.0, 0.82]]),
        _run("mixed_bfloat16", 1, 165.0, [[1, 6.0, 0.6], [2, 12.0, 0.7]]),  # misses 0.8
        _run("float32_bf16math", 0, 50.0, [], state="failed"),  # not counted
    ]
    out = summarize(records, 0.8)
    assert set(out) == {"float32", "mixed_bfloat16"}
    fp, bf = out["float32"], out["mixed_bfloat16"]
    assert fp["reached"] == 2 and fp["tta_s"] == pytest.approx(14.5)
    assert bf["runs"] == 2 and bf["reached"] == 1 and bf["tta_s"] == 14.0
    assert bf["speed_vs_fp32"] == pytest.approx((1.5, 1.5, 1.5))
    assert bf["tta_vs_fp32"] == pytest.approx((0.7, 0.7, 0.7))  # seed 0 only: 14 / 20
    assert bf["best_val_accuracy"] == pytest.approx(0.76)
