"""bf16 against fp32 on the same training, same run: speed and accuracy together.

    .venv/bin/python -m bench.bf16 [--quick] [--workdir bench-work] [--seeds 3]

Trains the demo-size task (64×80, 360 synthetic images, 6 classes) for a fixed number of epochs
with the same config in ``float32`` and ``mixed_bfloat16`` (one process, all cores), for several
seeds. From each run's epochs: TTA (the TTA clock at the first evaluation at or above the target,
as the job itself would stop), the final and best validation accuracy, and images/s. Reported:
medians and bf16 ÷ fp32 — fast and wrong is not a win.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

from bench.common import emit, machine, median_rate, run_job, synth_tree, table
from mcnn_base.native_logs import filter_native_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (1 seed, 2 epochs)")
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.45)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.workdir).resolve()
    images = 96 if args.quick else 360
    root = synth_tree(work / f"data-64x80-{images}", (64, 80), images, 5)
    cores = len(os.sched_getaffinity(0))
    seeds = [0] if args.quick else list(range(args.seeds))
    runs: dict[str, list[dict[str, Any]]] = {"float32": [], "mixed_bfloat16": []}
    for seed in seeds:
        for precision in runs:
            cfg = {"data": {"root": str(root), "image_size": [64, 80], "normalize": "standardize",
                            "cache_dir": str(work / "cache")},
                   "per_worker_batch": 16, "max_epochs": 2 if args.quick else 12,
                   "schedule": {"piecewise": "0.02;8;0.004", "warmup_epochs": 0.5},
                   "precision": precision, "seed": seed,
                   "intra_op_threads": cores, "inter_op_threads": 2, "comm": "local"}
            events, _ = run_job(cfg, work / "jobs" / f"bf16-{precision}-{seed}", threads=cores)
            epochs = [e for e in events if e["event"] == "epoch"]
            hit = next((e for e in epochs if e["val_accuracy"] >= args.target), None)
            runs[precision].append({"seed": seed, "tta_s": None if hit is None else
                                    hit["elapsed_s"],
                                    "final_val_accuracy": epochs[-1]["val_accuracy"],
                                    "best_val_accuracy": max(e["val_accuracy"] for e in epochs),
                                    "images_per_sec": median_rate(events)})

    def med(precision: str, key: str) -> float | None:
        values = [r[key] for r in runs[precision] if r[key] is not None]
        return statistics.median(values) if values else None

    rows = []
    summary: dict[str, Any] = {}
    for key in ("tta_s", "final_val_accuracy", "best_val_accuracy", "images_per_sec"):
        fp, bf = med("float32", key), med("mixed_bfloat16", key)
        ratio = None if fp in (None, 0) or bf is None else bf / fp
        rows.append([key, fp if fp is not None else "not reached",
                     bf if bf is not None else "not reached",
                     "-" if ratio is None else ratio])
        summary[key] = {"float32": fp, "mixed_bfloat16": bf, "bf16_over_fp32": ratio}
    reached = {p: sum(r["tta_s"] is not None for r in runs[p]) for p in runs}
    facts = machine()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores; {facts['date']}; seeds {seeds}, "
          f"target {args.target}")
    print(table(["median over seeds", "float32", "mixed_bfloat16", "bf16 / fp32"], rows))
    print(f"runs that reached the target: fp32 {reached['float32']}/{len(seeds)}, "
          f"bf16 {reached['mixed_bfloat16']}/{len(seeds)}")
    emit("bf16", {"machine": facts, "quick": args.quick, "seeds": seeds, "runs": runs,
                  "summary": summary, "reached": reached})
    return 0


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
