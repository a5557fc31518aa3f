"""Record the table of real trials that ``bench.replay`` replays (a tabular search benchmark).

    .venv/bin/python -m bench.table [--workdir bench-work] [--limit N] [--quick] [--workload ID]

Real training runs of a frozen workload (:data:`WORKLOAD`, the search benchmarks' workload, unless
``--workload`` names another of ``explorer/workloads.py``: how a new workload's table is recorded
before the benchmarks move to it), each to max epochs with no stop at
the target (so that a replay can apply any target and any prune point). Its space is a grid:
every schedule × batch point is recorded, so the replay looks runs up instead of guessing them.
What it runs, in this order (a rerun skips every (config, seed) already in the table, so the run
resumes across sessions; ``--limit`` stops after N new runs):

1. **repeats**: :data:`REPEATS` grid points (drawn with ``random.Random(0)`` before any run) on
   the reference layout, and the seed baseline on its own layout, with seeds 0, 1 and 2: the
   run-to-run spread (and, with it, the workload's signal: ``bench.signal``);
2. **cells**: one probe schedule at every batch on every other feasible layout, seed 0: the time
   axis of each (layout, batch) cell, and the check of the replay's assumption that convergence
   does not depend on the layout at a fixed global batch (the same config on the reference
   layout is in the grid);
3. **grid**: every other grid point on the reference layout, seed 0;
4. **neighbours** of the baseline: its schedule with every LR halved and doubled;
5. **confirm** (the headline's runs, planned once the grid is complete): the practitioner baseline
   (``bench/practitioner.<workload>.yaml``, written down before the search) and the seed
   baseline with seeds 0–4, and the table's best config (the replay's oracle: lowest expected
   TTA at the workload's target) with fresh seeds 10–14, as the seeds that chose it would
   flatter it. These runs are not part of the replay's lookup.
6. **signal** (once the repeats are recorded): the repeats' grid points that reached the
   workload's target with every repeat seed, again with seeds 3–9 and 15–19
   (:data:`SIGNAL_SEEDS`, apart from the best's), for ``bench.signal``'s test of the grid's
   within-config spread on seeds that were not seen when the test was chosen. Only
   ``bench.signal`` reads them: :func:`load_table` drops them unless asked, and
   ``bench.surrogate.TableModel`` ignores them, so they change no figure of the replay, the
   headline, the calibration or the rehearsal check.

Each record holds the config, the whole curve (epoch, training seconds and validation accuracy
at every evaluation; node-seconds = seconds × ``nodes``), images/s, start-up, outcome, the
machine (CPU, ISA flags, class), commit, date and the load average around the run. One machine
class per table: the file is named by the class, ``bench/tables/<workload>.<class>.jsonl``.
Figures are on a synthetic stand-in for BBBC021.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import append_jsonl, machine, read_jsonl, run_job, synth_tree
from bench.surrogate import SIGNAL_PHASE, TableModel
from explorer.layout_first import LAYOUT_DIMS
from explorer.mcnn.events import read_events
from explorer.record import median_images_per_sec
from explorer.workloads import WORKLOADS, Workload
from launchers.hosts import HostInfo, detect_local
from mcnn_base.native_logs import filter_native_info
from search_spaces.baseline import file_baseline, seed_baseline
from search_spaces.plan import build_plan
from search_spaces.space import SearchSpace, load_space

__all__ = ["WORKLOAD", "Planned", "add_workload_option", "confirm_runs", "digest", "find_table",
           "grid_params", "load_table", "planned_runs", "read_table", "reference_layout",
           "require_complete", "signal_runs", "table_best", "table_path"]

WORKLOAD = WORKLOADS["bench-v4"]
REPEATS = 5  # grid points run with every seed of REPEAT_SEEDS
REPEAT_SEEDS = (0, 1, 2)
# phase 6: the repeats' grid points that reached the target with every seed, again (bench.signal)
SIGNAL_SEEDS = (3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 18, 19)
REFERENCE_LAYOUT = {"ranks_per_node": 1, "threads_per_rank": 2}  # the grid's runs
# the cells' schedule: these values where the space has them, else each dimension's middle choice
PROBE = {"peak_lr": 0.01, "warmup_epochs": 0.0, "first_decay_epoch": 5.0}
TABLES = Path(__file__).resolve().parent / "tables"


def add_workload_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--workload ID``: which frozen workload of ``explorer/workloads.py`` a benchmark uses
    (default :data:`WORKLOAD`, the search benchmarks' own); read it back with
    ``WORKLOADS[args.workload]``. ``what`` says what the benchmark does with it."""
    parser.add_argument("--workload", default=WORKLOAD.id, choices=sorted(WORKLOADS),
                        help=f"{what} (default {WORKLOAD.id}, the search benchmarks' workload)")


