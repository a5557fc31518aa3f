"""bench.memory's fit recovers the constants of peaks the model itself made."""

from __future__ import annotations

import pytest

from bench.memory import fit, leave_one_out
from explorer.mcnn.memory import MemoryCalibration, predict_peak


def test_the_fit_recovers_known_constants_and_predicts_each_point_left_out():
    truth = MemoryCalibration(800.0, 0.75, workspace_images=80.0)
    records = []
    for (h, w), batch, precision in [((64, 80), 32, "float32"), ((256, 320), 8, "float32"),
                                     ((512, 640), 4, "float32"), ((512, 640), 8, "float32"),
                                     ((1024, 1280), 1, "float32"),
                                     ((1024, 1280), 2, "mixed_bfloat16")]:
        peak = predict_peak(image_size=(h, w), per_rank_batch=batch, precision=precision,
                            n_train=40, n_val=10, world=1, calibration=truth)
        records.append({"size": [h, w], "batch": batch, "precision": precision, "n_train": 40,
                        "n_val": 10, "ranks": 1, "peak_rss_mib": peak.peak_bytes / 1024**2})
    got = fit(records)
    assert got.activation_factor == pytest.approx(0.75, abs=0.011)
    assert got.workspace_images == pytest.approx(80.0, rel=0.05)
    assert got.runtime_mib == pytest.approx(800.0, rel=0.05)
    for r, predicted in zip(records, leave_one_out(records), strict=True):
        assert predicted == pytest.approx(r["peak_rss_mib"], rel=0.02)
