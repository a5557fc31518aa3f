"""The table plan, the table model and the replay, on a hand-made table of known curves (no
training): exact look-ups, per-layout time axes, pruning costs, the oracle and the statistics."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path
from typing import Any

import optuna
import pytest

from bench.headline import confirm_ttas, headline
from bench.replay import (
    STRATEGIES,
    Setting,
    figures,
    oracle,
    replay,
)
from bench.search import study_trace, tiered
from bench.stats import bootstrap_median, bootstrap_ratio
from bench.surrogate import TableModel, kendall_tau, layout_check
from bench.table import (
    BEST_SEEDS,
    PROBE,
    REFERENCE_LAYOUT,
    WORKLOAD,
    confirm_runs,
    digest,
    find_table,
    grid_params,
    planned_runs,
    probe_params,
    signal_runs,
    table_best,
)
from bench.table import main as table_main
from launchers.hosts import HostInfo
from search_spaces.baseline import seed_baseline
from search_spaces.space import load_space

optuna.logging.set_verbosity(optuna.logging.ERROR)
SPACE_FILE = WORKLOAD.space
SPACE = load_space(SPACE_FILE)
HOSTS = [HostInfo("localhost", 2)]
N_TRAIN = 4000
EVALS = [0.5 * k for k in range(1, 13)]  # the workload evaluates twice an epoch to 6 epochs
RATE = {16: 250.0, 32: 300.0, 64: 330.0}  # images/s by per-node batch on 1 rank × 2 threads
BASE = seed_baseline(SPACE, HOSTS, N_TRAIN)


def _speed(params: dict[str, Any]) -> float:
    ranks, threads = params.get("ranks_per_node", 1), params.get("threads_per_rank", 1)
    return RATE[params["per_node_batch"]] * (1.0 if ranks * threads == 2 else 0.6) * (
        0.9 if ranks == 2 else 1.0)


def _curve(params: dict[str, Any], seed: int) -> list[list[float]]:
    """Accuracy rises faster the closer the peak LR is to 0.02 (layout-independent), with seed
    noise; evaluation k ends at k × (half an epoch's training + 1 s of evaluation) + 2 s."""
    lr = params.get("peak_lr", 0.008)
    rate = 0.9 - 0.5 * abs(math.log(lr / 0.02)) - 0.1 * params.get("warmup_epochs", 0.0)
    rng = random.Random(seed * 1000 + int(lr * 1e6) + params["per_node_batch"])
    t_eval = 0.5 * N_TRAIN / _speed(params)
    return [[e, round((k + 1) * (t_eval + 1.0) + 2.0, 3),
             round(min(0.97, 0.25 + 0.7 * (1 - math.exp(-rate * e)) + rng.gauss(0, 0.01)), 5)]
            for k, e in enumerate(EVALS)]


def _record(config_id: str, phase: str, params: dict[str, Any], seed: int = 0,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    curve = _curve(params, seed)
    return {"workload": WORKLOAD.id, "config_id": config_id, "phase": phase, "seed": seed,
            "digest": digest(params, overrides or {}), "params": params,
            "overrides": overrides or {}, "n_train": N_TRAIN, "nodes": 1, "curve": curve,
            "images_per_sec": _speed(params), "startup_s": 8.0,
            "job_wall_s": 8.0 + curve[-1][1] + 1.0, "state": "completed", "reason": "max_epochs",
            "machine": {"machine_class": "avx512-bf16", "cores": 2}}


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return [_record(p.config_id, p.phase, p.params, p.seed, p.overrides)
            for p in planned_runs(SPACE, HOSTS, N_TRAIN, Path("/nonexistent"))]


@pytest.fixture(scope="module")
def setting(records: list[dict[str, Any]]) -> Setting:
    return Setting(TableModel(records, SPACE), SPACE, HOSTS, N_TRAIN, 0.8, 3000.0, BASE)


def test_the_table_plan_covers_the_grid_once_with_repeats_cells_and_neighbours():
    runs = planned_runs(SPACE, HOSTS, N_TRAIN, Path("/nonexistent"))
    phases = [r.phase for r in runs]
    assert phases == sorted(phases, key=["repeat", "cells", "grid", "neighbour"].index)
    assert len({r.key for r in runs}) == len(runs)  # no run twice
    grid = grid_params(SPACE)
    assert len(grid) == 4 * 2 * 2 * 3
    on_ref = {tuple(sorted(r.params.items())) for r in runs if r.phase in ("repeat", "grid")
              and r.seed == 0 and not r.overrides}
    assert on_ref == {tuple(sorted({**p, **REFERENCE_LAYOUT}.items())) for p in grid}
    repeats = [r for r in runs if r.phase == "repeat"]
    assert len(repeats) == 6 * 3 and {r.seed for r in repeats} == {0, 1, 2}
    cells = [r for r in runs if r.phase == "cells"]  # 1×1 and 2×1 (2×2 is over 2 cores)
    assert {(r.params["ranks_per_node"], r.params["threads_per_rank"]) for r in cells} == {
        (1, 1), (2, 1)}
    assert all({k: r.params[k] for k in PROBE} == PROBE for r in cells) and len(cells) == 6


def test_the_signal_phase_reruns_the_repeated_grid_points_that_reached_on_fresh_seeds(records):
    assert signal_runs(SPACE, [], 0.7) == []  # it waits for the repeats
    repeats = [r for r in records if r["phase"] == "repeat" and not r["overrides"]]
    names = sorted({r["config_id"] for r in repeats})
    missed = next(r for r in repeats if r["config_id"] == names[0] and r["seed"] == 1)
    table = [r for r in records if r is not missed] + [
        {**missed, "curve": [[c[0], c[1], 0.5] for c in missed["curve"]]}]  # seed 1 misses
    runs = signal_runs(SPACE, table, 0.7)
    assert {r.config_id for r in runs} == set(names[1:])  # every other one reaches 0.7
    assert {r.phase for r in runs} == {"signal"} and len(runs) == len(names[1:]) * 12
    assert not {r.seed for r in runs} & {0, 1, 2, *BEST_SEEDS}
    model = TableModel(records + [_record(r.config_id, r.phase, r.params, r.seed) for r in runs],
                       SPACE)
    assert model.records == TableModel(records, SPACE).records  # no figure of the replay moves


def test_the_cells_probe_keeps_probes_values_and_takes_the_middle_choice_of_other_dims(
        tmp_path):
    # the bench workloads' cells keep their recorded schedule and names (config_name's key order)
    assert list(probe_params(SPACE).items()) == list(PROBE.items())
    other = tmp_path / "space.yaml"
    other.write_text(SPACE_FILE.read_text().replace(
        "warmup_epochs: {choices: [0.0, 1.0]}", "decay_factor: {choices: [0.5, 0.7, 0.9]}"))
    space = load_space(other)
    assert probe_params(space) == {"peak_lr": 0.01, "decay_factor": 0.7, "first_decay_epoch": 5.0}
    cells = [r for r in planned_runs(space, HOSTS, N_TRAIN, Path("/nonexistent"))
             if r.phase == "cells"]
    assert cells and all(r.params["decay_factor"] == 0.7 for r in cells)


def test_points_are_looked_up_exactly_and_a_point_the_table_lacks_is_not_answered(setting):
    model = setting.model
    rng = random.Random(0)
    assert model.seeds(BASE.params, digest(BASE.params, BASE.overrides))[0]["config_id"] == (
        "baseline")
    point = {**grid_params(SPACE)[7], **REFERENCE_LAYOUT}
    run = model.run(point, rng)
    assert run is not None and run.config_id == next(
        r["config_id"] for r in model.records if r["params"] == point)
    assert model.run({**point, "peak_lr": 0.03}, rng) is None  # not a grid point


def test_the_time_axis_is_the_layouts_own_and_the_curve_is_not(setting):
    model = setting.model
    point = {**grid_params(SPACE)[3], **REFERENCE_LAYOUT}
    slow = {**point, "ranks_per_node": 1, "threads_per_rank": 1}
    run_fast, run_slow = model.run(point, random.Random(0)), model.run(slow, random.Random(0))
    assert run_fast is not None and run_slow is not None
    assert run_slow.timeline[-1][0] > run_fast.timeline[-1][0]
    assert [a for _, a in run_slow.timeline] == [a for _, a in run_fast.timeline]


def test_replays_run_every_strategy_within_the_budget(setting):
    for name, (sampler, _, _) in STRATEGIES.items():
        if sampler == "gp":  # minutes; tests/explorer_tests/test_sampler_view.py covers GP
            continue
        trace = replay(setting, name, seed=1)
        assert trace.trials > 3 and trace.points and trace.unanswered == 0, name
        spent = [p[0] for p in trace.points]
        assert spent == sorted(spent) and spent[-1] - setting.budget_s < 200.0
        assert trace.pick is not None


def test_a_pruned_trial_costs_only_its_time_to_the_prune_point(setting):
    trace = replay(setting, "tpe+sh", seed=3)
    assert trace.pruned >= 1
    times = setting.model.times({**grid_params(SPACE)[0], **REFERENCE_LAYOUT})
    assert times is not None
    costs = [b[0] - a[0] for a, b in zip(trace.points, trace.points[1:], strict=False)]
    assert min(costs) < 0.7 * (8.0 + times[-1])


def test_a_partial_table_fails_the_points_it_lacks_and_goes_on(records):
    some = [r for r in records if r["phase"] != "grid" or r["params"]["peak_lr"] != 0.02]
    s = Setting(TableModel(some, SPACE), SPACE, HOSTS, N_TRAIN, 0.8, 2000.0, BASE)
    trace = replay(s, "random", seed=0)
    assert trace.unanswered >= 1 and trace.trials >= 3


def test_the_oracle_is_no_worse_than_any_pick_and_figures_compare_to_random(setting):
    best = oracle(setting)
    assert math.isfinite(best)
    traces = {name: [replay(setting, name, seed) for seed in range(3)]
              for name in ("random", "tpe")}
    assert all(t.final >= best for ts in traces.values() for t in ts)
    rows, figs = figures(traces, quality=1.1 * best, base_tta=200.0,
                         budget_s=setting.budget_s)
    assert [r[0] for r in rows] == ["random", "tpe"] and figs["random"]["vs_random"] is None
    assert figs["tpe"]["vs_random"] is not None and figs["tpe"]["seeds"] == 3


def test_the_layout_check_sees_layout_independent_curves(setting):
    check = layout_check(setting.model)
    assert check["layout_pairs"] == 6 and check["seed_pairs"] >= 6 * 3
    assert check["layout_mean_abs_diff"] < 0.5 * check["seed_mean_abs_diff"]


def test_kendall_tau_and_the_bootstrap():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, math.inf], [1, 2, 3]) == pytest.approx(1.0)
    assert bootstrap_median([5.0] * 10) == (5.0, 5.0, 5.0)
    point, lo, hi = bootstrap_ratio([10.0] * 20, [20.0] * 20)
    assert point == lo == hi == pytest.approx(0.5)
    point, lo, hi = bootstrap_ratio([1.0, 2.0, 3.0, 50.0] * 5, [2.0, 4.0, 6.0, 100.0] * 5)
    assert lo <= point <= hi and point == pytest.approx(0.5)
    assert math.isnan(bootstrap_ratio([math.inf] * 3, [math.inf] * 3)[1])