def practitioner_file(workload: Workload) -> Path:
    """The practitioner baseline of ``workload``, written down before its table was recorded."""
    return Path(__file__).resolve().parent / f"practitioner.{workload.id}.yaml"


CONFIRM_SEEDS = (0, 1, 2, 3, 4)  # the baselines' seeds in the headline (R = 5)
BEST_SEEDS = (10, 11, 12, 13, 14)  # the table's best: seeds the table never ran
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Planned:
    """One run of the table: a config (registry values + config overrides) and a seed."""

    config_id: str
    phase: str  # repeat | cells | grid | neighbour
    params: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.config_id, self.seed)


def grid_params(space: SearchSpace) -> list[dict[str, Any]]:
    """Every point of the space's non-layout dimensions (all lists of choices), in file order."""
    names = [n for n in space.dimensions if n not in LAYOUT_DIMS]
    for n in names:
        if space.dimensions[n].kind != "categorical":
            raise ValueError(f"the table needs a grid space: {n} is a {space.dimensions[n].kind} "
                             "range, not a list of choices")
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(space.dimensions[n].choices for n in names))]


def _layouts(space: SearchSpace) -> list[dict[str, Any]]:
    names = [n for n in space.dimensions if n in LAYOUT_DIMS]
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(space.dimensions[n].choices for n in names))]


