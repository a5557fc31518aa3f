"""Replay the toolkit's searches against the recorded table: many seeds, simulated time.

    .venv/bin/python -m bench.replay [--seeds 24] [--budget-runs 30] [--strategies ...]
                                     [--table FILE] [--target ACC] [--quick]

Each (strategy, seed) is an Optuna study run by the same parts as a real one: the sampler and
pruner factories of ``explorer.study``, the space's feasibility rules (``search_spaces.plan``),
the baseline queued first (``--baseline seed``), stage 1 / stage 2 of ``--strategy layout-first``
(``explorer.values``), intermediate reports on training seconds, and the objective and miss rule
of ``explorer.objective``. Only the job is simulated: ``bench.surrogate`` answers each trial with
a recorded run of the nearest table config, on its layout's recorded time axis. A trial costs its
simulated wall time (start-up + training up to its target, its prune point or max epochs, +
teardown); one trial runs at a time (one 2-core node, as here).

Judged, per seed: after each trial, the search's incumbent (its best trial by observed value)
and that config's *expected* TTA (median over the recorded seeds of its neighbour), so that a
lucky seed does not make a search look good. Reported, over seeds:

* the node-seconds a search needed until its incumbent came within 10 % of the best expected TTA
  of any searchable table config (censored at the budget);
* the expected-TTA speedup of its final pick over the seed baseline;
* each strategy ÷ random, with 95 % bootstrap intervals (seeds resampled).

Figures are simulated from real runs of a synthetic stand-in for BBBC021, on the table's machine
class; they hold for that workload.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from bench.common import emit, machine, table
from bench.surrogate import TableModel, leave_one_out
from bench.table import WORKLOAD, digest, read_table, table_path
from explorer.layout_first import LAYOUT_EPOCHS
from explorer.objective import TrialOutcome, intermediate_value, objective_values
from explorer.record import Outcome, set_attrs
from explorer.study import (
    PRUNE_RESOURCE,
    StudySettings,
    best_trial,
    make_pruner,
    make_sampler,
)
from explorer.values import queue_fixed, trial_values
from launchers.hosts import HostInfo
from search_spaces.baseline import Baseline, seed_baseline
from search_spaces.plan import build_plan
from search_spaces.space import SearchSpace, load_space

__all__ = ["STRATEGIES", "Trace", "bootstrap_ratio", "replay"]

# name -> (sampler, pruner, strategy), as `study launch --sampler --pruner --strategy` take them
STRATEGIES: dict[str, tuple[str, str, str]] = {
    "random": ("random", "none", "joint"),
    "tpe": ("tpe", "none", "joint"),
    "tpe+sh": ("tpe", "sh", "joint"),
    "tpe+hyperband": ("tpe", "hyperband", "joint"),
    "tpe+median": ("tpe", "median", "joint"),
    "gp": ("gp", "none", "joint"),
    "layout-first": ("tpe", "sh", "layout-first"),
}
MAX_INFEASIBLE_IN_A_ROW = StudySettings.max_infeasible_in_a_row  # as the driver
QUALITY = 1.10  # "found": an incumbent within 10 % of the best expected TTA
DATA_ROOT = Path("/nonexistent/replay")  # plans need a data root; a replay reads no data


@dataclass
class Trace:
    """One replayed study: after each trial, (node-seconds spent, incumbent's expected TTA)."""

    strategy: str
    seed: int
    points: list[tuple[float, float]] = field(default_factory=list)
    trials: int = 0
    pruned: int = 0
    infeasible: int = 0
    pick: dict[str, Any] | None = None
    ended: str | None = None  # why the study stopped before its budget

    def compute_to(self, quality: float) -> float:
        return next((s for s, q in self.points if q <= quality), math.inf)

    @property
    def final(self) -> float:
        return self.points[-1][1] if self.points else math.inf


@dataclass(frozen=True)
class Setting:
    model: TableModel
    space: SearchSpace
    hosts: list[HostInfo]
    n_train: int
    target: float
    budget_s: float
    baseline: Baseline


def _stage1(trial: optuna.Trial, study: optuna.Study, s: Setting, params: dict[str, Any],
            rng: random.Random) -> float:
    """A layout measurement: steady images/s of one recorded run of that cell; its cost."""
    runs = [r for r in s.model.records if s.model._cell(r["params"]) == s.model._cell(params)
            and r.get("images_per_sec")]
    if not runs:
        set_attrs(trial, state=Outcome.FAILED, reason="no run of this layout in the table")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return 0.0
    rate = float(rng.choice(runs)["images_per_sec"])
    wall = s.model.startup_s(params) + LAYOUT_EPOCHS * s.n_train / rate + s.model.teardown_s
    set_attrs(trial, median_images_per_sec=rate, state=Outcome.MEASURED, reason="measured",
              wall_s=wall)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return wall


def _follow(trial: optuna.Trial, study: optuna.Study, s: Setting, pruner: str,
            params: dict[str, Any], fixed: str | None, rng: random.Random) -> float | None:
    """Play one trial's recorded curve to its target, prune point or end; its wall cost."""
    run = s.model.run(params, rng, digest=fixed)
    if run is None:
        set_attrs(trial, state=Outcome.FAILED, reason="the table has no run like it")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    step, end, tta, pruned, best, epochs = 0, 0.0, None, False, 0.0, 0.0
    for k, (t, acc) in enumerate(run.timeline):
        step = k + 1 if PRUNE_RESOURCE.get(pruner) == "evaluations" else max(step + 1, int(t))
        end, best, epochs = t, max(best, acc), run.epochs[k]
        trial.report(intermediate_value(acc), step)
        if acc >= s.target:  # the job stops itself at the target
            tta = t
            break
        if k + 1 < len(run.timeline) and trial.should_prune():
            pruned = True
            break
    wall = run.startup_s + end + s.model.teardown_s
    state = Outcome.PRUNED if pruned else Outcome.COMPLETED
    outcome = TrialOutcome(state, "pruned" if pruned else ("target_reached" if tta is not None
                                                           else "max_epochs"),
                           tta_s=tta, startup_s=run.startup_s, best_val_accuracy=best,
                           epochs=epochs, wall_s=wall, nodes=1,
                           tta_interp_s=run.tta_interp(s.target) if tta is not None else None)
    set_attrs(trial, **outcome.final_metrics(), state=state, reason=outcome.reason)
    if pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, objective_values(outcome))
    return wall


