"""Replay the toolkit's searches against the recorded table: many seeds, simulated time.

    .venv/bin/python -m bench.replay [--seeds 24] [--budget-runs 30] [--strategies ...]
                                     [--table FILE] [--target ACC] [--quick]
                                     [--workload ID]

Each (strategy, seed) is an Optuna study run by the same parts as a real one: the sampler and
pruner factories of ``explorer.study``, the space's feasibility rules (``search_spaces.plan``),
the seed baseline queued first (``--baseline seed``), stage 1 / stage 2 of ``--strategy
layout-first`` (``explorer.values``), intermediate reports on training seconds, and the
objective and miss rule of ``explorer.objective``. Only the job is simulated: ``bench.surrogate``
answers each trial with a recorded run of the same schedule and batch, on its layout's recorded
time axis. A trial costs its simulated wall time (start-up + training up to its target, its prune
point or max epochs, + teardown); one trial runs at a time (one 2-core node, as here).

Judged, per seed, after each trial: the search's incumbent (its best trial by observed value)
and that config's *expected* TTA (median over its recorded seeds), so that a lucky seed does not
make a search look good. Reported over seeds, at one node-second budget for every strategy:

* node-seconds until the incumbent is within 10 % of the best expected TTA of any config of the
  space (∞ when not within the budget): median with a 90 % bootstrap interval, and ÷ random
  search, where a search that never got there counts at the budget (so a ratio against a
  random search whose median never got there is an upper bound, marked ≤);
* the compute pruning saved: 1 − (TPE + successive halving ÷ TPE without pruning), same rule;
* the incumbent's expected TTA at 25 / 50 / 100 % of the budget;
* the expected-TTA speedup of the final pick over the seed baseline.

Then the headline (``bench.headline``): the table's best config against the seed and practitioner
baselines, five seeds each, with the node-seconds the fastest strategy took to find a config
within 10 % of it.

Figures are simulated from real runs of a synthetic stand-in for BBBC021, on the table's machine
class; they hold for that workload. Writes ``WORKDIR/replay-<workload>/best_so_far.html`` and
``.png``. Resumable: each finished replay is kept under ``WORKDIR/replay-<workload>/done/<key>/``
(the key covers the table, the workload and its space, the target, the budget and the project's
code), and a rerun reuses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib.util
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import optuna
import plotly.graph_objects as go

from bench.common import emit, table
from bench.headline import headline
from bench.stats import bootstrap_median, bootstrap_ratio, interval, median
from bench.surrogate import TableModel, layout_check
from bench.table import add_workload_option, digest, grid_params, load_table
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
from explorer.workloads import WORKLOADS, Workload
from launchers.hosts import HostInfo
from search_spaces.baseline import Baseline, seed_baseline
from search_spaces.plan import build_plan
from search_spaces.space import SearchSpace, load_space

__all__ = ["STRATEGIES", "Setting", "Trace", "oracle",
           "replay"]

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
FRACTIONS = (0.25, 0.5, 1.0)


@dataclass
class Trace:
    """One replayed study: after each trial, (node-seconds spent, incumbent's expected TTA)."""

    strategy: str
    seed: int
    points: list[tuple[float, float]] = field(default_factory=list)
    observed: list[tuple[float, float]] = field(default_factory=list)  # best TTA the study saw
    trials: int = 0
    pruned: int = 0
    infeasible: int = 0
    unanswered: int = 0  # trials the table could not answer (a partial table)
    pick: dict[str, Any] | None = None
    ended: str | None = None  # why the study stopped before its budget

    def compute_to(self, quality: float) -> float:
        return next((s for s, q in self.points if q <= quality), math.inf)

    def at(self, spent: float) -> float:
        """The expected TTA of the pick held once ``spent`` node-seconds were used."""
        return next((q for s, q in reversed(self.points) if s <= spent), math.inf)

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
    rates = s.model.rates(params)
    if not rates:
        set_attrs(trial, state=Outcome.FAILED, reason="no run of this layout in the table")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return 0.0
    rate = rng.choice(rates)
    wall = s.model.startup_s(params) + LAYOUT_EPOCHS * s.n_train / rate + s.model.teardown_s
    set_attrs(trial, median_images_per_sec=rate, state=Outcome.MEASURED, reason="measured",
              wall_s=wall)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return wall


def _follow(trial: optuna.Trial, study: optuna.Study, s: Setting, pruner: str,
            params: dict[str, Any], fixed: str | None, rng: random.Random,
            seed: int) -> float | None:
    """Play one trial's recorded curve to its target, prune point or end; its wall cost."""
    run = s.model.run(params, rng, digest=fixed, seed=seed)
    if run is None:
        set_attrs(trial, state=Outcome.FAILED, reason="the table has no run like it")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    step, end, tta, pruned, best, epochs = 0, 0.0, None, False, 0.0, 0.0
    for k, (t, acc) in enumerate(run.timeline):  # as the driver's _follow
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
    reason = "pruned" if pruned else ("target_reached" if tta is not None else "max_epochs")
    outcome = TrialOutcome(state, reason, tta_s=tta, startup_s=run.startup_s,
                           best_val_accuracy=best, epochs=epochs, wall_s=wall, nodes=1,
                           tta_interp_s=run.tta_interp(s.target) if tta is not None else None)
    set_attrs(trial, **outcome.final_metrics(), state=state, reason=reason)
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
    spent, in_a_row, unanswered_in_a_row = 0.0, 0, 0
    judged: dict[int, float] = {}
    planned: dict[int, tuple[dict[str, Any], str | None]] = {}  # layout-first's layout included
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
        if trial.user_attrs.get("stage") == 1:
            spent += _stage1(trial, study, s, values.params, rng)
            continue
        fixed = trial.user_attrs.get("fixed")
        fixed_key = digest(fixed["params"], fixed.get("overrides") or {}) if fixed else None
        planned[trial.number] = (values.params, fixed_key)
        wall = _follow(trial, study, s, pruner, values.params, fixed_key, rng,
                       int(plan.config.get("seed", 0)))
        if wall is None:  # a point a partial table lacks: told FAIL, which samplers ignore
            trace.unanswered += 1
            unanswered_in_a_row += 1
            if unanswered_in_a_row >= MAX_INFEASIBLE_IN_A_ROW:
                trace.ended = f"{unanswered_in_a_row} trials in a row the table cannot answer"
                break
            continue
        unanswered_in_a_row = 0
        spent += wall
        trace.trials += 1
        trace.pruned += int(study.trials[trial.number].state == optuna.trial.TrialState.PRUNED)
        best = best_trial(study)
        if best is None:
            trace.points.append((spent, math.inf))
            trace.observed.append((spent, math.inf))
            continue
        tta = best.user_attrs.get("tta_s")
        trace.observed.append((spent, math.inf if tta is None else float(tta)))
        if best.number not in judged:
            params, best_key = planned[best.number]
            judged[best.number] = s.model.expected_tta(params, s.target, digest=best_key)
            trace.pick = {"trial": best.number, "params": params, "fixed": best_key is not None}
        trace.points.append((spent, judged[best.number]))
    return trace


def _key(table: Path, workload: Workload, target: float, budget_s: float) -> str:
    """What a finished replay depends on besides its strategy and seed: the table's content,
    the workload and its space, the target, the budget and the project's code (the samplers and
    pruners it replays)."""
    code = sorted(Path(__file__).resolve().parents[1].glob("*/*.py"))  # bench/, explorer/, ...
    text = b"".join([table.read_bytes(), workload.space.read_bytes(),
                     *(p.read_bytes() for p in code),
                     f"{workload.id}:{target}:{budget_s}".encode()])
    return hashlib.sha256(text).hexdigest()[:16]


def _resumed(folder: Path, strategy: str, seed: int, run: Callable[[], Trace]) -> Trace:
    """A replay recorded in ``folder`` by an earlier, interrupted run; else run it and record
    it (the replays of a strategy take minutes: an interrupted benchmark resumes)."""
    path = folder / f"{strategy}.{seed}.json"
    if path.is_file():
        return Trace(**json.loads(path.read_text()))
    trace = run()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(trace)))
    tmp.replace(path)
    return trace