def probe_params(space: SearchSpace) -> dict[str, Any]:
    """The cells' schedule (:data:`PROBE`) in ``space``: every non-layout dimension but the batch,
    at PROBE's value where it is one of the choices, else at the middle choice."""
    out = {}
    for name, dim in space.dimensions.items():
        if name in LAYOUT_DIMS or name == "per_node_batch":
            continue
        choices = list(dim.choices)
        out[name] = PROBE[name] if PROBE.get(name) in choices else choices[len(choices) // 2]
    return out


def _scaled(schedule: str, factor: float) -> str:
    parts = schedule.split(";")
    return ";".join(f"{float(p) * factor:.4g}" if i % 2 == 0 else p for i, p in enumerate(parts))


def config_name(params: dict[str, Any]) -> str:
    """A short, stable name of a config (``lr0.01-wu0-dec5-b32-r1-t2``)."""
    short = {"peak_lr": "lr", "warmup_epochs": "wu", "first_decay_epoch": "dec",
             "decay_every_epochs": "every", "decay_phases": "n", "decay_factor": "f",
             "per_node_batch": "b", "ranks_per_node": "r", "threads_per_rank": "t"}
    return "-".join(f"{short.get(k, k)}{v:g}" if isinstance(v, float) else f"{short.get(k, k)}{v}"
                    for k, v in params.items())


def planned_runs(space: SearchSpace, hosts: Sequence[HostInfo], n_train: int,
                 data_root: Path) -> list[Planned]:
    """Every run of the table, in the order the module doc gives (infeasible ones dropped)."""
    grid = grid_params(space)
    repeats = _repeat_points(grid)
    ref = reference_layout(space)
    base = seed_baseline(space, hosts, n_train)
    probe = probe_params(space)
    runs = [Planned(config_name({**grid[i], **ref}), "repeat", {**grid[i], **ref}, seed=s)
            for s in REPEAT_SEEDS for i in repeats]
    runs += [Planned("baseline", "repeat", base.params, base.overrides, seed=s)
             for s in REPEAT_SEEDS]
    for layout in _layouts(space):
        if layout == ref:
            continue
        for batch in space.dimensions["per_node_batch"].choices:
            params = {**probe, "per_node_batch": batch, **layout}
            runs.append(Planned(config_name(params), "cells", params))
    runs += [Planned(config_name({**p, **ref}), "grid", {**p, **ref})
             for i, p in enumerate(grid) if i not in repeats]
    schedule = base.overrides["schedule"]
    for factor in (0.5, 2.0):
        overrides = {**base.overrides, "schedule": {**schedule, "piecewise": _scaled(
            str(schedule["piecewise"]), factor)}}
        runs.append(Planned(f"baseline-lr×{factor:g}", "neighbour", base.params, overrides))
    return [r for r in runs if build_plan(
        space, r.params, data_root=data_root, n_train=n_train, hosts=hosts,
        overrides={**r.overrides, "target_accuracy": None}).feasible]


def _repeat_points(grid: Sequence[dict[str, Any]]) -> list[int]:
    """The indices of the grid points run with several seeds (drawn before any run)."""
    return random.Random(0).sample(range(len(grid)), min(REPEATS, len(grid)))


def reference_layout(space: SearchSpace) -> dict[str, Any]:
    """:data:`REFERENCE_LAYOUT`, as far as ``space`` has its dimensions (the grid's runs)."""
    return {k: v for k, v in REFERENCE_LAYOUT.items() if k in space.dimensions}


def signal_runs(space: SearchSpace, records: Sequence[dict[str, Any]],
                target: float) -> list[Planned]:
    """Phase 6 of the module doc: the repeats' grid points that every seed of
    :data:`REPEAT_SEEDS` brought to ``target``, with :data:`SIGNAL_SEEDS`; none until those
    repeats are recorded."""
    grid, ref = grid_params(space), reference_layout(space)
    points = [{**grid[i], **ref} for i in _repeat_points(grid)]
    reached: dict[tuple[str, int], bool] = {
        (r["config_id"], int(r["seed"])): any(float(c[2]) >= target for c in r["curve"])
        for r in records if r.get("phase") == "repeat" and r.get("state") == "completed"}
    keys = [(config_name(p), s) for p in points for s in REPEAT_SEEDS]
    if any(k not in reached for k in keys):
        return []
    pool = [p for p in points if all(reached[(config_name(p), s)] for s in REPEAT_SEEDS)]
    return [Planned(config_name(p), SIGNAL_PHASE, p, seed=s) for s in SIGNAL_SEEDS for p in pool]


def table_best(records: Sequence[dict[str, Any]], space: SearchSpace,
               target: float) -> dict[str, Any] | None:
    """The grid's best config on the reference layout, as the replay's oracle judges it: the
    lowest expected TTA at ``target`` (median over its recorded seeds, on its cell's median time
    axis: ``bench.surrogate.TableModel``). Its record of seed 0; None when none reaches it."""
    model = TableModel(records, space)
    ref = reference_layout(space)
    ranked = sorted((model.expected_tta({**p, **ref}, target), i)
                    for i, p in enumerate(grid_params(space)))
    if not ranked or ranked[0][0] == float("inf"):
        return None
    key = model.conv_key({**grid_params(space)[ranked[0][1]], **ref})
    return min(model.by_conv[key], key=lambda r: int(r["seed"]))


def confirm_runs(space: SearchSpace, hosts: Sequence[HostInfo], n_train: int,
                 records: Sequence[dict[str, Any]], planned: Sequence[Planned],
                 workload: Workload) -> list[Planned]:
    """The headline's runs (phase 5 of the module doc); none until every ``planned`` run of the
    grid and the repeats is recorded, as the best is not known before."""
    done = {(r["config_id"], r["seed"]) for r in records if r.get("state") == "completed"}
    if any(p.key not in done for p in planned if p.phase in ("grid", "repeat")):
        return []
    practitioner = file_baseline(practitioner_file(workload), hosts)
    base = seed_baseline(space, hosts, n_train)
    runs = [Planned("practitioner", "confirm", practitioner.params, practitioner.overrides,
                    seed=s) for s in CONFIRM_SEEDS]
    runs += [Planned("baseline", "confirm", base.params, base.overrides, seed=s)
             for s in CONFIRM_SEEDS if ("baseline", s) not in done]
    best = table_best(records, space, workload.target_accuracy)
    if best is not None:
        runs += [Planned(f"best:{best['config_id']}", "confirm", best["params"], seed=s)
                 for s in BEST_SEEDS]
    return runs


def table_path(workload: Workload, machine_class: str, root: Path = TABLES) -> Path:
    return root / f"{workload.id}.{machine_class}.jsonl"


def find_table(workload: Workload, machine_class: str, *, quick: bool,
               root: Path = TABLES) -> Path:
    """This machine class's table of ``workload``; with ``quick`` (a smoke run that measures
    nothing) any class's table when this one has none.

    Raises:
        SystemExit: no table to read (a one-line error).
    """
    own = table_path(workload, machine_class, root)
    if own.is_file():
        return own
    others = sorted(root.glob(f"{workload.id}.*.jsonl"))
    if quick and others:
        return others[0]
    raise SystemExit(f"error: no table of {workload.id} for machine class {machine_class} "
                     f"({own} is missing); record one with python -m bench.table, or pass "
                     f"--table with one of: {', '.join(map(str, others)) or 'none recorded'}")


def load_table(table: str | None, *, quick: bool, workload: Workload,
               signal: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """The table to analyse (``--table``, else :func:`find_table`'s) and its runs of
    ``workload``; the phase-6 runs only with ``signal`` (``bench.signal``'s own).

    Raises:
        SystemExit: no table, or none of its runs is of the workload (a one-line error).
    """
    path = Path(table) if table else find_table(workload, machine()["machine_class"],
                                                quick=quick)
    records = [r for r in read_table(path) if r.get("workload") == workload.id
               and (signal or r.get("phase") != SIGNAL_PHASE)]
    if not records:
        raise SystemExit(f"error: {path} holds no run of {workload.id}; record them with "
                         f"python -m bench.table --workload {workload.id}")
    return path, records


def require_complete(records: Sequence[dict[str, Any]], space: SearchSpace,
                     workload: Workload) -> None:
    """Refuse, in one line, a table that lacks grid points: a benchmark that picks or fits from
    it (its best config, a calibration, a study's yardstick) would not be the benchmark's."""
    held, points = TableModel(records, space).coverage(grid_params(space))
    if held < points:
        raise SystemExit(f"error: the table of {workload.id} holds {held} of {points} grid "
                         f"points; finish it first: python -m bench.table --workload "
                         f"{workload.id} (resumable)")


def read_table(path: Path) -> list[dict[str, Any]]:
    """The records of a table (none when the file does not exist)."""
    return read_jsonl(path)


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
            data_root: Path, work: Path, extra: dict[str, Any],
            workload: Workload) -> dict[str, Any]:
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
        "workload": workload.id, "config_id": p.config_id, "phase": p.phase, "seed": p.seed,
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
    add_workload_option(parser, "the frozen workload to record; its space must be a grid")
    args = parser.parse_args(argv)
    workload = WORKLOADS[args.workload]
    space = load_space(workload.space)
    try:  # what would stop the table later is said now, before any data is written
        grid_params(space)
    except ValueError as exc:  # not a grid space
        parser.error(f"workload {workload.id}: {exc}")
    if not practitioner_file(workload).is_file():
        parser.error(f"workload {workload.id}: write its practitioner baseline "
                     f"{practitioner_file(workload)} before recording its table")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(args.workdir).resolve()
    os.environ.setdefault("MCNN_CACHE_DIR", str(root / "cache"))
    hosts = [detect_local()]
    extra: dict[str, Any] = {}
    if args.quick:
        data = synth_tree(root / "data-64x80-400-m3", workload.tiff_size, 400, workload.moas)
        n_train, extra = 320, {"max_epochs": 1}
        path = Path(args.table) if args.table else root / "table-quick.jsonl"
        limit = 2 if args.limit is None else args.limit
    else:
        data = root / f"data-{workload.id}"
        if not (data / "BBBC021_v1_image.csv").is_file():
            workload.synthesize(data)
        n_train = workload.images - workload.val_images
        path = Path(args.table) if args.table else table_path(workload, machine()[
            "machine_class"])
        limit = args.limit
    runs = planned_runs(space, hosts, n_train, data)
    records = [r for r in read_table(path) if r.get("workload") == workload.id]
    if not args.quick:
        runs += confirm_runs(space, hosts, n_train, records, runs, workload)
        runs += signal_runs(space, records, workload.target_accuracy)
    classes = {r["machine"]["machine_class"] for r in records}
    here = machine()["machine_class"]
    if classes - {here}:
        raise SystemExit(f"error: {path} holds runs of machine class {sorted(classes)}, this "
                         f"machine is {here}: one class per table (pass --table)")
    done = {(r["config_id"], r["seed"]) for r in records if r.get("state") == "completed"}
    todo = list(_runs_to_do(runs, done))
    print(f"table {path}: {len(done)} of {len(runs)} runs recorded, {len(todo)} to go "
          f"(workload {workload.describe()}, machine class {here}; synthetic stand-in)",
          flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = root / ("table-quick-runs" if args.quick else f"table-{workload.id}")
    for n, p in enumerate(todo[:limit] if limit is not None else todo, start=1):
        record = run_one(p, space, hosts, n_train, data, work, extra, workload)
        append_jsonl(path, record)  # one line per run, written as it comes: resumable
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