def test_replays_are_reproducible(setting):
    a, b = replay(setting, "tpe+sh", seed=7), replay(setting, "tpe+sh", seed=7)
    assert a.points == b.points


def test_a_table_of_another_machine_class_is_read_only_by_a_smoke_run(tmp_path):
    other = tmp_path / f"{WORKLOAD.id}.amx.jsonl"
    other.write_text("")
    assert find_table(WORKLOAD, "avx512", quick=True, root=tmp_path) == other
    with pytest.raises(SystemExit, match=rf"no table of {WORKLOAD.id} for machine class avx512 "
                                         r".*python -m bench.table"):
        find_table(WORKLOAD, "avx512", quick=False, root=tmp_path)


def test_a_real_studys_trace_follows_its_best_trial_and_judges_it_on_the_table(setting):
    """bench.search's view of a real study: compute spent (nodes counted), best observed TTA and
    the expected TTA of the pick, after each finished trial."""
    point = {**grid_params(SPACE)[5], **REFERENCE_LAYOUT}
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        k: optuna.distributions.CategoricalDistribution([v]) for k, v in point.items()}
    study = optuna.create_study()
    for state, wall, tta, value, nodes in [("COMPLETE", 30.0, None, 1.3e6, 1),  # a miss
                                           ("PRUNED", 10.0, None, None, 1),
                                           ("COMPLETE", 20.0, 12.0, 12.0, 2),
                                           ("FAIL", 5.0, None, None, 1),
                                           ("COMPLETE", 25.0, 15.0, 15.0, 1)]:
        study.add_trial(optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state), params=point, distributions=dist,
            value=value, user_attrs={"wall_s": wall, "tta_s": tta, "derived": {"nodes": nodes},
                                     "state": state.replace("COMPLETE", "COMPLETED").replace(
                                         "FAIL", "FAILED")}))
    expected = setting.model.expected_tta(point, 0.8)
    assert study_trace(study, setting.model, 0.8) == [
        (30.0, math.inf, expected), (40.0, math.inf, expected), (80.0, 12.0, expected),
        (85.0, 12.0, expected), (110.0, 12.0, expected)]


