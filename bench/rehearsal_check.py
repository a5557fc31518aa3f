"""How far the rehearsal's trial model can be trusted: held-out predictions against measurements.

    .venv/bin/python -m bench.rehearsal_check [--calibration FILE] [--table FILE]

No training happens here; it reads the calibration (``bench.calibrate``) and the recorded table:

1. **images/s, leave one layout cell out**: the compute model fitted without a (ranks, threads,
   per-rank batch) cell predicts it; the relative error of each (target: within 10 %).
2. **TTA of held-out table runs**: for each uncontended grid run of the table, the convergence model
   fitted without it (and the compute model) predicts its TTA; against its measured TTA: the
   median relative error, the share within 25 %, and Kendall's τ between predicted and measured.
3. **The seed's published configuration** put through the model: 8 × Xeon Gold 6148 nodes
   (profile ``xeon6148``: its matmul speed is an assumption, printed), 4 ranks × 10 threads, 32
   images per node (global batch 256), 10,000 training images, Omni-Path; its predicted images/s
   and the minutes for 20 epochs, next to the seed's 31 minutes.

Figures are on a synthetic stand-in for BBBC021 and a simulated cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

from bench.common import emit, table
from bench.surrogate import kendall_tau, uncontended
from bench.table import WORKLOAD, load_table
from explorer.cli_rehearse import default_calibration
from explorer.rehearsal.model import Calibration, TrialModel, load_calibration
from explorer.rehearsal.profiles import FABRICS, HOSTS, HostProfile

__all__ = ["compute_loo", "tta_loo"]

SEED_MINUTES = 31.0


def _local(cal: Calibration) -> HostProfile:
    return HostProfile(cal.machine_class, 2, 1, ("avx512f",), 24.0, cal.fp32_gflops_per_core,
                       None, "the calibration machine")


def compute_loo(cal: Calibration) -> list[dict[str, Any]]:
    """Each compute cell predicted by the model fitted without it."""
    out = []
    for i, point in enumerate(cal.compute):
        rest = dataclasses.replace(cal, compute=cal.compute[:i] + cal.compute[i + 1:])
        model = TrialModel(rest, _local(cal), FABRICS["opa100"])
        pred, flags = model.node_rate(int(point["ranks"]), int(point["threads"]),
                                      int(point["per_rank_batch"]),
                                      tuple(point["image_size"]), "float32")
        out.append({**point, "predicted": pred,
                    "error": pred / float(point["images_per_sec"]) - 1.0, "flags": flags})
    return out


def _config(r: dict[str, Any]) -> dict[str, Any]:
    p = r["params"]
    return {"per_worker_batch": int(r["derived"]["global_batch"]) // int(r["derived"]["world_size"]),
            "max_epochs": 6.0, "eval_every_epochs": 0.5, "target_accuracy": WORKLOAD.target_accuracy,
            "data": {"image_size": [48, 64]},
            "schedule": {"piecewise": f"{p['peak_lr']};{p['first_decay_epoch']};"
                                      f"{p['peak_lr'] * 0.1:.6g}",
                         "warmup_epochs": p.get("warmup_epochs", 0.0)},
            "layout": {"ranks_per_node": p.get("ranks_per_node", 1),
                       "threads_per_rank": p.get("threads_per_rank", 1)}}


def tta_loo(cal: Calibration, records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(predicted, measured) TTA of every uncontended grid run that reached the target, each
    predicted by a model whose convergence fit left that run out."""
    target = cal.target
    n_train = WORKLOAD.images - WORKLOAD.val_images
    out = []
    done = [r for r in records if r.get("state") == "completed" and r.get("images_per_sec")]
    for r in uncontended(done):
        if r.get("phase") not in ("grid", "repeat") or r.get("overrides"):
            continue
        measured = next((float(c[1]) for c in r["curve"] if float(c[2]) >= target), None)
        if measured is None:
            continue
        p = r["params"]
        rest = [c for c in cal.convergence if not (
            c["global_batch"] == r["derived"]["global_batch"] and c["peak_lr"] == p["peak_lr"]
            and c["warmup_epochs"] == p.get("warmup_epochs", 0.0)
            and c.get("first_decay_epoch") == p.get("first_decay_epoch")
            and c.get("seed") == r["seed"])]
        model = TrialModel(dataclasses.replace(cal, convergence=rest), _local(cal),
                           FABRICS["opa100"])
        pred = model.predict(_config(r), n_train, WORKLOAD.val_images).tta_s
        out.append((math.inf if pred is None else pred, measured))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", default=None)
    parser.add_argument("--table", default=None)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (any class's table)")
    args = parser.parse_args(argv)
    path = Path(args.calibration) if args.calibration else default_calibration()[0]
    cal = load_calibration(path)
    _, records = load_table(args.table, quick=args.quick)
    print(f"calibration {path} ({cal.note}); simulated predictions, synthetic stand-in")

    rows = compute_loo(cal)
    errs = [abs(r["error"]) for r in rows]
    print("\n1. images/s, each layout cell predicted by the model fitted without it:")
    print(table(["ranks × threads", "per-rank batch", "measured", "predicted", "error"],
                [[f"{r['ranks']} × {r['threads']}", r["per_rank_batch"],
                  f"{r['images_per_sec']:.0f}", f"{r['predicted']:.0f}",
                  f"{r['error']:+.1%}" + (" (extrapolated)" if r["flags"] else "")]
                 for r in rows]))
    within = sum(e <= 0.10 for e in errs)
    print(f"median |error| {statistics.median(errs):.1%}, max {max(errs):.1%}; {within} of "
          f"{len(errs)} within 10 % (target: all)")

    pairs = tta_loo(cal, records)
    finite = [(p, m) for p, m in pairs if math.isfinite(p)]
    rel = [abs(p / m - 1.0) for p, m in finite]
    tau = kendall_tau([p for p, _ in finite], [m for _, m in finite]) if len(finite) > 2 \
        else math.nan
    print(f"\n2. TTA of {len(pairs)} held-out uncontended table runs that reached {cal.target}: "
          f"{len(pairs) - len(finite)} predicted to miss; median |error| "
          f"{statistics.median(rel) if rel else math.nan:.1%}, "
          f"{sum(e <= 0.25 for e in rel)} of {len(rel)} within 25 %, Kendall τ {tau:.2f}")

    host = HOSTS["xeon6148"]
    seed_cfg = {"per_worker_batch": 8, "max_epochs": 20.0, "eval_every_epochs": 1.0,
                "target_accuracy": cal.target, "data": {"image_size": [1024, 1280]},
                "schedule": {"piecewise": "0.008;2;0.032;5;0.029;10;0.026;15;0.001;20;0.0001"},
                "layout": {"ranks_per_node": 4, "threads_per_rank": 10, "hosts": ["n"] * 8}}
    seed = TrialModel(cal, host, FABRICS["opa100"]).predict(seed_cfg, 10_000, 2_000)
    twenty = 20 * seed.epoch_s / 60.0
    print(f"\n3. the seed's run (8 × {host.name}: {host.note}; 4 × 10, global batch 256, 10,000 "
          f"images, opa100): {seed.images_per_sec:.0f} img/s (×/÷ {math.exp(seed.sigma_rate):.2f}),"
          f" step {seed.step_s:.2f} s of which {seed.comm_s * 1e3:.0f} ms allreduce not hidden; "
          f"20 epochs in {twenty:.0f} min against the seed's {SEED_MINUTES:.0f} min "
          f"({twenty / SEED_MINUTES:.2f}×); extrapolated: {'; '.join(seed.extrapolated)}")
    emit("rehearsal_check", {"calibration": cal.name, "compute_loo": [
        {k: r[k] for k in ("ranks", "threads", "per_rank_batch", "images_per_sec", "predicted",
                           "error")} for r in rows],
        "tta_pairs": pairs, "tta_median_rel_error": statistics.median(rel) if rel else None,
        "tta_kendall_tau": tau, "seed_images_per_sec": seed.images_per_sec,
        "seed_20_epochs_min": twenty, "quick": args.quick})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
