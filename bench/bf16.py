"""Precision modes on the bench workload, same run: speed and accuracy side by side.

    .venv/bin/python -m bench.bf16 [--seeds 3] [--workdir bench-work] [--quick]
                                   [--workload ID]

Runs the recorded table's best config of the bench workload (``bench.table.table_best``: one
process with both cores) to max epochs in each precision mode the job offers, for several seeds,
interleaved by seed so that slow drift of the machine hits every mode alike:

* ``float32``;
* ``mixed_bfloat16``: bf16 compute, float32 variables (Keras's mixed policy);
* ``float32_bf16math``: a float32 model whose math oneDNN may run in bf16
  (``ONEDNN_DEFAULT_FPMATH_MODE=BF16``, set by the job before TensorFlow loads).

Each mode runs only where the planner would let a study run it: ``mixed_bfloat16`` on bf16
hardware (AVX512_BF16 or AMX), ``float32_bf16math`` on AMX (oneDNN's bf16 math for float32
primitives is in its AMX kernels; elsewhere the mode is plain float32). Each run is appended to
``bench/tables/precision.<machine class>.jsonl`` as it finishes and a rerun skips what is
recorded. Reported per mode: median images/s, TTA at the workload's target (training seconds to
the first evaluation at or over it, over the runs that reached it: read it with the count that
did), best validation accuracy, how many seeds reached the target, and each against float32 of
the same seed (median ratio and its range). Fast and wrong is
not a win. Figures are on a synthetic stand-in for BBBC021.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

from bench.common import append_jsonl, emit, machine, read_jsonl, synth_tree, table
from bench.table import (
    TABLES,
    Planned,
    add_workload_option,
    grid_params,
    load_table,
    reference_layout,
    require_complete,
    run_one,
    table_best,
)
from explorer.workloads import WORKLOADS
from launchers.hosts import detect_local
from mcnn_base.native_logs import filter_native_info
from search_spaces.space import load_space

__all__ = ["MODES", "main", "summarize"]

MODES = ("float32", "mixed_bfloat16", "float32_bf16math")


def _tta(record: dict[str, Any], target: float) -> float | None:
    return next((float(c[1]) for c in record["curve"] if float(c[2]) >= target), None)


def summarize(records: list[dict[str, Any]], target: float) -> dict[str, dict[str, Any]]:
    """Per mode: medians over its completed runs, and ratios to float32 of the same seed."""
    by = {m: {int(r["seed"]): r for r in records if r["mode"] == m and r["state"] == "completed"}
          for m in MODES}
    out: dict[str, dict[str, Any]] = {}
    for mode, runs in by.items():
        if not runs:
            continue
        rates = [float(r["images_per_sec"]) for r in runs.values() if r.get("images_per_sec")]
        ttas = [t for r in runs.values() if (t := _tta(r, target)) is not None]
        best = [max(float(c[2]) for c in r["curve"]) for r in runs.values() if r["curve"]]
        row: dict[str, Any] = {
            "runs": len(runs), "reached": len(ttas),
            "images_per_sec": statistics.median(rates) if rates else None,
            "tta_s": statistics.median(ttas) if ttas else None,
            "best_val_accuracy": statistics.median(best) if best else None}
        pairs = [(r, by["float32"][s]) for s, r in runs.items() if s in by["float32"]]
        speed = [float(r["images_per_sec"]) / float(f["images_per_sec"]) for r, f in pairs
                 if r.get("images_per_sec") and f.get("images_per_sec")]
        tta = [a / b for r, f in pairs if (a := _tta(r, target)) is not None
               and (b := _tta(f, target)) is not None]
        row["speed_vs_fp32"] = (statistics.median(speed), min(speed), max(speed)) if speed \
            else None
        row["tta_vs_fp32"] = (statistics.median(tta), min(tta), max(tta)) if tta else None
        out[mode] = row
    return out


def _ratio(r: tuple[float, float, float] | None) -> str:
    return "-" if r is None else f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: one seed, one epoch "
                        "on a small tree into WORKDIR (exercises the code, measures nothing)")
    add_workload_option(parser, "whose table's best config to run")
    args = parser.parse_args(argv)
    workload = WORKLOADS[args.workload]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(args.workdir).resolve()
    os.environ.setdefault("MCNN_CACHE_DIR", str(root / "cache"))
    space = load_space(workload.space)
    facts = machine()
    host = detect_local()
    hosts = [host]
    allowed = {"float32": True, "mixed_bfloat16": host.bf16_hardware,
               "float32_bf16math": host.amx_hardware}
    modes = [m for m in MODES if allowed[m]]
    ref = reference_layout(space)
    if args.quick:
        data = synth_tree(root / "data-64x80-400-m3", workload.tiff_size, 400, workload.moas)
        n_train, extra, seeds = 320, {"max_epochs": 1}, [0]
        params, config_id = {**grid_params(space)[0], **ref}, "grid0"
        path = root / "precision-quick.jsonl"
    else:
        _, records = load_table(None, quick=False, workload=workload)  # refused before any data
        require_complete(records, space, workload)
        best = table_best(records, space, workload.target_accuracy)
        if best is None:
            raise SystemExit("error: no config of the recorded table reaches the target")
        data = root / f"data-{workload.id}"
        if not (data / "BBBC021_v1_image.csv").is_file():
            workload.synthesize(data)
        n_train, extra, seeds = workload.images - workload.val_images, {}, list(range(args.seeds))
        params, config_id = {**best["params"], **ref}, best["config_id"]
        path = TABLES / f"precision.{facts['machine_class']}.jsonl"
    for m in MODES:
        if m not in modes:
            print(f"{m}: not run on {facts['cpu']} ("
                  f"{'ISA flags not read' if allowed[m] is None else 'no hardware for it'})")
    ours = [r for r in read_jsonl(path) if r["config_id"] == f"{r['mode']}:{config_id}"
            and r.get("workload") == workload.id]
    done = {(r["mode"], int(r["seed"])) for r in ours if r["state"] == "completed"}
    work = root / ("precision-quick-runs" if args.quick else f"precision-{workload.id}")
    for seed in seeds:
        for mode in modes:
            if (mode, seed) in done:
                continue
            p = Planned(f"{mode}:{config_id}", "precision", params, {"precision": mode}, seed)
            record = {**run_one(p, space, hosts, n_train, data, work, extra, workload), "mode": mode}
            append_jsonl(path, record)
            print(f"{mode} seed {seed}: {record['state']}, {record['images_per_sec'] or 0:.0f} "
                  f"img/s, TTA {_tta(record, workload.target_accuracy)}", flush=True)
    records = [r for r in read_jsonl(path) if r["config_id"] == f"{r['mode']}:{config_id}"
               and r.get("workload") == workload.id and int(r["seed"]) in seeds]
    summary = summarize(records, workload.target_accuracy)
    layout = f"{params.get('ranks_per_node', 1)} × {params.get('threads_per_rank', 1)}"
    print(f"workload {workload.describe()}; config {config_id} ({layout}); {facts['cpu']} "
          f"({facts['machine_class']}); seeds {seeds}; synthetic stand-in")
    print(table(["mode", "runs", "reached target", "images/s", "× fp32 images/s",
                 f"TTA at {workload.target_accuracy} (s)", "× fp32 TTA", "best val acc"],
                [[m, s["runs"], s["reached"], s["images_per_sec"], _ratio(s["speed_vs_fp32"]),
                  "not reached" if s["tta_s"] is None else s["tta_s"], _ratio(s["tta_vs_fp32"]),
                  s["best_val_accuracy"]] for m, s in summary.items()]))
    emit("bf16", {"machine": facts, "quick": args.quick, "seeds": seeds, "config": config_id,
                  "summary": summary})
    return 0


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