def test_the_headline_runs_wait_for_the_grid_then_confirm_its_best_on_fresh_seeds(records):
    runs = planned_runs(SPACE, HOSTS, N_TRAIN, Path("/nonexistent"))
    assert confirm_runs(SPACE, HOSTS, N_TRAIN, records[:-10], runs,
                        WORKLOAD) == []  # grid incomplete
    confirm = confirm_runs(SPACE, HOSTS, N_TRAIN, records, runs, WORKLOAD)
    model = TableModel(records, SPACE)
    target = WORKLOAD.target_accuracy  # the confirm runs' best is the workload's target's
    best = table_best(records, SPACE, target)
    assert best is not None and best["seed"] == 0
    ref_points = [{**p, **REFERENCE_LAYOUT} for p in grid_params(SPACE)]
    assert model.expected_tta(best["params"], target) == min(model.expected_tta(p, target)
                                                             for p in ref_points)
    by_name: dict[str, list[int]] = {}
    for p in confirm:
        assert p.phase == "confirm"
        by_name.setdefault(p.config_id, []).append(p.seed)
    # the seed baseline's seeds 0–2 are the repeats already recorded; the best's are fresh
    assert by_name == {"practitioner": [0, 1, 2, 3, 4], "baseline": [3, 4],
                       f"best:{best['config_id']}": [10, 11, 12, 13, 14]}
    practitioner = next(p for p in confirm if p.config_id == "practitioner")
    assert practitioner.params["per_worker_batch"] == 32
    assert practitioner.overrides["schedule"]["piecewise"] == "0.0125;2;0.00125;4;0.000125"