def oracle(s: Setting) -> float:
    """The best expected TTA a search could find: every schedule × batch of the space on every
    feasible layout the table measured."""
    best = math.inf
    for conv in grid_params(s.space):
        for layout in s.model.layouts():
            params = {**conv, **layout}
            if build_plan(s.space, params, data_root=DATA_ROOT, n_train=s.n_train, hosts=s.hosts,
                          overrides={"target_accuracy": s.target}).feasible:
                best = min(best, s.model.expected_tta(params, s.target))
    return best


def _available(strategies: Sequence[str], say: Callable[[str], None]) -> list[str]:
    out = []
    for name in strategies:
        if STRATEGIES[name][0] == "gp" and importlib.util.find_spec("torch") is None:
            say("gp: skipped (Optuna's GPSampler needs torch, not installed)")
            continue
        out.append(name)
    return out


def figures(traces: dict[str, list[Trace]], *, quality: float, base_tta: float,
            budget_s: float) -> tuple[list[list[str]], dict[str, Any]]:
    """The table rows and the machine-readable figures of a set of replays."""
    rows, out = [], {}

    def cost(ts: list[Trace]) -> list[float]:  # a search that never got there counts at budget
        return [min(t.compute_to(quality), budget_s) for t in ts]

    ref = cost(traces["random"]) if "random" in traces else None
    for name, ts in traces.items():
        to_q = [t.compute_to(quality) for t in ts]
        found = sum(not math.isinf(c) for c in to_q)
        med = bootstrap_median(to_q)
        vs = bootstrap_ratio(cost(ts), ref) if ref is not None and name != "random" else None
        at = [median([t.at(f * budget_s) for t in ts]) for f in FRACTIONS]
        speeds = [v for v in (_speedup(base_tta, t.final) for t in ts) if not math.isnan(v)]
        speed = median(speeds) if speeds else math.nan
        rows.append([name, f"{found}/{len(ts)}", interval(med), _vs_random(vs, ref, cost(ts),
                                                                            budget_s),
                     " / ".join("miss" if math.isinf(x) else f"{x:.0f}" for x in at),
                     _speedup_text(speed, base_tta), f"{median([t.trials for t in ts]):.0f}",
                     f"{median([t.pruned for t in ts]):.0f}"])
        out[name] = {"found": found, "seeds": len(ts), "node_s_to_quality": med,
                     "vs_random": vs, "best_at": dict(zip(map(str, FRACTIONS), at, strict=True)),
                     "speedup_vs_baseline": speed,
                     "ended": sorted({t.ended for t in ts if t.ended})}
    return rows, out


