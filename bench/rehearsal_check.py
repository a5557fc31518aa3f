"""How far the rehearsal's trial model can be trusted: held-out predictions against measurements.

    .venv/bin/python -m bench.rehearsal_check [--calibration FILE] [--table FILE]

No training happens here; it reads the calibration (``bench.calibrate``) and the recorded table:

1. **images/s, leave one point out**: the compute model fitted without a calibration point (a
   layout cell of the table, or a one-host point of ``bench.rehearsal_points``: other sizes,
   bf16 where native) predicts it; the relative error of each (target: within 10 %).
   1b. **leave one size out**: every point at a larger image size, predicted by the model fitted
   without any point of that size (how well the size term carries to an unmeasured size);
   1c. two network-namespace hosts, each point predicted with a fabric (α, bandwidth) fitted to
   the others (target within 15 %).
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

import numpy as np

from bench.common import emit, read_jsonl, table
from bench.surrogate import kendall_tau, uncontended
from bench.table import load_table
from explorer.cli_rehearse import default_calibration
from explorer.mcnn.flops import mcnn_params
from explorer.rehearsal.model import OVERLAP, Calibration, TrialModel, load_calibration
from explorer.rehearsal.profiles import FABRICS, HOSTS, Fabric, HostProfile, ring_allreduce_s
from explorer.workloads import WORKLOADS, Workload
from mcnn_base.errors import ConfigError
from search_spaces.space import load_space

__all__ = ["calibration_workload", "compute_loo", "fabric_loo", "fit_fabric", "size_holdout",
           "tta_loo"]

SEED_MINUTES = 31.0
FUSION_BYTES = 128 * 2**20  # as ring_allreduce_s assumes
POINTS = Path(__file__).resolve().parent / "tables"


def _local(cal: Calibration) -> HostProfile:
    isa = ("avx512f",) + (("avx512_bf16",) if cal.bf16_gflops_per_core else ())
    return HostProfile(cal.machine_class, 2, 1, isa, 24.0, cal.fp32_gflops_per_core,
                       cal.bf16_gflops_per_core, "the calibration machine")


def _size(p: dict[str, Any]) -> tuple[int, int]:
    return int(p["image_size"][0]), int(p["image_size"][1])


def _rated(cal: Calibration) -> list[dict[str, Any]]:
    """The compute points the model fits: fp32, and bf16 where the calibration has its bound."""
    return [p for p in cal.compute if p.get("precision", "float32") == "float32"
            or (p.get("precision") == "mixed_bfloat16" and cal.bf16_gflops_per_core)]


def size_holdout(cal: Calibration) -> list[dict[str, Any]]:
    """Each compute point at an image size other than the smallest, predicted by the model
    fitted without any point of that size. A middle size tests the size term's interpolation;
    the largest lies outside what is left, so it tests the rule for sizes beyond the
    calibration (the edge size's efficiency, FLOP-scaled)."""
    sizes = sorted({_size(p) for p in _rated(cal)}, key=lambda s: s[0] * s[1])
    out = []
    for size in sizes[1:]:
        rest = [p for p in cal.compute if _size(p) != size]
        try:
            model = TrialModel(dataclasses.replace(cal, compute=rest), _local(cal),
                               FABRICS["opa100"])
        except ConfigError:
            continue
        out += [_predicted(model, p) for p in _rated(cal) if _size(p) == size]
    return out


def _predicted(model: TrialModel, point: dict[str, Any]) -> dict[str, Any]:
    pred, flags = model.node_rate(int(point["ranks"]), int(point["threads"]),
                                  int(point["per_rank_batch"]), _size(point),
                                  str(point.get("precision", "float32")))
    return {**point, "predicted": pred, "error": pred / float(point["images_per_sec"]) - 1.0,
            "flags": flags}


def _comm_rows(points: list[dict[str, Any]], num_classes: int) -> list[dict[str, Any]]:
    """Per two-host point: the gradient bytes, its measured step, and the compute of the same
    two ranks on one host (the same cores doing the same work) from the paired point."""
    one = {(tuple(p["size"]), p["precision"]): p for p in points
           if int(p["hosts"]) == 1 and int(p["ranks"]) == 2 and int(p["threads"]) == 1}
    rows = []
    for p in points:
        pair = one.get((tuple(p["size"]), p["precision"]))
        if int(p["hosts"]) != 2 or pair is None:
            continue
        gb = int(p["per_rank_batch"]) * int(p["world_size"])
        rows.append({"size": p["size"], "nbytes": 4.0 * mcnn_params(p["size"][0], p["size"][1],
                                                                    num_classes),
                     "step": gb / float(p["images_per_sec"]),
                     "compute": gb / float(pair["images_per_sec"]),
                     "images_per_sec": float(p["images_per_sec"])})
    return rows


def fit_fabric(rows: list[dict[str, Any]]) -> Fabric | None:
    """α and bandwidth of the link between two hosts, least squares over ``rows``: a step is its
    compute plus the allreduce the model does not hide (``TrialModel.predict``), so
    ``step − compute + OVERLAP·⅔·compute = 2α·buffers + bytes ÷ bandwidth`` (two ranks).
    Rows whose step is no longer than their compute (all communication hidden, or noise) say
    nothing about the link and are left out. Both terms are kept non-negative: when the free fit
    puts one below zero, the other is fitted alone (a link of latency only, or of bandwidth
    only), and the fabric says so. None when fewer than two rows are left or neither term fits
    above zero."""
    rows = [r for r in rows if r["step"] > r["compute"]]
    if len(rows) < 2:
        return None
    x = np.array([[2.0 * max(1, -(-int(r["nbytes"]) // FUSION_BYTES)), r["nbytes"]]
                  for r in rows])
    y = np.array([r["step"] - r["compute"] + OVERLAP * 2.0 / 3.0 * r["compute"] for r in rows])
    alpha, inv_bw = np.linalg.lstsq(x, y, rcond=None)[0]
    note = "fitted to the two-host points"
    if alpha <= 0 or inv_bw <= 0:
        only_bw = float(np.linalg.lstsq(x[:, 1:], y, rcond=None)[0][0])
        only_alpha = float(np.linalg.lstsq(x[:, :1], y, rcond=None)[0][0])
        sse_bw = float(np.sum(np.square(y - x[:, 1] * only_bw))) if only_bw > 0 else math.inf
        sse_a = float(np.sum(np.square(y - x[:, 0] * only_alpha))) if only_alpha > 0 \
            else math.inf
        if math.isinf(min(sse_bw, sse_a)):
            return None
        if sse_bw <= sse_a:
            alpha, inv_bw, note = 0.0, only_bw, note + " (bandwidth only: α fitted ≤ 0)"
        else:
            alpha, inv_bw, note = only_alpha, 0.0, note + " (latency only: bandwidth fitted ∞)"
    return Fabric("fitted", float(alpha), math.inf if inv_bw == 0 else float(1.0 / inv_bw),
                  note)


def fabric_loo(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each two-host point's images/s predicted with a fabric fitted to the others."""
    out = []
    for i, r in enumerate(rows):
        net = fit_fabric(rows[:i] + rows[i + 1:])
        if net is None:
            out.append({**r, "predicted": None, "error": None})
            continue
        comm = max(0.0, ring_allreduce_s(2, r["nbytes"], net, fusion_bytes=FUSION_BYTES)
                   - OVERLAP * 2.0 / 3.0 * r["compute"])
        pred = r["images_per_sec"] * r["step"] / (r["compute"] + comm)
        out.append({**r, "predicted": pred, "error": pred / r["images_per_sec"] - 1.0})
    return out


def compute_loo(cal: Calibration) -> list[dict[str, Any]]:
    """Each compute point the model fits, predicted by the model fitted without it (none where
    what is left cannot be fitted)."""
    out = []
    for i, point in enumerate(cal.compute):
        if point not in _rated(cal):
            continue
        rest = dataclasses.replace(cal, compute=cal.compute[:i] + cal.compute[i + 1:])
        try:
            model = TrialModel(rest, _local(cal), FABRICS["opa100"])
        except ConfigError:
            continue
        out.append(_predicted(model, point))
    return out


def _config(r: dict[str, Any], target: float, base: dict[str, Any]) -> dict[str, Any]:
    """A table run as the trial model reads a training config (``base``: the space's)."""
    p = r["params"]
    return {"per_worker_batch": int(r["derived"]["global_batch"]) // int(r["derived"]["world_size"]),
            "max_epochs": float(base["max_epochs"]),
            "eval_every_epochs": float(base.get("eval_every_epochs", 1.0)),
            "target_accuracy": target, "data": {"image_size": list(base["data"]["image_size"])},
            "schedule": {"piecewise": f"{p['peak_lr']};{p['first_decay_epoch']};"
                                      f"{p['peak_lr'] * 0.1:.6g}",
                         "warmup_epochs": p.get("warmup_epochs", 0.0)},
            "layout": {"ranks_per_node": p.get("ranks_per_node", 1),
                       "threads_per_rank": p.get("threads_per_rank", 1)}}


def tta_loo(cal: Calibration, records: list[dict[str, Any]],
            workload: Workload) -> list[tuple[float, float]]:
    """(predicted, measured) TTA of every uncontended grid run of ``workload`` (the
    calibration's) that reached the target, each predicted by a model whose convergence fit left
    that run out."""
    target = cal.target
    n_train = workload.images - workload.val_images
    base = load_space(workload.space).base
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
        pred = model.predict(_config(r, target, base), n_train, workload.val_images).tta_s
        out.append((math.inf if pred is None else pred, measured))
    return out


def calibration_workload(cal: Calibration) -> Workload:
    """The workload whose table ``cal`` was made from (its name is ``<workload>.<class>``,
    :mod:`bench.calibrate`); a name without a known workload is a one-line error."""
    wid = cal.name.rsplit(".", 1)[0]
    if wid not in WORKLOADS:
        raise SystemExit(f"error: calibration {cal.name} names no workload of "
                         f"explorer/workloads.py ({', '.join(sorted(WORKLOADS))})")
    return WORKLOADS[wid]


def _point_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[f"{r['image_size'][0]}×{r['image_size'][1]}", r.get("precision", "float32"),
             f"{r['ranks']} × {r['threads']}", r["per_rank_batch"],
             f"{r['images_per_sec']:.1f}", f"{r['predicted']:.1f}",
             f"{r['error']:+.1%}" + (" (outside the fit)" if r["flags"] else "")] for r in rows]


POINT_HEAD = ["size", "precision", "ranks × threads", "per-rank batch", "measured", "predicted",
              "error"]


def _within(rows: list[dict[str, Any]], limit: float) -> str:
    errs = [abs(r["error"]) for r in rows]
    return (f"median |error| {statistics.median(errs):.1%}, max {max(errs):.1%}; "
            f"{sum(e <= limit for e in errs)} of {len(errs)} within {limit:.0%} (target: all)")


def _report_fabric(cal: Calibration, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Print section 1c (the two-host points of ``bench.rehearsal_points``)."""
    comm = fabric_loo(_comm_rows(points, cal.num_classes))
    if not comm:
        print("\n1c. no two-host points (run python -m bench.rehearsal_points)")
        return []
    net = fit_fabric(_comm_rows(points, cal.num_classes))
    print("\n1c. two network-namespace hosts (one rank each, TCP over a veth bridge), each "
          "predicted with a fabric fitted to the others; compute from one host running the "
          "same two ranks:")
    print(table(["size", "measured", "predicted", "error"],
                [[f"{r['size'][0]}×{r['size'][1]}", f"{r['images_per_sec']:.1f}",
                  "-" if r["predicted"] is None else f"{r['predicted']:.1f}",
                  "-" if r["error"] is None else f"{r['error']:+.1%}"] for r in comm]))
    ok = [abs(r["error"]) for r in comm if r["error"] is not None]
    fitted = ("none (no step above its compute)" if net is None else
              f"α {net.alpha_s * 1e6:.0f} µs, {net.bandwidth_Bps * 8 / 1e9:.2f} Gb/s ({net.note})")
    print(f"fabric fitted to all of them: {fitted}; "
          f"{sum(e <= 0.15 for e in ok)} of {len(comm)} within 15 % (target: all)")
    return comm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", default=None)
    parser.add_argument("--table", default=None)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (any class's table)")
    args = parser.parse_args(argv)
    path = Path(args.calibration) if args.calibration else default_calibration()[0]
    cal = load_calibration(path)
    workload = calibration_workload(cal)
    _, records = load_table(args.table, quick=args.quick, workload=workload)
    print(f"calibration {path} ({cal.note}); simulated predictions, synthetic stand-in")

    rows = compute_loo(cal)
    print("\n1. images/s, each compute point predicted by the model fitted without it:")
    print(table(POINT_HEAD, _point_rows(rows)))
    print(_within(rows, 0.10))
    held = size_holdout(cal)
    if held:
        print("\n1b. images/s at each larger image size, predicted by the model fitted without "
              "any point of that size:")
        print(table(POINT_HEAD, _point_rows(held)))
        print(_within(held, 0.10))
    fabric = _report_fabric(cal, read_jsonl(POINTS / f"rehearsal-points.{cal.machine_class}.jsonl"))

    pairs = tta_loo(cal, records, workload)
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
    fields = ("image_size", "precision", "ranks", "threads", "per_rank_batch", "images_per_sec",
              "predicted", "error")
    emit("rehearsal_check", {"calibration": cal.name, "compute_loo": [
        {k: r.get(k, "float32") for k in fields} for r in rows],
        "tta_pairs": pairs, "tta_median_rel_error": statistics.median(rel) if rel else None,
        "tta_kendall_tau": tau, "seed_images_per_sec": seed.images_per_sec,
        "seed_20_epochs_min": twenty, "quick": args.quick,
        "size_holdout": [{k: r.get(k, "float32") for k in fields} for r in held],
        "fabric_loo": [{k: r[k] for k in ("size", "images_per_sec", "predicted", "error")}
                       for r in fabric]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
