"""The rehearsal: the calibrated trial model on a hand-made calibration of known coefficients,
the ring-allreduce cost, and whole rehearsals through the real driver (simulated launcher and
clock, real Optuna and MLflow stores)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from explorer.mcnn.flops import mcnn_flops, mcnn_params
from explorer.rehearsal.model import Calibration, TrialModel
from explorer.rehearsal.profiles import FABRICS, HOSTS, HostProfile, ring_allreduce_s
from explorer.rehearsal.sim import accuracy_curve

SIZE = (48, 64)
BOUND = 100.0  # GFLOP/s per core


def _eff(ranks: int, threads: int, batch: int) -> float:
    """The efficiency the hand-made calibration was generated from (log-linear)."""
    return 0.4 * ranks ** -0.1 * threads ** -0.3 * (batch / 32) ** 0.1


def _epochs(gb: int, lr: float, warmup: float) -> float:
    return math.exp(0.5 + 0.2 * math.log(gb) + 0.1 * (math.log(lr / gb) + 8.5) ** 2
                    + 0.1 * warmup)


def calibration_doc() -> dict[str, Any]:
    flops = mcnn_flops(*SIZE, 4).train / 1e9
    compute = [{"image_size": list(SIZE), "ranks": r, "threads": t, "per_rank_batch": b,
                "precision": "float32",
                "images_per_sec": _eff(r, t, b) * r * t * BOUND / flops}
               for r, t in ((1, 1), (1, 2), (2, 1)) for b in (16, 32, 64)]
    conv = [{"global_batch": gb, "peak_lr": lr, "warmup_epochs": wu,
             "epochs": e if (e := _epochs(gb, lr, wu)) <= 6 else None}
            for gb in (16, 32, 64) for lr in (0.005, 0.01, 0.02, 0.04) for wu in (0.0, 1.0)]
    return {"name": "handmade.avx512", "machine_class": "avx512", "cpu": "test CPU",
            "fp32_gflops_per_core": BOUND, "compute": compute, "convergence": conv,
            "target": 0.8, "max_epochs": 6.0, "startup_s": 10.0, "num_classes": 4}


@pytest.fixture(scope="module")
def cal_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cal") / "handmade.avx512.json"
    path.write_text(json.dumps(calibration_doc()))
    return path


def _local(cal: Calibration) -> HostProfile:
    return HostProfile(cal.machine_class, 2, 1, ("avx512f",), 24.0, BOUND, None, "test")


def test_the_gradients_an_allreduce_moves_and_its_ring_cost():
    assert mcnn_params(1024, 1280) == 42_577_261  # the model spec's count
    net = FABRICS["opa100"]
    nbytes = 4.0 * mcnn_params(1024, 1280)
    assert ring_allreduce_s(1, nbytes, net) == 0.0
    two, many = ring_allreduce_s(2, nbytes, net), ring_allreduce_s(128, nbytes, net)
    # 2(p−1)/p · bytes / bandwidth: one message each way at p = 2, nearly twice that at 128
    assert two == pytest.approx(nbytes / net.bandwidth_Bps + 2 * net.alpha_s * 2, rel=1e-9)
    assert 1.9 < many / two < 2.1
    assert ring_allreduce_s(2, nbytes, FABRICS["eth25"]) > 3 * two


def test_the_model_recovers_its_calibration_and_flags_what_it_extrapolates():
    cal = Calibration.from_dict(calibration_doc())
    model = TrialModel(cal, _local(cal), FABRICS["opa100"])
    assert model.sigma_rate == pytest.approx(0.0, abs=1e-9)  # generated log-linear: exact
    for point in cal.compute:
        rate, flags = model.node_rate(point["ranks"], point["threads"], point["per_rank_batch"],
                                      SIZE, "float32")
        assert rate == pytest.approx(point["images_per_sec"], rel=1e-9) and flags == []
    assert model.mu == pytest.approx(-8.5, abs=0.2)
    assert model.epochs(32, 0.02, 0.0)[0] == pytest.approx(_epochs(32, 0.02, 0.0), rel=0.05)
    config = {"per_worker_batch": 16, "max_epochs": 6, "eval_every_epochs": 0.5,
              "target_accuracy": 0.8, "data": {"image_size": list(SIZE)},
              "schedule": {"piecewise": "0.02;3;0.002"},
              "layout": {"ranks_per_node": 2, "threads_per_rank": 1}}
    p = model.predict(config, n_train=4000, n_val=1000)
    assert p.extrapolated == [] and p.comm_s == 0.0 and p.tta_s is not None
    assert p.images_per_sec == pytest.approx(model.node_rate(2, 1, 16, SIZE, "float32")[0])
    # the seed's 8 nodes × 4 ranks × 10 threads at full size on Xeon 6148 nodes
    seed = {**config, "per_worker_batch": 8, "max_epochs": 20, "data": {"image_size": [1024, 1280]},
            "layout": {"ranks_per_node": 4, "threads_per_rank": 10, "hosts": ["n"] * 8}}
    far = TrialModel(cal, HOSTS["xeon6148"], FABRICS["opa100"]).predict(seed, 10_000, 2_000)
    text = " ".join(far.extrapolated)
    for flagged in ("ranks 4", "threads 10", "per rank batch 8", "image size 1024×1280",
                    "host xeon6148", "global batch 256"):
        assert flagged in text
    assert far.comm_s >= 0.0 and far.step_s >= far.compute_s
    # at the range's edge the efficiency is held: 10 threads get 10/2 × the 2-thread rate per
    # core's worth, scaled by the host's matmul speed and the FLOPs of the bigger image
    edge = _eff(2, 2, 16) * 4 * 10 * HOSTS["xeon6148"].fp32_gflops_per_core / (
        mcnn_flops(1024, 1280, 4).train / 1e9)
    assert far.compute_s == pytest.approx(8 * 4 / edge, rel=1e-6)


def test_a_size_term_and_a_bf16_offset_are_fitted_when_the_calibration_has_them():
    bf16_bound = 400.0

    def eff(r: int, t: int, b: int, gflops: float, bf16: bool) -> float:
        lg = math.log(gflops)  # threads and ranks pay more on bigger images
        return (_eff(r, t, b) * r ** (0.05 * lg) * t ** (0.1 * lg)
                * (0.6 * gflops ** 0.05 if bf16 else 1.0))

    compute = []
    for size in ((48, 64), (96, 128), (192, 256)):
        gflops = mcnn_flops(*size, 4).train / 1e9
        for r, t in ((1, 1), (1, 2), (2, 1)):
            for b, bf16 in ((8, False), (16, False), (16, True), (32, True)):
                bound = bf16_bound if bf16 else BOUND
                compute.append({"image_size": list(size), "ranks": r, "threads": t,
                                "per_rank_batch": b,
                                "precision": "mixed_bfloat16" if bf16 else "float32",
                                "images_per_sec": eff(r, t, b, gflops, bf16) * r * t * bound / gflops})
    cal = Calibration.from_dict({**calibration_doc(), "compute": compute,
                                 "bf16_gflops_per_core": bf16_bound})
    host = HostProfile(cal.machine_class, 2, 1, ("avx512f", "avx512_bf16"), 24.0, BOUND,
                       bf16_bound, "test")
    model = TrialModel(cal, host, FABRICS["opa100"])
    assert model.size_term and model.bf16_fit and model.sigma_rate == pytest.approx(0, abs=1e-9)
    mid = (128, 160)  # between the calibrated sizes: the size term interpolates, unflagged
    gflops = mcnn_flops(*mid, 4).train / 1e9
    for precision, bound in (("float32", BOUND), ("mixed_bfloat16", bf16_bound)):
        rate, flags = model.node_rate(1, 2, 16, mid, precision)
        want = eff(1, 2, 16, gflops, precision != "float32") * 2 * bound / gflops
        assert rate == pytest.approx(want, rel=1e-6) and flags == []
    # beyond the largest size: that size's efficiency, FLOP-scaled, and flagged
    full = mcnn_flops(1024, 1280, 4).train / 1e9
    edge = mcnn_flops(192, 256, 4).train / 1e9
    rate, flags = model.node_rate(1, 2, 16, (1024, 1280), "float32")
    assert rate == pytest.approx(eff(1, 2, 16, edge, False) * 2 * BOUND / full, rel=1e-6)
    assert any("image size 1024×1280" in f for f in flags)
    # a host without bf16 hardware: the fp32 rate, emulation's measured slowdown, flagged
    plain = TrialModel(cal, _local(cal), FABRICS["opa100"])
    rate, flags = plain.node_rate(1, 2, 16, mid, "mixed_bfloat16")
    assert rate == pytest.approx(plain.node_rate(1, 2, 16, mid, "float32")[0] / 2.7)
    assert any("emulated" in f for f in flags)


def test_a_term_the_points_cannot_determine_is_left_out():
    # a second size measured at one layout only: the threads × size and ranks × size terms
    # have nothing to be fitted from, so they are left out, not set by least squares' minimum
    doc = calibration_doc()
    one = {**doc["compute"][0], "image_size": [64, 80]}
    cal = Calibration.from_dict({**doc, "compute": [*doc["compute"], one]})
    model = TrialModel(cal, _local(cal), FABRICS["opa100"])
    assert not model.size_term and not model.bf16_fit
    assert len(model.c_coef) == 4


def test_a_simulated_curve_crosses_the_target_where_the_model_says():
    for cross in (1.3, 4.0):
        assert accuracy_curve(cross - 1e-3, cross, 0.8, 0.25, 6.0) < 0.8
        assert accuracy_curve(cross, cross, 0.8, 0.25, 6.0) >= 0.8
    assert max(accuracy_curve(e / 2, None, 0.8, 0.25, 6.0) for e in range(13)) < 0.8


def _rehearse(tmp: Path, cal: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv list
        [sys.executable, "-m", "explorer.cli", "rehearse", "--calibration", str(cal),
         "--storage", f"sqlite:///{tmp / 'optuna.db'}",
         "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--workdir", str(tmp / "runs"),
         *extra], capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.timeout(600)
def test_a_128_node_rehearsal_of_the_seed_scale_space(tmp_path, cal_file):
    done = _rehearse(tmp_path, cal_file, "--space", "search_spaces/seed_scale.yaml",
                     "--nodes", "128", "--host-profile", "xeon6148", "--trials", "12",
                     "--seed", "0", "--study", "seed128")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "predicted best: trial" in out and "node-hours" in out and "extrapolated" in out
    study = optuna.load_study(study_name="seed128", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    ran = [t.user_attrs.get("state") for t in study.trials]
    assert ran.count("COMPLETED") + ran.count("PRUNED") == 12  # and the infeasible asks beside
    assert ran.count("COMPLETED") >= 1 and set(ran) <= {"COMPLETED", "PRUNED", "INFEASIBLE"}
    # no bf16 trial ran on hosts without bf16, and every rule of the seed held
    for t in study.trials:
        if t.state is optuna.trial.TrialState.COMPLETE:
            assert t.params["precision"] == "float32"
            derived = t.user_attrs["derived"]
            assert derived["global_batch"] <= 2048 and derived["updates_per_epoch"] >= 150
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seed128")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert runs and all(r.data.tags.get("mcnn.simulated") == "true" for r in runs)
    ttas = [r.data.metrics["tta_s"] for r in runs if "tta_s" in r.data.metrics]
    assert ttas and min(ttas) > 60.0  # full-size epochs on a simulated cluster: minutes at least


def test_bad_rehearsal_input_is_one_line(tmp_path, cal_file):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    optuna.create_study(study_name="taken", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for extra, needle in (
            (["--nodes", "0"], "--nodes must be > 0"),
            (["--calibration", str(bad)], "invalid JSON"),
            (["--calibration", str(tmp_path / "none.json")], "No such file"),
            (["--host-profile", "pdp11"], "invalid choice"),
            (["--study", "taken"], "already exists")):
        done = _rehearse(tmp_path, cal_file, "--space", "search_spaces/seed_scale.yaml", *extra)
        assert done.returncode == 2, (extra, done.stderr)
        last = done.stderr.strip().splitlines()[-1]  # (argparse prints its usage above)
        assert needle in last and "error:" in last and "Traceback" not in done.stderr