def _speedup(base: float, pick: float) -> float:
    """Baseline TTA ÷ the pick's (∞ when only the baseline misses, 0 when only the pick does,
    NaN when both miss)."""
    if math.isinf(base) and math.isinf(pick):
        return math.nan
    return math.inf if math.isinf(base) else base / pick


def _speedup_text(speed: float, base: float) -> str:
    if math.isnan(speed):
        return "- (both miss)"
    if math.isinf(speed):
        return "baseline misses"
    return f"{speed:.2f}" + (" (baseline misses)" if math.isinf(base) else "")


def _vs_random(vs: tuple[float, float, float] | None, ref: list[float] | None,
               mine: list[float], budget_s: float) -> str:
    """The ratio to random search, marked where a median never got there (counted at budget):
    ≤ when random's did not (an upper bound), ≥ when this one's did not, n/a when neither."""
    if vs is None or ref is None:
        return "-"
    ref_censored, mine_censored = median(ref) >= budget_s, median(mine) >= budget_s
    if ref_censored and mine_censored:
        return "n/a (neither got there)"
    mark = "≤ " if ref_censored else "≥ " if mine_censored else ""
    return mark + interval(vs, 2)


def pruning_saves(traces: dict[str, list[Trace]], quality: float,
                  budget_s: float) -> tuple[float, float, float]:
    """1 − (node-s to quality of TPE + successive halving ÷ TPE), with its 90 % interval."""
    def cost(ts: list[Trace]) -> list[float]:
        return [min(t.compute_to(quality), budget_s) for t in ts]
    point, lo, hi = bootstrap_ratio(cost(traces["tpe+sh"]), cost(traces["tpe"]))
    return (1.0 - point, 1.0 - hi, 1.0 - lo)


HEADERS = ["strategy", "found", "node-s to within 10 % (median [90 % CI])",
           "÷ random [90 % CI]", "best TTA s at 25/50/100 %", "speedup vs baseline", "trials",
           "pruned"]