def replay(s: Setting, strategy: str, seed: int) -> Trace:
    """One study of ``strategy`` with ``seed`` against the table, until the budget is spent."""
    sampler, pruner, kind = STRATEGIES[strategy]
    max_epochs = float(s.space.base.get("max_epochs", 20.0))
    study = optuna.create_study(direction="minimize", sampler=make_sampler(sampler, seed),
                                pruner=make_pruner(pruner, max_epochs))
    queue_fixed(study, s.space, baseline=s.baseline, strategy=kind, hosts=s.hosts,
                n_train=s.n_train, data_root=DATA_ROOT, log=lambda _: None)
    rng = random.Random(seed)
    overrides = {"target_accuracy": s.target}
    trace = Trace(strategy, seed)
    spent, in_a_row = 0.0, 0
    judged: dict[int, float] = {}
    planned: dict[int, dict[str, Any]] = {}  # registry values, layout-first's layout included
    while spent < s.budget_s:
        if in_a_row >= MAX_INFEASIBLE_IN_A_ROW:  # the driver ends such a study with an error
            trace.ended = f"{in_a_row} samples in a row were infeasible"
            break
        trial = study.ask()
        values = trial_values(trial, study, s.space, strategy=kind, overrides=overrides)
        plan = build_plan(s.space, values.params, data_root=DATA_ROOT, n_train=s.n_train,
                          hosts=s.hosts, overrides=values.overrides)
        for key, value in plan.constraints.items():  # as the driver's Recorder.start
            trial.set_constraint(key, value)
        if values.missing is not None or not plan.feasible:
            set_attrs(trial, state=Outcome.INFEASIBLE, reason=values.missing or plan.reason)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            trace.infeasible += 1
            in_a_row += 1
            continue
        in_a_row = 0
        planned[trial.number] = values.params
        fixed = trial.user_attrs.get("fixed")
        if trial.user_attrs.get("stage") == 1:
            spent += _stage1(trial, study, s, values.params, rng)
            continue
        fixed_key = digest(fixed["params"], fixed.get("overrides") or {}) if fixed else None
        wall = _follow(trial, study, s, pruner, values.params, fixed_key, rng)
        if wall is None:
            continue
        spent += wall
        trace.trials += 1
        trace.pruned += int(study.trials[trial.number].state == optuna.trial.TrialState.PRUNED)
        best = best_trial(study)
        if best is None:
            trace.points.append((spent, math.inf))
            continue
        if best.number not in judged:
            bfixed = best.user_attrs.get("fixed")
            bkey = digest(bfixed["params"], bfixed.get("overrides") or {}) if bfixed else None
            params = planned[best.number]
            judged[best.number] = s.model.expected_tta(params, s.target, digest=bkey)
            trace.pick = {"trial": best.number, "params": params, "fixed": bool(bfixed)}
        trace.points.append((spent, judged[best.number]))
    return trace


