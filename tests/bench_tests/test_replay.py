"""The replay and its table model, on a hand-made table of known curves (no training)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import optuna
import pytest

from bench.replay import STRATEGIES, Setting, bootstrap_ratio, oracle, replay
from bench.surrogate import TableModel, leave_one_out, spearman
from bench.table import WORKLOAD, digest, planned_runs, sobol_params
from launchers.hosts import HostInfo
from search_spaces.baseline import seed_baseline
from search_spaces.space import load_space

SPACE = load_space(WORKLOAD.space)
HOSTS = [HostInfo("localhost", 2)]
N_TRAIN = 4000
EVALS = [0.5 * k for k in range(1, 13)]  # the workload evaluates twice an epoch to 6 epochs
RATE = {16: 250.0, 32: 300.0, 64: 330.0}  # images/s by per-node batch (1 rank × 2 threads)


def _speed(params: dict[str, Any]) -> float:
    ranks, threads = params["ranks_per_node"], params["threads_per_rank"]
    return RATE[params["per_node_batch"]] * (1.0 if ranks * threads == 2 else 0.6) * (
        0.9 if ranks == 2 else 1.0)


def _curve(params: dict[str, Any], seed: int, lr_key: float | None = None) -> list[list[float]]:
    """Accuracy rises faster the closer the peak LR is to 0.02, with seed noise."""
    lr = lr_key if lr_key is not None else params.get("peak_lr", 0.008)
    rate = 0.9 - 0.5 * abs(math.log(lr / 0.02))
    rng = random.Random(seed * 1000 + int(lr * 1e6))
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
    points = sobol_params(SPACE, HOSTS, N_TRAIN, Path("/nonexistent"), 40)
    out = [_record(f"sobol{i:03d}", "repeat" if i < 3 else "sobol", p, seed=0)
           for i, p in enumerate(points)]
    out += [_record(f"sobol{i:03d}", "repeat", points[i], seed=s) for s in (1, 2)
            for i in range(3)]
    base = seed_baseline(SPACE, HOSTS, N_TRAIN)
    out += [_record("baseline", "repeat", base.params, s, base.overrides) for s in range(3)]
    return out


@pytest.fixture(scope="module")
def setting(records: list[dict[str, Any]]) -> Setting:
    return Setting(TableModel(records, SPACE), SPACE, HOSTS, N_TRAIN, 0.8, 3000.0,
                   seed_baseline(SPACE, HOSTS, N_TRAIN))


def test_the_table_plan_repeats_first_then_sobol_neighbours_and_layout_checks():
    runs = planned_runs(SPACE, HOSTS, N_TRAIN, Path("/nonexistent"), points=8)
    phases = [r.phase for r in runs]
    assert phases == sorted(phases, key=["repeat", "sobol", "neighbour", "layout"].index)
    assert len({r.key for r in runs}) == len(runs)  # no run twice
    repeats = [r for r in runs if r.phase == "repeat"]
    assert len(repeats) == 6 * 3 and {r.seed for r in repeats} == {0, 1, 2}
    for check in (r for r in runs if r.phase == "layout"):  # same batch, another layout
        own = next(r for r in runs if r.config_id == check.config_id.removesuffix("-layout"))
        assert check.params["per_node_batch"] == own.params["per_node_batch"]
        assert check.params["ranks_per_node"] != own.params["ranks_per_node"]


def test_a_fixed_config_is_looked_up_exactly_and_a_sampled_one_by_its_batch(setting):
    model = setting.model
    base = setting.baseline
    assert model.neighbour(base.params, digest=digest(base.params, base.overrides)) == "baseline"
    some = next(r for r in model.records if r["config_id"] == "sobol005")["params"]
    near = dict(some, peak_lr=some["peak_lr"] * 1.001)
    assert model.neighbour(near) == "sobol005"
    other_batch = dict(near, per_node_batch=16 if some["per_node_batch"] != 16 else 32)
    assert model.neighbour(other_batch) != "sobol005"


def test_the_time_axis_is_the_layouts_own(setting):
    model = setting.model
    some = model.space_configs()[0]
    slow = dict(some, ranks_per_node=1, threads_per_rank=1)
    fast = dict(some, ranks_per_node=1, threads_per_rank=2)
    t_slow, t_fast = model.times(slow), model.times(fast)
    assert t_slow is not None and t_fast is not None and t_slow[-1] > t_fast[-1]
    rng = random.Random(0)
    run_slow, run_fast = model.run(slow, rng), model.run(fast, random.Random(0))
    assert run_slow is not None and run_fast is not None
    assert [a for _, a in run_slow.timeline] == [a for _, a in run_fast.timeline]


def test_replays_run_every_strategy_within_the_budget(setting):
    for name, (sampler, _, _) in STRATEGIES.items():
        if sampler == "gp":
            continue
        trace = replay(setting, name, seed=1)
        assert trace.trials > 3 and trace.points, name
        spent = [p[0] for p in trace.points]
        assert spent == sorted(spent) and spent[-1] - setting.budget_s < 200.0
        assert trace.pick is not None


def test_a_pruned_trial_costs_only_its_time_to_the_prune_point(setting):
    trace = replay(setting, "tpe+sh", seed=3)
    assert trace.pruned >= 1
    times = setting.model.times(setting.model.space_configs()[0])
    assert times is not None
    full = 8.0 + times[-1]
    costs = [b[0] - a[0] for a, b in zip(trace.points, trace.points[1:], strict=False)]
    assert min(costs) < 0.7 * full


def test_the_oracle_is_no_worse_than_any_pick(setting):
    best = oracle(setting)
    assert math.isfinite(best)
    for name in ("random", "tpe"):
        assert replay(setting, name, seed=0).final >= best


def test_leave_one_out_ranks_a_smooth_table_well(setting):
    loo = leave_one_out(setting.model, 0.8)
    assert loo["configs"] >= 30 and loo["spearman"] > 0.3  # the LR decides; 3 dims are noise


def test_spearman_and_bootstrap():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, math.inf], [1, 2, 3]) == pytest.approx(1.0)
    point, lo, hi = bootstrap_ratio([10.0] * 20, [20.0] * 20)
    assert point == lo == hi == pytest.approx(0.5)
    point, lo, hi = bootstrap_ratio([1.0, 2.0, 3.0, 50.0] * 5, [2.0, 4.0, 6.0, 100.0] * 5)
    assert lo <= point <= hi and point == pytest.approx(0.5)


def test_replays_are_reproducible(setting):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    a, b = replay(setting, "tpe+sh", seed=7), replay(setting, "tpe+sh", seed=7)
    assert a.points == b.points
