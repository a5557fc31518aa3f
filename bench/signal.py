"""Does the bench workload have signal? TTA spread between configs against spread between seeds.

A search can only tell configs apart if their TTAs differ by more than one config's runs differ
from seed to seed. This runs a few fixed configs of workload ``bench-v1`` (spread over its space,
plus the seed baseline mapped onto this machine) with several seeds each, to the target, and
reports

* between configs: the range of the per-config median TTAs;
* between seeds: the median over configs of each config's range of TTAs;
* their ratio (target: >= 3).

A run that misses the target is counted at its full training time and flagged. Results go to
``WORKDIR/signal/results.jsonl`` as they come: a rerun skips what is recorded (resumable).
Figures are on a synthetic stand-in for BBBC021.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench.common import emit, machine, run_job, synth_tree, table, verdict
from explorer.outcome import outcome_from_events
from explorer.workloads import WORKLOADS
from launchers.hosts import detect_local
from mcnn_base.native_logs import filter_native_info
from search_spaces.baseline import seed_baseline
from search_spaces.plan import build_plan
from search_spaces.space import load_space

WORKLOAD = WORKLOADS["bench-v1"]
# fixed configs spread over the space: (name, registry values)
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("lr0.02-b32", {"peak_lr": 0.02, "per_node_batch": 32, "warmup_epochs": 1.0}),
    ("lr0.05-b32", {"peak_lr": 0.05, "per_node_batch": 32, "warmup_epochs": 1.0}),
    ("lr0.05-b16", {"peak_lr": 0.05, "per_node_batch": 16, "warmup_epochs": 1.0}),
    ("lr0.08-b64", {"peak_lr": 0.08, "per_node_batch": 64, "warmup_epochs": 1.0}),
]
LAYOUT = {"ranks_per_node": 1, "threads_per_rank": 2, "binding": "none"}


def _spread(values: list[float]) -> float:
    return max(values) - min(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (2 configs × 2 seeds, "
                        "2 epochs on a small tree: exercises the code, measures nothing)")
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(args.workdir).resolve()
    os.environ.setdefault("MCNN_CACHE_DIR", str(root / "cache"))
    space = load_space(WORKLOAD.space)
    if args.quick:  # the small tree holds fewer updates per epoch than the space asks for
        space = dataclasses.replace(space, constraints=dataclasses.replace(
            space.constraints, min_updates_per_epoch=1))
    if args.quick:  # a small tree of the same recipe: the smoke run only exercises the code
        data = synth_tree(root / "data-64x80-400-m3", WORKLOAD.tiff_size, 400, WORKLOAD.moas)
    else:
        data = root / f"data-{WORKLOAD.id}"
        if not (data / "BBBC021_v1_image.csv").is_file():
            WORKLOAD.synthesize(data)
    work = root / ("signal-quick" if args.quick else "signal")
    work.mkdir(parents=True, exist_ok=True)
    results = work / "results.jsonl"
    done = {(r["config"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())
            } if results.is_file() else set()
    hosts = [detect_local()]
    n_train = 320 if args.quick else WORKLOAD.images - WORKLOAD.val_images
    baseline = seed_baseline(space, hosts, n_train)
    configs = [*CONFIGS, ("seed-baseline", baseline.params)]
    seeds = [0, 1] if args.quick else list(range(args.seeds))
    if args.quick:
        configs = configs[1:3]
    over: dict[str, Any] = {"target_accuracy": WORKLOAD.target_accuracy}
    if args.quick:
        over["max_epochs"] = 2
    for name, params in configs:
        extra = baseline.overrides if name == "seed-baseline" else {}
        plan = build_plan(space, {**LAYOUT, **params}, data_root=data, n_train=n_train,
                          hosts=hosts, overrides={**extra, **over})
        assert plan.feasible and plan.resources is not None, plan.reason
        for seed in seeds:
            if (name, seed) in done:
                continue
            cfg = {**plan.config, "seed": seed}
            res = plan.resources
            events, job = run_job(cfg, work / f"{name}-seed{seed}", ranks=res.ranks_per_node,
                                  threads=res.threads_per_rank, binding=res.binding,
                                  mpi=res.ranks_per_node > 1, env=dict(res.env))
            outcome = outcome_from_events(events, job.state, job.returncode, pruned=False,
                                          nodes=1, wall_s=0.0)
            trained = max((float(e.get("elapsed_s") or 0.0) for e in events
                           if e.get("event") == "epoch"), default=0.0)
            record = {"workload": WORKLOAD.id, "config": name, "seed": seed,
                      "tta_s": outcome.tta_s, "tta_interp_s": outcome.tta_interp_s,
                      "trained_s": trained, "best_val_accuracy": outcome.best_val_accuracy,
                      "images_per_sec": outcome.images_per_sec, **machine()}
            with results.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
    runs = [json.loads(line) for line in results.read_text().splitlines()]
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["config"] in dict(configs) and r["seed"] in seeds:
            by_config.setdefault(r["config"], []).append(r)
    rows, medians, seed_spreads = [], [], []
    for name, rs in by_config.items():
        ttas = [r["tta_s"] if r["tta_s"] is not None else r["trained_s"] for r in rs]
        missed = sum(r["tta_s"] is None for r in rs)
        medians.append(statistics.median(ttas))
        seed_spreads.append(_spread(ttas))
        rows.append([name, len(rs), missed, statistics.median(ttas), _spread(ttas),
                     statistics.median(r["best_val_accuracy"] for r in rs)])
    between = _spread(medians) if len(medians) > 1 else 0.0
    within = statistics.median(seed_spreads) if seed_spreads else 0.0
    ratio = between / within if within > 0 else float("inf")
    print(f"workload {WORKLOAD.describe()} (synthetic stand-in)")
    print(table(["config", "runs", "missed", "median TTA s", "range s", "median best acc"], rows))
    print(f"between configs {between:.1f} s, between seeds {within:.1f} s: ratio {ratio:.2f} "
          f"({verdict(ratio, 3.0, at_least=True)})" + (" [quick: measures nothing]"
                                                       if args.quick else ""))
    emit("signal", {"workload": WORKLOAD.id, "quick": args.quick, "between_configs_s": between,
                    "between_seeds_s": within, "ratio": ratio, "configs": rows,
                    "machine": machine()})
    return 0


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