def oracle(s: Setting) -> float:
    """The best expected TTA a search could find: every searchable table config on every layout
    the table measured for its batch."""
    layouts = {s.model._cell(r["params"]): r["params"] for r in s.model.records}
    best = math.inf
    for params in s.model.space_configs():
        for cell_params in layouts.values():
            candidate = {**params, **{k: cell_params[k] for k in ("ranks_per_node",
                                                                   "threads_per_rank", "binding")
                                      if k in cell_params}}
            if s.model._cell(candidate) != s.model._cell(cell_params):
                continue
            best = min(best, s.model.expected_tta(candidate, s.target))
    return best


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], *, reps: int = 2000,
                    seed: int = 0) -> tuple[float, float, float]:
    """median(a) ÷ median(b) with a 95 % percentile interval (each sample resampled)."""
    rng = random.Random(seed)

    def ratio(x: Sequence[float], y: Sequence[float]) -> float:
        mx, my = statistics.median(x), statistics.median(y)
        if math.isinf(mx) and math.isinf(my):
            return math.nan
        return math.inf if my == 0 else mx / my

    point = ratio(a, b)
    draws = sorted(r for r in (ratio(rng.choices(a, k=len(a)), rng.choices(b, k=len(b)))
                               for _ in range(reps)) if not math.isnan(r))
    if not draws:
        return point, math.nan, math.nan
    return point, draws[int(0.025 * (len(draws) - 1))], draws[int(0.975 * (len(draws) - 1))]


def _fmt_interval(v: tuple[float, float, float]) -> str:
    point, lo, hi = v
    return f"{point:.2f} [{lo:.2f}, {hi:.2f}]"


