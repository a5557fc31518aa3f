"""Real studies on the bench workload, to check what the replay (``bench.replay``) predicts.

    .venv/bin/python -m bench.search [--strategies tpe+sh random] [--seeds 3]
                                     [--budget-runs 10] [--workdir bench-work] [--quick]
                                     [--workload ID]

Each (strategy, seed) is a real study of the bench workload (``--workload``; its grid space, data
and target, the seed baseline first, as ``bench.replay`` simulates it), stopped once its trials
have used ``--budget-runs`` × the table's median full run in node-seconds. All studies of a
workload share one sqlite storage under ``WORKDIR/search-<workload>``, so an interrupted run
resumes: rerun the same command (a study that has spent its budget ends at once).

Reported per strategy, median over seeds: the best TTA each study observed within the budget and
the expected TTA of its pick (median over the table's seeds of that config), beside the replay's
prediction of both for the same seeds and budget; then whether the replay's ordering of the
strategies held (strategies whose picks are within 5 % of each other count as level, so a tie
the replay predicts is not read as an order). Figures are on a synthetic stand-in for BBBC021.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from pathlib import Path
from typing import Any

import optuna

from bench.common import emit, machine, synth_tree, table
from bench.replay import QUALITY, STRATEGIES, Setting, oracle, replay
from bench.surrogate import TableModel
from bench.table import add_workload_option, digest, load_table, require_complete
from explorer.cli_study import quiet_libraries
from explorer.driver import StudyDriver
from explorer.progress import ProgressLine
from explorer.record import Outcome, records
from explorer.study import StudySettings
from explorer.workloads import WORKLOADS
from launchers import MpirunLauncher
from launchers.hosts import detect_local
from mcnn_base.native_logs import filter_native_info
from search_spaces.baseline import seed_baseline
from search_spaces.space import load_space

__all__ = ["study_trace", "tiered"]

TIE = 0.05  # strategies whose picks' expected TTA differ by less than this are level


def study_trace(study: optuna.Study, model: TableModel,
                target: float) -> list[tuple[float, float, float]]:
    """After each finished trial: (node-seconds spent, best observed TTA, expected TTA of the
    pick) — the pick being the best completed trial so far, as ``explorer.study.best_trial``."""
    spent, best_value, observed, expected = 0.0, math.inf, math.inf, math.inf
    out = []
    for r in sorted(records(study), key=lambda r: r.number):
        if r.state in (Outcome.WAITING, Outcome.RUNNING):
            continue
        spent += r.node_s
        if r.state is Outcome.COMPLETED and r.values and r.values[0] < best_value:
            best_value = r.values[0]
            observed = r.tta_s if r.tta_s is not None else math.inf
            key = digest(r.fixed["params"], r.fixed.get("overrides") or {}) if r.fixed else None
            layout = (r.config.get("layout") or {})  # layout-first's stage 2 samples no layout
            params = dict(r.fixed["params"]) if r.fixed else {
                **{k: layout[k] for k in ("ranks_per_node", "threads_per_rank", "binding")
                   if k in layout}, **r.params}
            expected = model.expected_tta(params, target, digest=key)
        out.append((spent, observed, expected))
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.inf


def _s(x: float) -> str:
    return "miss" if math.isinf(x) else f"{x:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["tpe+sh", "random"],
                        choices=list(STRATEGIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-runs", type=float, default=10.0)
    parser.add_argument("--table", default=None)
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: one short study "
                        "on a small tree (exercises the code, measures nothing)")
    add_workload_option(parser, "whose space, data, target and table the studies use")
    args = parser.parse_args(argv)
    workload = WORKLOADS[args.workload]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_libraries()
    root = Path(args.workdir).resolve()
    os.environ.setdefault("MCNN_CACHE_DIR", str(root / "cache"))
    path, table_records = load_table(args.table, quick=args.quick, workload=workload)
    space = load_space(workload.space)
    if not args.quick:
        require_complete(table_records, space, workload)
    model = TableModel(table_records, space)
    full = _median([float(r["job_wall_s"]) for r in model.records])
    hosts = [detect_local()]
    if args.quick:
        data = synth_tree(root / "data-64x80-1000-m3", workload.tiff_size, 1000, workload.moas)
        n_train, budget, seeds, strategies = 800, 40.0, [0], args.strategies[:1]
        overrides: dict[str, Any] = {"max_epochs": 1}
    else:
        data = root / f"data-{workload.id}"
        if not (data / "BBBC021_v1_image.csv").is_file():
            workload.synthesize(data)
        n_train, budget = workload.images - workload.val_images, args.budget_runs * full
        seeds, strategies, overrides = list(range(args.seeds)), args.strategies, {}
    work = root / ("search-quick" if args.quick else f"search-{workload.id}")
    work.mkdir(parents=True, exist_ok=True)
    real: dict[str, list[list[tuple[float, float, float]]]] = {}
    for name in strategies:
        sampler, pruner, strategy = STRATEGIES[name]
        for seed in seeds:
            study_name = f"{name.replace('+', '-')}-seed{seed}"
            settings = StudySettings(
                space=workload.space, data_root=data, study=study_name,
                storage=f"sqlite:///{work / 'optuna.db'}",
                tracking_uri=f"sqlite:///{work / 'mlflow.db'}", workdir=work / study_name,
                hosts=hosts, trials=100_000, trial_timeout_s=900.0,
                target_accuracy=workload.target_accuracy, sampler=sampler, pruner=pruner,
                seed=seed, budget_node_s=budget, baseline="seed", strategy=strategy,
                overrides=overrides)
            with open(os.devnull, "w") as sink:
                study = StudyDriver(settings, MpirunLauncher(),
                                    progress=ProgressLine(0, stream=sink)).run()
            real.setdefault(name, []).append(study_trace(study, model,
                                                         workload.target_accuracy))
            print(f"{study_name}: {len(real[name][-1])} trials, best observed "
                  f"{_s(real[name][-1][-1][1]) if real[name][-1] else 'miss'}", flush=True)
    s = Setting(model, space, hosts, n_train, workload.target_accuracy, budget,
                seed_baseline(space, hosts, n_train))
    best = oracle(s)
    rows, predicted, measured = [], {}, {}
    for name, traces in real.items():
        sim = [replay(s, name, seed) for seed in seeds]
        measured[name] = _median([t[-1][2] if t else math.inf for t in traces])
        predicted[name] = _median([t.final for t in sim])
        rows.append([name, len(traces),
                     _s(_median([t[-1][1] if t else math.inf for t in traces])),
                     _s(_median([t.observed[-1][1] if t.observed else math.inf for t in sim])),
                     _s(measured[name]), _s(predicted[name]),
                     sum(1 for t in traces if any(p[2] <= QUALITY * best for p in t))])
    print(f"real studies of {workload.describe()} on {machine()['machine_class']}, budget "
          f"{budget:.0f} node-s, seeds {seeds}; table {path} (synthetic stand-in)")
    print(table(["strategy", "studies", "best observed TTA s (real)", "(replay)",
                 "expected TTA of the pick s (real)", "(replay)", "studies within 10 %"], rows))
    order_real, order_sim = tiered(measured), tiered(predicted)
    held = order_real == order_sim
    print(f"ordering by the pick's expected TTA (strategies within {TIE:.0%} of each other "
          f"are level): real {_tiers(order_real)}, replay {_tiers(order_sim)}: "
          f"{'held' if held else 'did NOT hold'}")
    emit("search", {"workload": workload.id, "machine": machine(), "quick": args.quick,
                    "budget_node_s": budget, "seeds": seeds, "rows": rows,
                    "ordering_held": held})
    return 0


def tiered(values: dict[str, float], tie: float = TIE) -> dict[str, int]:
    """Each name's place, best (lowest) first; a value within ``tie`` (relative) of its tier's
    first value shares that tier."""
    out: dict[str, int] = {}
    head, tier = math.nan, -1
    for name in sorted(values, key=lambda n: values[n]):
        v = values[name]
        if not (v == head or (math.isfinite(v) and math.isfinite(head)
                              and v <= head * (1 + tie))):
            head, tier = v, tier + 1
        out[name] = tier
    return out


def _tiers(places: dict[str, int]) -> str:
    tiers = [sorted(n for n, t in places.items() if t == k) for k in sorted(set(places.values()))]
    return " < ".join(" = ".join(t) for t in tiers)


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
