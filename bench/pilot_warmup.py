"""A pilot, pre-registered in BENCHMARKS §5: does a short LR warm-up make bench-v4's seeds agree?

    .venv/bin/python -m bench.pilot_warmup [--workdir bench-work] [--read]

Runs (resumable, on bench-v4's data and evaluation rule, to max epochs on 1 × 2, with
``bench.table.run_one``): the practitioner baseline with seeds 5–11 (seeds 0–4 are the table's),
and two grid points with a warm-up of 0.333 epochs instead of none, seeds 0–7 each. ``--read``
runs nothing and prints the reading: the SD of log TTA (step TTA, each run's own clock; a miss
counts at the end of its clock) per config and pooled over the warm-up configs and over the same
two grid points without a warm-up (the table's 15 seeds each), with the F interval of the ratio.
Records: ``bench/tables/pilots/warmup.<workload>.<class>.jsonl``; ``--read`` reads this
machine class's, else another class's (and says so). Synthetic stand-in.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import append_jsonl, emit, machine, read_jsonl
from bench.signal import own_run, pooled_log_sd, reached_logs
from bench.stats import sd_ratio_interval
from bench.table import (
    REFERENCE_LAYOUT,
    TABLES,
    WORKLOAD,
    Planned,
    config_name,
    practitioner_file,
    read_table,
    run_one,
    table_path,
)
from launchers.hosts import HostInfo, detect_local
from mcnn_base.native_logs import filter_native_info
from search_spaces.baseline import file_baseline
from search_spaces.space import load_space

WARM = ((0.01, 32, 5.0), (0.02, 16, 3.0))  # (peak LR, batch, first decay epoch) of the grid


def _point(lr: float, batch: int, decay: float, warmup: float) -> dict[str, Any]:
    return {"peak_lr": lr, "warmup_epochs": warmup, "first_decay_epoch": decay,
            "per_node_batch": batch, **REFERENCE_LAYOUT}  # the table's grid runs' layout


def planned(hosts: Sequence[HostInfo]) -> list[Planned]:
    prac = file_baseline(practitioner_file(WORKLOAD), hosts)
    runs = [Planned("practitioner", "pilot", prac.params, prac.overrides, seed=s)
            for s in range(5, 12)]
    for lr, batch, decay in WARM:
        p = _point(lr, batch, decay, 0.333)
        runs += [Planned(config_name(p), "pilot", p, seed=s) for s in range(8)]
    return runs


def verdict(ratio: float, lower: float) -> str:
    """The pre-registered verdict at 0.85 (BENCHMARKS §5)."""
    return "the warm-up helps" if ratio >= 2.0 and lower > 1.0 else "no effect shown"


def read(pilot: Sequence[dict[str, Any]], table: Sequence[dict[str, Any]],
         targets: Sequence[float] = (0.85, 0.9)) -> list[dict[str, Any]]:
    """Print the reading and return it, a dict per target; a config with no completed run yet
    (a pilot still recording) is said and left out of its pool."""
    ok = [r for r in [*pilot, *table] if r.get("state") == "completed"]
    warm = {"practitioner": [r for r in ok if r["config_id"] == "practitioner"
                             and r["phase"] in ("confirm", "pilot")]}
    cold: dict[str, list[dict[str, Any]]] = {}
    for lr, batch, decay in WARM:
        for groups, wu in ((warm, 0.333), (cold, 0.0)):
            name = config_name(_point(lr, batch, decay, wu))
            groups[name] = [r for r in ok if r["config_id"] == name]
    out = []
    for target in targets:
        pooled = {}
        for label, groups in (("warm-up", warm), ("no warm-up", cold)):
            for name in (n for n, recs in groups.items() if not recs):
                print(f"{target}: {label:10s} {name:32s} no completed run yet")
            runs = {n: [own_run(r) for r in recs] for n, recs in groups.items() if recs}
            # step TTA on each run's own clock; a miss counts at the end of it
            logs = reached_logs(runs, target, censor=True)
            for name, lg in zip(runs, logs, strict=True):
                print(f"{target}: {label:10s} {name:32s} {len(lg):2d} seeds, SD of log TTA "
                      f"{pooled_log_sd([lg])[0]:.3f}, TTA {math.exp(min(lg)):.1f}-"
                      f"{math.exp(max(lg)):.1f} s")
            pooled[label] = pooled_log_sd(logs)
        (sc, dc), (sw, dw) = pooled["no warm-up"], pooled["warm-up"]
        ratio = sc / sw if sw > 0 else math.nan
        lo, hi = sd_ratio_interval(ratio, dc, dw)
        said = verdict(ratio, lo) if target == 0.85 else ""
        print(f"{target}: pooled SD, warm-up {sw:.3f} ({dw} df), no warm-up {sc:.3f} ({dc} df): "
              f"ratio {ratio:.2f} [{lo:.2f}, {hi:.2f}] (90 %)" + (f": {said}" if said else ""))
        out.append({"target": target, "sd_warm": sw, "df_warm": dw, "sd_cold": sc,
                    "df_cold": dc, "ratio": ratio, "ci": [lo, hi], "verdict": said or None})
    return out


def _pilot_file(machine_class: str) -> Path:
    return TABLES / "pilots" / f"warmup.{WORKLOAD.id}.{machine_class}.jsonl"


def _recorded_class(here: str) -> str:
    """This machine class when it has pilot records, else one that has (so that a smoke run
    reads something), else this one."""
    if _pilot_file(here).is_file():
        return here
    found = sorted((TABLES / "pilots").glob(f"warmup.{WORKLOAD.id}.*.jsonl"))
    return found[0].name.removeprefix(f"warmup.{WORKLOAD.id}.").removesuffix(".jsonl") \
        if found else here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--read", action="store_true", help="print the reading, run nothing")
    args = parser.parse_args(argv)
    here = machine()["machine_class"]
    out = _pilot_file(here)
    if args.read:
        cls = _recorded_class(here)
        path = _pilot_file(cls)
        pilot = read_jsonl(path)
        if not pilot:
            print(f"no pilot records ({path}): run without --read to record them")
            return 0
        print(f"pilot {path} (machine class {cls}{'' if cls == here else ', not this one'}; "
              "synthetic stand-in)")
        emit("pilot_warmup", {"pilot": str(path), "machine_class": cls,
                              "targets": read(pilot, read_table(table_path(WORKLOAD, cls)))})
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(args.workdir).resolve()
    os.environ.setdefault("MCNN_CACHE_DIR", str(root / "cache"))
    hosts = [detect_local()]
    data = root / f"data-{WORKLOAD.id}"
    if not (data / "BBBC021_v1_image.csv").is_file():
        WORKLOAD.synthesize(data)
    done = {(r["config_id"], r["seed"]) for r in read_jsonl(out) if r["state"] == "completed"}
    todo = [p for p in planned(hosts) if p.key not in done]
    space = load_space(WORKLOAD.space)
    for n, p in enumerate(todo, 1):
        record = run_one(p, space, hosts, WORKLOAD.images - WORKLOAD.val_images, data,
                         root / "pilot-warmup", {}, WORKLOAD)
        append_jsonl(out, record)
        print(f"[{n}/{len(todo)}] {p.config_id} seed {p.seed}: {record['state']}", flush=True)
    return 0


if __name__ == "__main__":
    with filter_native_info():
        code = main()
    raise SystemExit(code)
