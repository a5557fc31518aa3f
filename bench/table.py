"""Record the table of real trials that ``bench.replay`` replays (a tabular search benchmark).

    .venv/bin/python -m bench.table [--workdir bench-work] [--limit N] [--quick]

Real training runs of the frozen workload :data:`WORKLOAD` over its space, each to max epochs with
no stop at the target (so that a replay can apply any target and any prune point). What it runs,
in this order (a rerun skips every (config, seed) already in the table, so the run resumes across
sessions; ``--limit`` stops after N new runs):

1. **repeats**: the first :data:`REPEAT_POINTS` Sobol points and the seed baseline, with seeds
   0, 1 and 2: the run-to-run spread (and, with it, the workload's signal: ``bench.signal``);
2. **sobol**: Sobol points up to :data:`SOBOL_POINTS` (scrambled, seed 0, over the unit cube of
   the space's dimensions, mapped as a sampler would; infeasible points are skipped), seed 0;
3. **neighbours** of the baseline: its schedule with every LR halved and doubled;
4. **layout checks**: the first repeat points again on another layout at the same global batch,
   seed 0, to check the replay's assumption that convergence does not depend on the layout.

Each record holds the config, the whole curve (epoch, training seconds and validation accuracy at
every evaluation), images/s, start-up, outcome, the machine (CPU, ISA flags, class), commit, date
and the load average around the run. One machine class per table: the file is named by the class,
``bench/tables/<workload>.<class>.jsonl``. Figures are on a synthetic stand-in for BBBC021.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy.stats import qmc

from bench.common import machine, run_job, synth_tree
from explorer.mcnn.events import read_events
from explorer.record import median_images_per_sec
from explorer.workloads import WORKLOADS, Workload
from launchers.hosts import HostInfo, detect_local
from mcnn_base.native_logs import filter_native_info
from search_spaces.baseline import seed_baseline
from search_spaces.plan import build_plan, sample_params
from search_spaces.space import Dimension, SearchSpace, load_space

__all__ = ["WORKLOAD", "Planned", "digest", "planned_runs", "read_table", "sobol_params", "table_path"]

WORKLOAD = WORKLOADS["bench-v2"]
SOBOL_POINTS = 64
REPEAT_POINTS = 5
REPEAT_SEEDS = (0, 1, 2)
LAYOUT_CHECKS = 3
TABLES = Path(__file__).resolve().parent / "tables"
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Planned:
    """One run of the table: a config (registry values + config overrides) and a seed."""

    config_id: str
    phase: str  # repeat | sobol | neighbour | layout
    params: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.config_id, self.seed)


class _Unit:
    """A :class:`~search_spaces.plan.Suggester` that maps one point of the unit cube onto the
    space's dimensions, as Optuna's samplers map theirs (log dims on the log scale)."""

    def __init__(self, point: Sequence[float], names: Sequence[str]) -> None:
        self.u = dict(zip(names, point, strict=True))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        u = self.u[name]
        if log:
            return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
        value = low + u * (high - low)
        if step:
            value = low + round((value - low) / step) * step
        return float(min(high, value))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        n = (high - low) // step + 1
        return low + min(n - 1, int(self.u[name] * n)) * step

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[min(len(choices) - 1, int(self.u[name] * len(choices)))]


def _rounded(params: dict[str, Any], dims: dict[str, Dimension]) -> dict[str, Any]:
    return {k: (float(f"{v:.4g}") if dims[k].kind == "float" else v) for k, v in params.items()}


def sobol_params(space: SearchSpace, hosts: Sequence[HostInfo], n_train: int, data_root: Path,
                 n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` feasible points of a scrambled Sobol sequence over ``space``."""
    names = list(space.dimensions)
    sobol = qmc.Sobol(d=len(names), scramble=True, seed=seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        for point in sobol.random(16):
            params = _rounded(sample_params(space, _Unit(point, names)), space.dimensions)
            plan = build_plan(space, params, data_root=data_root, n_train=n_train, hosts=hosts,
                              overrides={"target_accuracy": None})
            if plan.feasible and len(out) < n:
                out.append(params)
    return out


def _scaled(schedule: str, factor: float) -> str:
    parts = schedule.split(";")
    return ";".join(f"{float(p) * factor:.4g}" if i % 2 == 0 else p for i, p in enumerate(parts))


def _other_layout(params: dict[str, Any], cores: int) -> dict[str, Any]:
    """The same config on another layout with the same per-node batch (so the same global
    batch): one rank more or fewer, the cores shared out again."""
    ranks = 2 if int(params.get("ranks_per_node", 1)) == 1 else 1
    return {**params, "ranks_per_node": ranks, "threads_per_rank": max(1, cores // ranks),
            "binding": "core"}


def planned_runs(space: SearchSpace, hosts: Sequence[HostInfo], n_train: int,
                 data_root: Path, *, points: int = SOBOL_POINTS) -> list[Planned]:
    """Every run of the table, in the order the module doc gives."""
    sobol = sobol_params(space, hosts, n_train, data_root, points)
    base = seed_baseline(space, hosts, n_train)
    repeats = min(REPEAT_POINTS, len(sobol))
    runs = [Planned(f"sobol{i:03d}", "repeat", sobol[i], seed=s)
            for s in REPEAT_SEEDS for i in range(repeats)]
    runs += [Planned("baseline", "repeat", base.params, base.overrides, seed=s)
             for s in REPEAT_SEEDS]
    runs += [Planned(f"sobol{i:03d}", "sobol", sobol[i]) for i in range(repeats, len(sobol))]
    schedule = base.overrides["schedule"]
    for factor in (0.5, 2.0):
        overrides = {**base.overrides, "schedule": {**schedule, "piecewise": _scaled(
            str(schedule["piecewise"]), factor)}}
        runs.append(Planned(f"baseline-lr×{factor:g}", "neighbour", base.params, overrides))
    cores = min(h.cores for h in hosts)
    runs += [Planned(f"sobol{i:03d}-layout", "layout", _other_layout(sobol[i], cores))
             for i in range(min(LAYOUT_CHECKS, repeats))]
    return runs


def table_path(workload: Workload, machine_class: str, root: Path = TABLES) -> Path:
    return root / f"{workload.id}.{machine_class}.jsonl"


def read_table(path: Path) -> list[dict[str, Any]]:
    """The records of a table (none when the file does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],  # noqa: S603
                             capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def digest(params: dict[str, Any], overrides: dict[str, Any]) -> str:
    text = json.dumps([params, overrides], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_one(p: Planned, space: SearchSpace, hosts: Sequence[HostInfo], n_train: int,
            data_root: Path, work: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Run one planned config to max epochs (no target) and return its table record."""
    plan = build_plan(space, p.params, data_root=data_root, n_train=n_train, hosts=hosts,
                      overrides={**p.overrides, **extra, "target_accuracy": None})
    assert plan.feasible and plan.resources is not None, plan.reason
    res = plan.resources
    workdir = work / f"{p.config_id}-seed{p.seed}"
    load_before = os.getloadavg()[0]
    started = time.time()
    state, reason = "completed", "max_epochs"
    try:
        events, _ = run_job({**plan.config, "seed": p.seed}, workdir,
                            ranks=res.ranks_per_node, threads=res.threads_per_rank,
                            binding=res.binding, mpi=res.ranks_per_node > 1, env=dict(res.env),
                            timeout_s=1200.0)
    except RuntimeError as exc:  # the job failed: recorded as such, the table goes on
        events = read_events(workdir / "events.jsonl") if (workdir / "events.jsonl").is_file() \
            else []
        state, reason = "failed", str(exc).splitlines()[0]
    epochs = [e for e in events if e.get("event") == "epoch"]
    done = next((e for e in events if e.get("event") == "done"), {})
    return {
        "workload": WORKLOAD.id, "config_id": p.config_id, "phase": p.phase, "seed": p.seed,
        "digest": digest(p.params, p.overrides), "params": p.params, "overrides": p.overrides,
        "derived": {k: plan.derived.get(k) for k in ("global_batch", "per_worker_batch",
                                                     "world_size", "updates_per_epoch")},
        "threads": res.threads_per_rank, "binding": res.binding,
        "n_train": n_train, "nodes": 1,
        # one row per evaluation: epoch, training seconds on the TTA clock, validation accuracy
        "curve": [[float(e["epoch"]), round(float(e["elapsed_s"]), 3),
                   round(float(e["val_accuracy"]), 5)] for e in epochs],
        "eval_s": [round(float(e.get("eval_s") or 0.0), 3) for e in epochs],
        "images_per_sec": median_images_per_sec([float(e["images_per_sec"]) for e in epochs]),
        "startup_s": done.get("startup_s"), "job_wall_s": round(time.time() - started, 2),
        "state": state, "reason": reason,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "machine": machine(), "commit": _commit(),
    }


def _runs_to_do(runs: list[Planned], done: set[tuple[str, int]]) -> Iterator[Planned]:
    return (p for p in runs if p.key not in done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--limit", type=int, default=None, help="stop after N new runs")
    parser.add_argument("--table", default=None, help="the table file (default: "
                        "bench/tables/<workload>.<machine class>.jsonl)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 2 runs of 1 epoch "
                        "on a small tree into WORKDIR (exercises the code, measures nothing)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(args.workdir).resolve()
    os.environ.setdefault("MCNN_CACHE_DIR", str(root / "cache"))
    space = load_space(WORKLOAD.space)
    hosts = [detect_local()]
    extra: dict[str, Any] = {}
    if args.quick:
        data = synth_tree(root / "data-64x80-400-m3", WORKLOAD.tiff_size, 400, WORKLOAD.moas)
        n_train, extra = 320, {"max_epochs": 1}
        path = Path(args.table) if args.table else root / "table-quick.jsonl"
        limit = 2 if args.limit is None else args.limit
    else:
        data = root / f"data-{WORKLOAD.id}"
        if not (data / "BBBC021_v1_image.csv").is_file():
            WORKLOAD.synthesize(data)
        n_train = WORKLOAD.images - WORKLOAD.val_images
        path = Path(args.table) if args.table else table_path(WORKLOAD, machine()[
            "machine_class"])
        limit = args.limit
    runs = planned_runs(space, hosts, n_train, data,
                        points=REPEAT_POINTS if args.quick else SOBOL_POINTS)
    records = read_table(path)
    classes = {r["machine"]["machine_class"] for r in records}
    here = machine()["machine_class"]
    if classes - {here}:
        raise SystemExit(f"error: {path} holds runs of machine class {sorted(classes)}, this "
                         f"machine is {here}: one class per table (pass --table)")
    done = {(r["config_id"], r["seed"]) for r in records}
    todo = list(_runs_to_do(runs, done))
    print(f"table {path}: {len(done)} of {len(runs)} runs recorded, {len(todo)} to go "
          f"(workload {WORKLOAD.describe()}, machine class {here}; synthetic stand-in)",
          flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = root / ("table-quick-runs" if args.quick else f"table-{WORKLOAD.id}")
    for n, p in enumerate(todo[:limit] if limit is not None else todo, start=1):
        record = run_one(p, space, hosts, n_train, data, work, extra)
        with path.open("a") as fh:  # one line per run, written as it comes: resumable
            fh.write(json.dumps(record) + "\n")
        curve = record["curve"]
        best = max((c[2] for c in curve), default=0.0)
        print(f"[{n}/{len(todo)}] {p.config_id} seed {p.seed} ({p.phase}): {record['state']}, "
              f"best {best:.3f}, {curve[-1][1] if curve else 0:.0f}s trained, "
              f"{record['images_per_sec'] or 0:.0f} img/s", flush=True)
    return 0


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