def _available(strategies: Sequence[str], say: Callable[[str], None]) -> list[str]:
    out = []
    for name in strategies:
        if STRATEGIES[name][0] == "gp" and importlib.util.find_spec("torch") is None:
            say("gp: skipped (Optuna's GPSampler needs torch, not installed)")
            continue
        out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=None, help="default: this machine class's table of "
                        f"{WORKLOAD.id} in bench/tables/")
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--budget-runs", type=float, default=30.0,
                        help="budget in median full runs' node-seconds")
    parser.add_argument("--target", type=float, default=WORKLOAD.target_accuracy)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES),
                        choices=list(STRATEGIES))
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: 2 seeds × 3 strategies, 6 runs of budget")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(args.table) if args.table else _default_table()
    records = [r for r in read_table(path) if r.get("workload") == WORKLOAD.id]
    if not records:
        raise SystemExit(f"error: {path} holds no run of {WORKLOAD.id}; record one with "
                         "python -m bench.table")
    classes = sorted({r["machine"]["machine_class"] for r in records})
    space = load_space(WORKLOAD.space)
    model = TableModel(records, space)
    hosts = [HostInfo("localhost", int(records[0]["machine"]["cores"]))]
    n_train = int(records[0]["n_train"])
    full = statistics.median(float(r["job_wall_s"]) for r in model.records)
    seeds = 2 if args.quick else args.seeds
    budget_runs = 6.0 if args.quick else args.budget_runs
    strategies = ["random", "tpe", "tpe+sh"] if args.quick else args.strategies
    s = Setting(model, space, hosts, n_train, args.target, budget_runs * full,
                seed_baseline(space, hosts, n_train))
    print(f"table {path}: {len(model.records)} runs of {len(model.by_config)} configs, machine "
          f"class {', '.join(classes)}; {WORKLOAD.describe()}; target {args.target}; budget "
          f"{budget_runs:g} median runs = {s.budget_s:.0f} node-s; {seeds} seeds "
          "(simulated from real runs of a synthetic stand-in)", flush=True)
    loo = leave_one_out(model, args.target)
    best = oracle(s)
    base_tta = model.expected_tta(s.baseline.params, args.target,
                                  digest=digest(s.baseline.params, s.baseline.overrides))
    print(f"surrogate, leave-one-out over {loo['configs']} configs: Spearman "
          f"{loo['spearman']:.2f}, hit/miss agreement {loo['hit_miss_agreement']:.2f}; "
          f"best expected TTA {best:.1f}s; seed baseline {base_tta:.1f}s", flush=True)
    traces: dict[str, list[Trace]] = {}
    for name in _available(strategies, print):
        traces[name] = [replay(s, name, seed) for seed in range(seeds)]
    rows = []
    quality = QUALITY * best
    ref = traces.get("random")
    for name, ts in traces.items():
        to_q = [t.compute_to(quality) for t in ts]
        speed = [base_tta / t.final if t.final > 0 else math.inf for t in ts]
        found = sum(not math.isinf(c) for c in to_q)
        vs = (_fmt_interval(bootstrap_ratio(to_q, [t.compute_to(quality) for t in ref]))
              if ref is not None and name != "random" else "-")
        rows.append([name, f"{found}/{len(ts)}", _median_s(to_q), vs,
                     f"{statistics.median(speed):.2f}",
                     f"{statistics.median(t.trials for t in ts):.0f}",
                     f"{statistics.median(t.pruned for t in ts):.0f}"])
    print(table(["strategy", "found", "median node-s to within 10 %", "÷ random [95 % CI]",
                 "speedup vs baseline", "trials", "pruned"], rows))
    out = Path(args.workdir) / ("replay-quick" if args.quick else "replay")
    out.mkdir(parents=True, exist_ok=True)
    (out / "traces.json").write_text(json.dumps(
        {n: [{"seed": t.seed, "points": t.points, "pick": t.pick} for t in ts]
         for n, ts in traces.items()}, default=str))
    emit("replay", {"table": str(path), "machine_class": classes, "workload": WORKLOAD.id,
                    "target": args.target, "budget_s": s.budget_s, "seeds": seeds,
                    "quick": args.quick, "leave_one_out": loo, "oracle_s": best,
                    "baseline_s": base_tta, "rows": rows})
    return 0


def _median_s(values: list[float]) -> str:
    m = statistics.median(values)
    return "> budget" if math.isinf(m) else f"{m:.0f}"


def _default_table() -> Path:
    return table_path(WORKLOAD, machine()["machine_class"])


if __name__ == "__main__":
    raise SystemExit(main())
