"""Make the rehearsal's calibration from this machine's recorded table of real trials.

    .venv/bin/python -m bench.calibrate [--table FILE] [--bound-gflops X] [--out FILE]
                                       [--workload ID]

Reads the table ``bench.table`` recorded (``bench/tables/<workload>.<class>.jsonl``) and writes
the calibration ``mcnn-explore rehearse`` fits its trial model to
(``explorer/rehearsal/calibrations/<workload>.<class>.json``, committed):

* compute: the median images/s of every (ranks, threads, per-rank batch) cell the table ran,
  over its uncontended runs (``bench.surrogate.uncontended``: nothing else slowed them), and
  every one-host point ``bench.rehearsal_points`` measured on this machine class (other image
  sizes, and bf16 where the CPU runs it natively), so that the model learns how efficiency
  grows with the image;
* convergence: every run of a grid schedule (all seeds), with its global batch, peak LR, warm-up
  and the epochs at its first evaluation at or over the workload's target (None: missed);
* this machine's fp32 matmul bound per core, measured now (``bench.throughput.matmul_bound``,
  10 s on all cores) unless ``--bound-gflops`` gives it, and its bf16 bound where the CPU runs
  bf16 natively;
* the median start-up seconds.

Figures are on a synthetic stand-in for BBBC021.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import machine, read_jsonl
from bench.surrogate import uncontended
from bench.table import _commit, add_workload_option, load_table, require_complete
from bench.throughput import matmul_bound
from explorer.workloads import WORKLOADS, Workload
from mcnn_base.cpu import has_bf16, isa_flags
from search_spaces.space import load_space

__all__ = ["calibration"]

OUT = Path(__file__).resolve().parents[1] / "explorer" / "rehearsal" / "calibrations"
TABLES = Path(__file__).resolve().parent / "tables"


def calibration(records: list[dict[str, Any]], bound_gflops: float, cores: int,
                source: str, *, workload: Workload, bf16_bound_gflops: float | None = None,
                points: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The calibration document of ``workload``'s table records and measured ``points`` (see
    the module doc)."""
    done = [r for r in records if r.get("state") == "completed" and r.get("curve")]
    cells: dict[tuple[int, int, int], list[float]] = defaultdict(list)
    for r in uncontended(done):
        if r.get("images_per_sec"):
            d = r["derived"]
            ranks = int(r["params"].get("ranks_per_node", 1))
            per_rank = int(d["global_batch"]) // int(d["world_size"])
            cells[(ranks, int(r["threads"]), per_rank)].append(
                float(r["images_per_sec"]))
    base = load_space(workload.space).base
    size = list(base["data"]["image_size"])
    compute = [{"image_size": size, "ranks": k[0], "threads": k[1], "per_rank_batch": k[2],
                "precision": "float32", "images_per_sec": round(statistics.median(v), 2),
                "runs": len(v)} for k, v in sorted(cells.items())]
    compute += [{"image_size": list(p["size"]), "ranks": int(p["ranks"]),
                 "threads": int(p["threads"]), "per_rank_batch": int(p["per_rank_batch"]),
                 "precision": str(p["precision"]), "images_per_sec": round(
                     float(p["images_per_sec"]), 2), "runs": 1, "source": str(p["key"])}
                for p in points or [] if int(p["hosts"]) == 1 and (
                    p["precision"] == "float32" or bf16_bound_gflops is not None)]
    target = workload.target_accuracy
    convergence = []
    for r in done:
        if r.get("overrides") or "peak_lr" not in r["params"]:
            continue  # a fixed schedule (the baseline, its neighbours): not of the grid's family
        reached = next((float(c[0]) for c in r["curve"] if float(c[2]) >= target), None)
        convergence.append({"global_batch": int(r["derived"]["global_batch"]),
                            "peak_lr": float(r["params"]["peak_lr"]),
                            "warmup_epochs": float(r["params"].get("warmup_epochs", 0.0)),
                            "first_decay_epoch": r["params"].get("first_decay_epoch"),
                            "seed": int(r["seed"]), "epochs": reached})
    first = done[0]["machine"]
    return {"name": f"{workload.id}.{first['machine_class']}", "machine_class":
            first["machine_class"], "cpu": first.get("model") or first.get("cpu", "?"),
            "fp32_gflops_per_core": round(bound_gflops / cores, 2), "compute": compute,
            "bf16_gflops_per_core": (None if bf16_bound_gflops is None
                                     else round(bf16_bound_gflops / cores, 2)),
            "convergence": convergence, "target": target,
            "max_epochs": float(base["max_epochs"]),
            "startup_s": round(statistics.median(float(r["startup_s"]) for r in done
                                                 if r.get("startup_s") is not None), 2),
            "num_classes": workload.classes,
            "note": (f"{workload.describe()}; from {source} ({len(done)} runs) and "
                     f"{len(compute) - len(cells)} measured one-host points, made "
                     f"{datetime.date.today()} at commit {_commit()}; synthetic stand-in")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=None)
    parser.add_argument("--bound-gflops", type=float, default=None,
                        help="this machine's fp32 matmul bound on all cores (default: measure)")
    parser.add_argument("--points", default=None, help="bench.rehearsal_points' records "
                        "(default: bench/tables/rehearsal-points.<the table's class>.jsonl)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: any class's table, "
                        "a 1024² matmul for 2 s, written under bench-work/")
    add_workload_option(parser, "whose table to calibrate on")
    args = parser.parse_args(argv)
    workload = WORKLOADS[args.workload]
    path, records = load_table(args.table, quick=args.quick, workload=workload)
    if not args.quick:
        require_complete(records, load_space(workload.space), workload)
    cores = int(records[0]["machine"]["cores"])
    bound = args.bound_gflops
    n, secs = (1024, 2.0) if args.quick else (4096, 10.0)
    if bound is None:
        bound = matmul_bound("float32", n, secs) / 1e9  # FLOP/s -> GFLOP/s
    flags = isa_flags()  # a bf16 bound only where bf16 runs natively (else it is emulated)
    bf16 = matmul_bound("bfloat16", n, secs) / 1e9 if flags and has_bf16(flags) else None
    klass = records[0]["machine"]["machine_class"]
    points = read_jsonl(Path(args.points) if args.points
                        else TABLES / f"rehearsal-points.{klass}.jsonl")
    doc = calibration(records, bound, cores, str(path.relative_to(path.parents[2])
                                                 if len(path.parents) > 2 else path),
                      bf16_bound_gflops=bf16, points=points, workload=workload)
    out = Path(args.out) if args.out else (
        Path("bench-work") / "calibration-quick.json" if args.quick
        else OUT / f"{doc['name']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    here = machine()["machine_class"]
    print(f"{out}: {len(doc['compute'])} compute cells, {len(doc['convergence'])} convergence "
          f"runs ({sum(p['epochs'] is None for p in doc['convergence'])} missed), fp32 bound "
          f"{doc['fp32_gflops_per_core']} GFLOP/s per core (machine class {doc['machine_class']}"
          f"{'' if here == doc['machine_class'] else f', measured on {here}'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