def plot(traces: dict[str, list[Trace]], budget_s: float, out: Path, title: str) -> None:
    """Median best-so-far expected TTA against node-seconds, per strategy: HTML and PNG."""
    grid = [budget_s * i / 100 for i in range(1, 101)]
    fig = go.Figure()
    mfig, ax = plt.subplots(figsize=(8, 4.5))
    for name, ts in traces.items():
        med = [median([t.at(x) for t in ts]) for x in grid]
        ys = [None if math.isinf(v) else v for v in med]
        fig.add_trace(go.Scatter(x=grid, y=ys, mode="lines", name=name))
        ax.plot(grid, [math.nan if v is None else v for v in ys], label=name)
    fig.update_layout(title=title, xaxis_title="node-seconds spent (simulated)",
                      yaxis_title="expected TTA of the pick (s), median over seeds")
    fig.write_html(out.with_suffix(".html"), include_plotlyjs="cdn")
    ax.set_xlabel("node-seconds spent (simulated)")
    ax.set_ylabel("expected TTA of the pick (s)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    mfig.tight_layout()
    mfig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(mfig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=None, help="default: this machine class's table of "
                        "the workload in bench/tables/")
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--budget-runs", type=float, default=20.0,
                        help="budget in median full runs' node-seconds (default 20)")
    parser.add_argument("--target", type=float, default=None,
                        help="default: the workload's target")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES),
                        choices=list(STRATEGIES))
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: 2 seeds of random, tpe and tpe+sh, 6 runs of budget")
    add_workload_option(parser, "whose table to replay")
    args = parser.parse_args(argv)
    workload = WORKLOADS[args.workload]
    if args.target is None:
        args.target = workload.target_accuracy
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path, records = load_table(args.table, quick=args.quick, workload=workload)
    classes = sorted({r["machine"]["machine_class"] for r in records})
    space = load_space(workload.space)
    model = TableModel(records, space)
    hosts = [HostInfo("localhost", int(records[0]["machine"]["cores"]))]
    n_train = int(records[0]["n_train"])
    full = median([float(r["job_wall_s"]) for r in model.records])
    seeds = 2 if args.quick else args.seeds
    budget_runs = 6.0 if args.quick else args.budget_runs
    strategies = ["random", "tpe", "tpe+sh"] if args.quick else args.strategies
    s = Setting(model, space, hosts, n_train, args.target, budget_runs * full,
                seed_baseline(space, hosts, n_train))
    held, points = model.coverage(grid_params(space))
    print(f"table {path}: {len(model.records)} runs, {held} of {points} schedule × batch points,"
          f" machine class {', '.join(classes)}; {workload.describe()}; target {args.target}; "
          f"budget {budget_runs:g} median runs = {s.budget_s:.0f} node-s; {seeds} seeds "
          "(simulated from real runs of a synthetic stand-in)", flush=True)
    if held < points:
        print(f"warning: the table is partial: a sampled point it lacks fails as a trial "
              f"({points - held} points missing); figures on it are not the benchmark's")
    check = layout_check(model)
    best = oracle(s)
    base_tta = model.expected_tta(s.baseline.params, args.target,
                                  digest=digest(s.baseline.params, s.baseline.overrides))
    print(f"layout assumption: mean |Δ accuracy| per evaluation {check['layout_mean_abs_diff']:.3f}"
          f" between layouts ({check['layout_pairs']} pairs) vs {check['seed_mean_abs_diff']:.3f}"
          f" between seeds ({check['seed_pairs']} pairs); best expected TTA {best:.1f}s, seed "
          f"baseline {'misses the target' if math.isinf(base_tta) else f'{base_tta:.1f}s'}",
          flush=True)
    traces: dict[str, list[Trace]] = {}
    out = Path(args.workdir) / ("replay-quick" if args.quick else f"replay-{workload.id}")
    done_dir = out / "done" / _key(path, workload, args.target, s.budget_s)
    for name in _available(strategies, print):
        traces[name] = [_resumed(done_dir, name, seed, functools.partial(replay, s, name, seed))
                        for seed in range(seeds)]
        print(f"  {name}: {seeds} replays done", flush=True)
    rows, figs = figures(traces, quality=QUALITY * best, base_tta=base_tta, budget_s=s.budget_s)
    print(table(HEADERS, rows))
    if "tpe" in traces and "tpe+sh" in traces:
        figs["pruning_saves"] = pruning_saves(traces, QUALITY * best, s.budget_s)
        saved = figs["pruning_saves"]
        print(f"compute pruning saved to that quality (1 − tpe+sh ÷ tpe): {interval(saved, 2)}")
    fastest = min((n for n in figs if n in traces), key=lambda n: figs[n]["node_s_to_quality"][0])
    lines, figs["headline"] = headline(records, args.target,
                                       (fastest, figs[fastest]["node_s_to_quality"]))
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "traces.json").write_text(json.dumps(
        {n: [{"seed": t.seed, "points": t.points, "pick": t.pick, "ended": t.ended}
             for t in ts] for n, ts in traces.items()}, default=str))
    plot(traces, s.budget_s, out / "best_so_far",
         f"{workload.id}, target {args.target}, {seeds} seeds, {', '.join(classes)} "
         "(simulated from a recorded table; synthetic stand-in)")
    emit("replay", {"table": str(path), "machine_class": classes, "workload": workload.id,
                    "target": args.target, "budget_s": s.budget_s, "seeds": seeds,
                    "quick": args.quick, "coverage": [held, points], "layout_check": check,
                    "oracle_s": best, "baseline_s": base_tta, "figures": figs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
