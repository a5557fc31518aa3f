"""Peak resident memory of a training rank: measured vs the memory model, and its calibration.

    .venv/bin/python -m bench.memory [--quick] [--workdir bench-work] [--no-write]

Runs the real training job (one process, or two ranks under ``mpirun`` with Horovod; a few steps
and one evaluation) at several image sizes, per-rank batches and precisions, one point with more
images than the pipeline caches, and reads each run's peak RSS (``VmHWM``, which the
job reports in its ``done`` event). Each measured point is appended to
``bench/tables/memory.<machine class>.jsonl`` as it finishes; a rerun skips recorded points.

Then it fits the model's three constants (:class:`explorer.mcnn.memory.MemoryCalibration`) to all
points and writes them to ``explorer/mcnn/memory_calibration.json``, which the planner's memory
rule uses. The error it reports is leave-one-out: each point predicted by a fit to the others.
Target: every point within 15 %. ``--quick`` (CI smoke) measures two small points into the work
folder and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    append_jsonl,
    emit,
    machine,
    read_jsonl,
    run_job,
    synth_tree,
    table,
    verdict,
)
from explorer.mcnn.memory import CALIBRATION_FILE, MemoryCalibration, MemoryEstimate, predict_peak
from mcnn_base.cpu import has_bf16, isa_flags

__all__ = ["Point", "fit", "main"]

TABLES = Path(__file__).resolve().parent / "tables"
TARGET = 0.15
MIB = 1024.0**2


@dataclass(frozen=True)
class Point:
    size: tuple[int, int]
    batch: int
    precision: str
    images: int  # in the synthetic tree (a fifth validate; 24 per class: 48 give two classes)
    ranks: int = 1  # 2: under mpirun with Horovod, one thread each

    @property
    def key(self) -> str:
        return (f"{self.size[0]}x{self.size[1]}-b{self.batch}-{self.precision}-n{self.images}"
                + (f"-r{self.ranks}" if self.ranks > 1 else ""))


POINTS = [Point((64, 80), 32, "float32", 360), Point((256, 320), 8, "float32", 96),
          Point((512, 640), 4, "float32", 48), Point((512, 640), 8, "float32", 48),
          Point((1024, 1280), 1, "float32", 48), Point((1024, 1280), 2, "float32", 48),
          Point((512, 640), 4, "mixed_bfloat16", 48),
          Point((1024, 1280), 2, "mixed_bfloat16", 48),
          Point((256, 320), 8, "float32", 96, ranks=2),  # Horovod, its fusion buffer
          # 2.2 GB of images: not cached, the shuffle buffer holds 1 GiB of them (273)
          Point((1024, 1280), 1, "float32", 560)]
QUICK = [Point((64, 80), 8, "float32", 60), Point((96, 120), 4, "float32", 60)]


def _config(root: Path, p: Point, cache: Path) -> dict[str, Any]:
    return {"data": {"root": str(root), "image_size": list(p.size), "cache_dir": str(cache),
                     "normalize": "standardize"},
            "per_worker_batch": p.batch, "eval": True, "max_steps": 4, "max_epochs": 100,
            "precision": p.precision, "intra_op_threads": _threads(p), "inter_op_threads": 1,
            "comm": "local" if p.ranks == 1 else "horovod", "seed": 0}


def _threads(p: Point) -> int:
    return max(1, len(os.sched_getaffinity(0)) // p.ranks)


def measure(p: Point, work: Path) -> dict[str, Any]:
    """Run the job at ``p``; its peak RSS and the split it trained on."""
    # its own tree (3 classes): other benches keep trees of the same size with other classes
    root = synth_tree(work / f"data-{p.size[0]}x{p.size[1]}-{p.images}-m3", p.size, p.images, 3)
    events, _job = run_job(_config(root, p, work / "cache"), work / "jobs" / f"memory-{p.key}",
                           ranks=p.ranks, threads=_threads(p), mpi=p.ranks > 1,
                           timeout_s=1200.0)
    start = next(e for e in events if e.get("event") == "start")
    done = next(e for e in events if e.get("event") == "done")
    return {"key": p.key, "size": list(p.size), "batch": p.batch, "precision": p.precision,
            "ranks": p.ranks, "n_train": int(start["n_train"]), "n_val": int(start["n_val"]),
            "peak_rss_mib": float(done["peak_rss_mib"]), "steps": int(done["steps"]),
            "machine": machine()}


def _parts(r: dict[str, Any], k: float) -> MemoryEstimate:
    return predict_peak(image_size=(r["size"][0], r["size"][1]), per_rank_batch=r["batch"],
                        precision=r["precision"], n_train=r["n_train"], n_val=r["n_val"],
                        world=int(r.get("ranks", 1)), calibration=MemoryCalibration(0.0, k))


def _predicted(r: dict[str, Any], cal: MemoryCalibration) -> float:
    return predict_peak(image_size=(r["size"][0], r["size"][1]), per_rank_batch=r["batch"],
                        precision=r["precision"], n_train=r["n_train"], n_val=r["n_val"],
                        world=int(r.get("ranks", 1)), calibration=cal).peak_bytes / MIB


def fit(records: list[dict[str, Any]], source: str = "") -> MemoryCalibration:
    """The three constants that minimise the squared relative errors of ``records``: for each
    activation factor on a grid (0.3 to 4), the runtime and workspace by least squares (the
    workspace at least 0); the factor whose fit errs least."""
    best: tuple[float, MemoryCalibration] | None = None
    measured = np.array([float(r["peak_rss_mib"]) for r in records])
    pixels = np.array([r["size"][0] * r["size"][1] * 3 * 4 / MIB for r in records])
    for step in range(30, 401):
        k = step / 100.0
        bare = np.array([_parts(r, k).peak_bytes / MIB for r in records])
        weights = 1.0 / measured  # relative errors
        x = np.c_[np.ones(len(records)), pixels] * weights[:, None]
        coef = np.linalg.lstsq(x, (measured - bare) * weights, rcond=None)[0]
        if coef[1] < 0:  # no workspace: the runtime alone
            coef = np.array([float(np.sum((measured - bare) * weights**2)
                                   / np.sum(weights**2)), 0.0])
        cal = MemoryCalibration(float(coef[0]), k, source, float(coef[1]))
        loss = float(np.sum(((bare + coef[0] + coef[1] * pixels) / measured - 1.0) ** 2))
        if best is None or loss < best[0]:
            best = (loss, cal)
    assert best is not None
    return best[1]


def leave_one_out(records: list[dict[str, Any]]) -> list[float]:
    """Each record's predicted peak from a fit to the others, MiB."""
    return [_predicted(r, fit(records[:i] + records[i + 1:])) for i, r in enumerate(records)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (two small points)")
    parser.add_argument("--workdir", default="bench-work", help="data, shards and job folders")
    parser.add_argument("--no-write", action="store_true",
                        help="do not write the calibration file")
    args = parser.parse_args(argv)
    work = Path(args.workdir).resolve()
    facts = machine()
    flags = isa_flags()
    native_bf16 = flags is not None and has_bf16(flags)
    points = QUICK if args.quick else [
        p for p in POINTS if p.precision == "float32" or native_bf16]
    path = (work / "memory-quick.jsonl" if args.quick
            else TABLES / f"memory.{facts['machine_class']}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = {r["key"]: r for r in read_jsonl(path)}
    for p in points:
        if p.key in recorded:
            continue
        record = measure(p, work)
        append_jsonl(path, record)
        recorded[p.key] = record
        print(f"measured {p.key}: peak {record['peak_rss_mib']:.0f} MiB", flush=True)
    records = [recorded[p.key] for p in points]
    print(f"machine: {facts['cpu']}, {facts['cores']} cores, class {facts['machine_class']}; "
          f"{facts['date']}; table {path}")
    if len(records) < 3:
        cal = fit(records)
        print(f"{len(records)} points: too few to hold any out; fit {cal.to_dict()}")
        emit("memory", {"points": records, "calibration": cal.to_dict()})
        return 0
    source = (f"bench.memory: {len(records)} points on {facts['machine_class']} "
              f"({facts['cpu']}), {facts['date']}")
    cal = fit(records, source)
    held_out = leave_one_out(records)
    rows, errors = [], []
    for r, loo in zip(records, held_out, strict=True):
        measured = float(r["peak_rss_mib"])
        err = loo / measured - 1.0
        errors.append(abs(err))
        estimate = predict_peak(image_size=(r["size"][0], r["size"][1]),
                                per_rank_batch=r["batch"], precision=r["precision"],
                                n_train=r["n_train"], n_val=r["n_val"],
                                world=int(r.get("ranks", 1)), calibration=cal)
        rows.append([f"{r['size'][0]}x{r['size'][1]}", r["batch"], r["precision"],
                     int(r.get("ranks", 1)), r["n_train"] + r["n_val"],
                     measured, loo, f"{err:+.1%}", estimate.phase])
    print(table(["size", "batch", "precision", "ranks", "images", "measured MiB",
                 "predicted MiB (LOO)", "error", "peak phase"], rows))
    worst = max(errors)
    print(f"\nfit to all {len(records)} points: runtime {cal.runtime_mib:.0f} MiB, activation "
          f"factor {cal.activation_factor:.2f}, workspace {cal.workspace_images:.1f} float32 "
          f"images; leave-one-out error median "
          f"{statistics.median(errors):.1%}, worst {worst:.1%} "
          f"(target {verdict(worst, TARGET)})")
    if not args.quick and not args.no_write:
        CALIBRATION_FILE.write_text(json.dumps(cal.to_dict(), indent=2) + "\n")
        print(f"wrote {CALIBRATION_FILE}")
    emit("memory", {"points": records, "calibration": cal.to_dict(),
                    "loo_errors": errors, "machine": facts})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
