"""The rehearsal's validation against measured points: the fabric fit and the point list."""

from __future__ import annotations

from typing import Any

import pytest

from bench.rehearsal_check import FUSION_BYTES, fabric_loo, fit_fabric
from bench.rehearsal_points import Point, points
from explorer.rehearsal.model import OVERLAP
from explorer.rehearsal.profiles import Fabric, ring_allreduce_s


def _rows(net: Fabric) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for nbytes, compute in ((2e6, 0.001), (9e6, 0.004), (40e6, 0.01)):  # none fully hidden
        comm = max(0.0, ring_allreduce_s(2, nbytes, net, fusion_bytes=FUSION_BYTES)
                   - OVERLAP * 2 / 3 * compute)
        step = compute + comm
        rows.append({"size": [0, 0], "nbytes": nbytes, "step": step, "compute": compute,
                     "images_per_sec": 32 / step})
    return rows


def test_a_fabric_is_recovered_from_steps_it_made_and_predicts_each_point_left_out():
    truth = Fabric("t", 300e-6, 1.5e9, "")
    fitted = fit_fabric(_rows(truth))
    assert fitted is not None
    assert fitted.alpha_s == pytest.approx(truth.alpha_s, rel=1e-6)
    assert fitted.bandwidth_Bps == pytest.approx(truth.bandwidth_Bps, rel=1e-6)
    assert all(abs(r["error"]) < 1e-6 for r in fabric_loo(_rows(truth)))


def test_an_unphysical_or_underdetermined_fit_is_refused():
    rows = _rows(Fabric("t", 300e-6, 1.5e9, ""))
    assert fit_fabric(rows[:1]) is None
    faster = [{**r, "step": r["compute"] * 0.5} for r in rows]  # steps below their compute
    assert fit_fabric(faster) is None
    slower_small = [rows[0], {**rows[1], "step": rows[1]["step"] * 0.2}, rows[2]]
    assert fit_fabric(slower_small) is not None  # the row below its compute is left out


def test_a_fit_below_zero_keeps_the_term_that_fits_alone():
    rows = _rows(Fabric("t", 0.0, 1.0e9, ""))  # a pure-bandwidth link...
    rows[0] = {**rows[0], "step": rows[0]["step"] * 0.9}  # ...and noise on the small step
    free = fit_fabric(rows)
    assert free is not None and free.alpha_s == 0.0 and "bandwidth only" in free.note
    assert free.bandwidth_Bps == pytest.approx(1.0e9, rel=0.1)


def test_the_points_cover_every_layout_within_the_cores_and_pair_each_two_host_point():
    two_cores = points(2, native_bf16=False)
    assert Point((256, 320), 2, 2) not in two_cores  # 4 threads on 2 cores
    assert all(p.precision == "float32" for p in two_cores)
    for p in (q for q in two_cores if q.hosts == 2):
        assert Point(p.size, 2, 1) in two_cores  # its one-host pair
    assert sum(p.precision == "mixed_bfloat16" for p in points(2, native_bf16=True)) == 9