def test_the_headline_is_the_baselines_tta_over_the_bests_with_an_interval(records):
    assert "not yet recorded" in headline(records, 0.8, None)[0][0]
    best = table_best(records, SPACE, 0.8)
    assert best is not None
    slow = {"peak_lr": 0.005, "warmup_epochs": 1.0, "first_decay_epoch": 3.0,
            "per_node_batch": 16, **REFERENCE_LAYOUT}
    extra = [_record(f"best:{best['config_id']}", "confirm", best["params"], s)
             for s in range(10, 15)]
    extra += [_record("practitioner", "confirm", slow, s) for s in range(5)]
    extra += [_record("baseline", "confirm", BASE.params, s, BASE.overrides) for s in (3, 4)]
    lines, figs = headline(records + extra, 0.8, ("tpe+sh", (100.0, 80.0, 150.0)))
    ttas = confirm_ttas(records + extra, 0.8)
    assert sorted(ttas) == sorted(["baseline", "practitioner", f"best:{best['config_id']}"])
    assert all(len(v) == 5 for v in ttas.values())
    point, lo, hi = figs["practitioner"]["ratio"]
    assert point > 1.0 and lo <= point <= hi  # LR 0.005 converges slower than the best
    assert point == pytest.approx(statistics.median(ttas["practitioner"])
                                  / statistics.median(ttas[f"best:{best['config_id']}"]))
    assert any("practitioner baseline" in line for line in lines)
    assert "found by tpe+sh after 100 [80, 150] node-s" in lines[-1]


def test_a_cells_clock_comes_from_its_uncontended_runs_and_every_curve_still_counts(records):
    point = {**grid_params(SPACE)[3], **REFERENCE_LAYOUT}
    base = TableModel(records, SPACE).times(point)
    assert base is not None
    loaded = [{**r, "curve": [[e, t * 3.0, a] for e, t, a in r["curve"]],
               "images_per_sec": r["images_per_sec"] / 3.0}
              if r["params"].get("per_node_batch") == point["per_node_batch"]
              and r["phase"] == "grid" else r for r in records]
    model = TableModel(loaded, SPACE)
    assert model.times(point) == base  # the slowed runs' clocks are left out
    assert [r.seed for r in model.runs(point)] == [0]  # their curves are not
    # (a cell's fastest runs set its clock: with every run of it slowed alike, they are it)
    everything = [{**r, "curve": [[e, t * 3.0, a] for e, t, a in r["curve"]],
                   "images_per_sec": r["images_per_sec"] / 3.0} for r in records]
    slowed = TableModel(everything, SPACE).times(point)
    assert slowed is not None and slowed[-1] == pytest.approx(3.0 * base[-1])


def test_strategies_within_five_percent_are_level_in_the_ordering():
    assert tiered({"tpe+sh": 56.0, "random": 56.4}) == {"tpe+sh": 0, "random": 0}
    assert tiered({"a": 50.0, "b": 60.0, "c": 61.0}) == {"a": 0, "b": 1, "c": 1}
    assert tiered({"a": math.inf, "b": 50.0, "c": math.inf}) == {"b": 0, "a": 1, "c": 1}


def test_a_workload_without_a_grid_space_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        table_main(["--workload", "bench-v1", "--workdir", str(tmp_path / "work")])
    assert exc.value.code == 2
    assert "workload bench-v1: the table needs a grid space" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_a_workload_without_its_practitioner_baseline_is_refused_before_anything_is_written(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("bench.table.practitioner_file", lambda w: tmp_path / "missing.yaml")
    with pytest.raises(SystemExit) as exc:
        table_main(["--workload", WORKLOAD.id, "--workdir", str(tmp_path / "work")])
    assert exc.value.code == 2
    assert "write its practitioner baseline" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
