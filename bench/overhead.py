"""Where a trial's wall time goes before and around training, from the job's own phase marks.

    .venv/bin/python -m bench.overhead [--quick] [--workdir bench-work]

Runs the real job under ``mpirun -np 2`` (demo size, shard cache already built, as in a study
after its first trial) and splits its wall time:
mpirun start → Python up → TensorFlow imported → Horovod ready → data open → model built and
broadcast → first step (tracing) → steady-state steps, plus evaluation and the end.
Overhead = everything that is not a steady-state training or evaluation step; it is reported in
seconds and as a share of a 5-minute (300 s) trial, the issue's yardstick.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import emit, machine, run_job, synth_tree, table
from mcnn_base.native_logs import filter_native_info

TRIAL_S = 300.0
TARGET = 0.05
ORDER = ("python_start", "tf_imported", "comm_ready", "data_ready", "model_ready", "clock")
LABELS = {"python_start": "mpirun + Python interpreter up", "tf_imported": "import TensorFlow",
          "comm_ready": "Horovod init", "data_ready": "shard cache opened",
          "model_ready": "model built + broadcast, tf.data pipelines",
          "clock": "until the TTA clock starts"}


def split(events: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Phase durations (s) from one job's events."""
    start = next(e for e in events if e["event"] == "start")
    epochs = [e for e in events if e["event"] == "epoch"]
    done = next(e for e in events if e["event"] == "done")
    phases = start["phases"]
    rows: list[tuple[str, float]] = []
    previous = 0.0
    for key in ORDER:
        rows.append((LABELS[key], phases[key] - previous))
        previous = phases[key]
    steps = [e["step"] - p for e, p in zip(epochs, [0] + [e["step"] for e in epochs[:-1]],
                                            strict=True)]
    step_s = statistics.median(e["train_s"] / n for e, n in zip(epochs[1:], steps[1:],
                                                                strict=True))
    first_excess = epochs[0]["first_step_s"] - step_s
    rows.append(("first step beyond a steady step (tracing)", first_excess))
    train = sum(e["train_s"] for e in epochs) - first_excess
    evals = sum(e["eval_s"] for e in epochs)
    after = max(0.0, wall_s - phases["clock"] - done["elapsed_s"])
    rows.append(("after training (fingerprints, exit, mpirun teardown)", after))
    overhead = phases["clock"] + first_excess + after
    return {"rows": rows, "overhead_s": overhead, "train_s": train, "eval_s": evals,
            "wall_s": wall_s, "steady_step_s": step_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run")
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.workdir).resolve()
    root = synth_tree(work / f"data-64x80-{96 if args.quick else 360}", (64, 80),
                      96 if args.quick else 360, 5)
    cfg = {"data": {"root": str(root), "image_size": [64, 80], "normalize": "standardize",
                    "cache_dir": str(work / "cache")},
           "per_worker_batch": 8, "max_epochs": 2 if args.quick else 6,
           "intra_op_threads": 1, "inter_op_threads": 1, "seed": 0}
    run_job(cfg, work / "jobs" / "overhead-warm", ranks=2, mpi=True, binding="core")  # cache
    results = []
    for i in range(1 if args.quick else args.repeats):
        t0 = time.time()
        events, job = run_job(cfg, work / "jobs" / f"overhead-{i}", ranks=2, mpi=True,
                              binding="core")
        results.append(split(events, time.time() - job.started if job else time.time() - t0))
    med = {key: statistics.median(r[key] for r in results)
           for key in ("overhead_s", "train_s", "eval_s", "wall_s", "steady_step_s")}
    rows = [[label, statistics.median(r["rows"][i][1] for r in results)]
            for i, (label, _) in enumerate(results[0]["rows"])]
    share = med["overhead_s"] / TRIAL_S
    facts = machine()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores; {facts['date']}; "
          f"median of {len(results)} job(s), mpirun -np 2, 64x80")
    print(table(["phase", "seconds"], rows))
    print(f"\noverhead {med['overhead_s']:.2f}s of a {med['wall_s']:.1f}s job "
          f"({med['overhead_s'] / med['wall_s']:.1%}); of a {TRIAL_S:.0f}s trial: {share:.1%} "
          f"(target <= {TARGET:.0%}: {'met' if share <= TARGET else 'NOT met'})")
    emit("overhead", {"machine": facts, "quick": args.quick, "phases": dict(rows),
                      **med, "share_of_300s_trial": share})
    return 0


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
