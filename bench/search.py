"""Search efficiency: TPE + median pruning vs TPE without pruning vs random, at equal compute.

    .venv/bin/python -m bench.search [--quick] [--workdir bench-work] [--seeds 3]
                                     [--budget-node-s 600]

Each (search, seed) is a real TTA study of ``search_spaces/tiny.yaml`` on the demo-size synthetic
data (64×80, 360 images, target 0.45), stopped by a compute budget (node-seconds of its trials).
All studies live in one sqlite storage, so an interrupted run resumes where it stopped: rerun the
same command.

Reported, median over seeds: the best TTA found against compute spent, and the compute each search
needed to come within 10 % of the best TTA seen in any study; then TPE+pruning ÷ random and
TPE+pruning ÷ TPE without pruning (targets ≤ 0.5 and ≤ 0.6). The same ratios follow against
each seed's own best, and "to the same quality": per seed, the compute each search needed to reach
the worse of the two searches' final bests (so neither is censored), median over seeds.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from pathlib import Path
from typing import Any

import optuna

from bench.common import emit, machine, synth_tree, table, verdict
from explorer.cli_study import quiet_libraries
from explorer.driver import StudyDriver
from explorer.progress import ProgressLine
from explorer.record import Outcome, TrialRecord
from explorer.study import StudySettings
from launchers import MpirunLauncher
from launchers.hosts import detect_local
from mcnn_base.native_logs import filter_native_info

REPO = Path(__file__).resolve().parents[1]
SEARCHES = {"tpe+median": ("tpe", "median"), "tpe": ("tpe", "none"), "random": ("random", "none")}


def curve(study: optuna.Study) -> list[tuple[float, float]]:
    """(node-seconds spent, best TTA so far) after each trial, in trial order."""
    spent, best, out = 0.0, math.inf, []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if not t.state.is_finished():
            continue
        r = TrialRecord.from_frozen(t)
        spent += r.node_s
        if r.state is Outcome.COMPLETED and r.tta_s is not None:
            best = min(best, float(r.tta_s))
        out.append((spent, best))
    return out


def compute_to(points: list[tuple[float, float]], threshold: float) -> float:
    return next((spent for spent, best in points if best <= threshold), math.inf)


def best_at(points: list[tuple[float, float]], budget: float) -> float:
    return min((best for spent, best in points if spent <= budget), default=math.inf)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run")
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-node-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_libraries()
    root = Path(args.workdir).resolve()
    images = 96 if args.quick else 360
    data = synth_tree(root / f"data-64x80-{images}", (64, 80), images, 5)
    work = root / ("search-quick" if args.quick else "search")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MCNN_CACHE_DIR", str(root / "cache"))
    seeds = [0] if args.quick else list(range(args.seeds))
    budget = 20.0 if args.quick else args.budget_node_s
    target = 0.3 if args.quick else 0.45
    storage = f"sqlite:///{work / 'optuna.db'}"
    curves: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in SEARCHES}
    for seed in seeds:
        for name, (sampler, pruner) in SEARCHES.items():
            study_name = f"{name.replace('+', '-')}-seed{seed}"
            settings = StudySettings(
                space=REPO / "search_spaces" / "tiny.yaml", data_root=data, study=study_name,
                storage=storage, tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                workdir=work / study_name, hosts=[detect_local()], trials=100_000,
                trial_timeout_s=300.0, target_accuracy=target, sampler=sampler, pruner=pruner,
                seed=seed, budget_node_s=budget,
                overrides={"max_epochs": 4} if args.quick else {})
            with open(os.devnull, "w") as sink:
                study = StudyDriver(settings, MpirunLauncher(),
                                    progress=ProgressLine(0, stream=sink)).run()
            curves[name].append(curve(study))
    best_overall = min((b for cs in curves.values() for c in cs for _, b in c), default=math.inf)
    threshold = 1.1 * best_overall
    # the same figure against each seed's own best (its three searches ran back to back, so
    # machine noise between seeds does not decide it)
    seed_best = [min((b for cs in curves.values() for _, b in cs[i]), default=math.inf)
                 for i in range(len(seeds))]
    rows: list[list[Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    medians: dict[str, float] = {}
    seed_medians: dict[str, float] = {}
    for name, cs in curves.items():
        need = [compute_to(c, threshold) for c in cs]
        need_seed = [compute_to(c, 1.1 * seed_best[i]) for i, c in enumerate(cs)]
        med_need, med_seed = statistics.median(need), statistics.median(need_seed)
        at = [statistics.median(best_at(c, budget * f) for c in cs) for f in (0.25, 0.5, 1.0)]
        trials = statistics.median(len(c) for c in cs)
        rows.append([name, *at, med_need, med_seed, trials])
        medians[name], seed_medians[name] = med_need, med_seed
        summary[name] = {"compute_to_within_10pct": [_json_safe(x) for x in need],
                         "median": _json_safe(med_need),
                         "compute_to_within_10pct_of_seed_best": [_json_safe(x)
                                                                  for x in need_seed],
                         "median_seed_best": _json_safe(med_seed),
                         "best_at_25_50_100pct": [_json_safe(x) for x in at], "trials": trials}

    vs_random, rand_bound = censored_ratio(medians["tpe+median"], medians["random"], budget)
    vs_nopruning, tpe_bound = censored_ratio(medians["tpe+median"], medians["tpe"], budget)
    seed_vs_random, seed_rand_bound = censored_ratio(seed_medians["tpe+median"],
                                                     seed_medians["random"], budget)
    seed_vs_tpe, seed_tpe_bound = censored_ratio(seed_medians["tpe+median"], seed_medians["tpe"],
                                                 budget)
    # compute to the same quality, seed by seed: the target is the worse of the two searches'
    # final bests, so both reached it and neither ratio is censored
    matched = {base: statistics.median(matched_ratio(curves["tpe+median"][i], curves[base][i])
                                       for i in range(len(seeds)))
               for base in ("random", "tpe")}
    facts = machine()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores; {facts['date']}; seeds {seeds}, "
          f"budget {budget:g} node-s per study, target {target}")
    print(f"best TTA seen in any study: {best_overall:.2f}s; within 10%: <= {threshold:.2f}s")
    print(table(["search", "best TTA @25%", "@50%", "@100% budget",
                 "node-s to within 10% (median)", "... of its seed's best", "trials"], rows))
    print(table(["figure", "value", "target"], [
        ["compute: TPE+pruning / random", shown(vs_random, rand_bound),
         verdict(vs_random, 0.5)],
        ["compute: TPE+pruning / TPE no pruning", shown(vs_nopruning, tpe_bound),
         verdict(vs_nopruning, 0.6)],
        ["same, each seed's own best: / random", shown(seed_vs_random, seed_rand_bound),
         verdict(seed_vs_random, 0.5)],
        ["same, each seed's own best: / TPE", shown(seed_vs_tpe, seed_tpe_bound),
         verdict(seed_vs_tpe, 0.6)],
        ["to the same quality, median per seed: / random", f"{matched['random']:.3g}",
         verdict(matched["random"], 0.5)],
        ["to the same quality, median per seed: / TPE", f"{matched['tpe']:.3g}",
         verdict(matched["tpe"], 0.6)],
    ]))
    if rand_bound or tpe_bound:
        print("'<' marks an upper bound: the other search never came within 10% inside the budget, "
              "so its compute is counted as the whole budget")
    emit("search", {"machine": facts, "quick": args.quick, "seeds": seeds, "budget_node_s": budget,
                    "best_overall_tta_s": _json_safe(best_overall), "summary": summary,
                    "tpe_median_over_random": _json_safe(vs_random),
                    "tpe_median_over_random_is_upper_bound": rand_bound,
                    "tpe_median_over_tpe": _json_safe(vs_nopruning),
                    "tpe_median_over_tpe_is_upper_bound": tpe_bound,
                    "seed_best": {"tpe_median_over_random": _json_safe(seed_vs_random),
                                  "over_random_is_upper_bound": seed_rand_bound,
                                  "tpe_median_over_tpe": _json_safe(seed_vs_tpe),
                                  "over_tpe_is_upper_bound": seed_tpe_bound},
                    "same_quality_median_per_seed": {
                        "tpe_median_over_random": _json_safe(matched["random"]),
                        "tpe_median_over_tpe": _json_safe(matched["tpe"])}})
    return 0


def matched_ratio(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Compute a needs ÷ compute b needs to reach the worse of their two final bests."""
    final = [min((best for _, best in c), default=math.inf) for c in (a, b)]
    if any(math.isinf(f) for f in final):
        return math.inf
    target = max(final)
    return compute_to(a, target) / compute_to(b, target)


def censored_ratio(x: float, y: float, budget: float) -> tuple[float, bool]:
    """x ÷ y for compute-to-target figures, where inf means "not reached within the budget".

    When only y never got there, its true compute is more than the budget, so x ÷ budget is an
    upper bound on the ratio (returned with True). When x never got there the ratio is inf.
    """
    if math.isinf(x):
        return math.inf, False
    if math.isinf(y):
        return x / budget, True
    return x / y, False


def shown(value: float, upper_bound: bool) -> str:
    return ("< " if upper_bound else "") + ("inf" if math.isinf(value) else f"{value:.3g}")


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and math.isinf(value) else value


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
