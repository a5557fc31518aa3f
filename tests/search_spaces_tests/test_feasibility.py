"""The feasibility rules: one definition, the reasons build_plan and preflight have always given."""

from __future__ import annotations

import pytest

from explorer.preflight import layout_problem
from launchers.hosts import HostInfo
from search_spaces.feasibility import (
    Verdict,
    check_cores,
    check_global_batch,
    check_hosts,
    check_updates_per_epoch,
    smallest_verdicts,
    trial_verdicts,
)
from search_spaces.space import Constraints, Dimension, SearchSpace


@pytest.mark.parametrize(("verdict", "value", "reason"), [
    (check_cores(2, 2, 2), 2.0,
     "ranks_per_node × threads_per_rank = 2×2 = 4 > 2 cores per node"),
    (check_cores(2, 2, 2, smallest=True), 2.0,
     "ranks_per_node × threads_per_rank is at least 2×2 = 4, but the largest host has 2 cores"),
    (check_hosts(3, 2), 1.0, "nodes = 3 > 2 available hosts"),
    (check_hosts(3, 2, smallest=True), 1.0, "nodes is at least 3, but 2 host(s) are available"),
    (check_updates_per_epoch(100, 32, 4), 1.0,
     "updates per epoch = 100 images // global batch 32 = 3 < minimum 4"),
    (check_global_batch(64, 2, 64), 64.0, "global batch = 64×2 = 128 > cap 64"),
    (check_global_batch(64, 2, 64, smallest=True), 64.0,
     "the global batch is at least 64×2 = 128, above the space's max_global_batch 64"),
])
def test_each_rule_gives_its_value_and_reason(verdict, value, reason):
    assert verdict == Verdict(value, reason) and not verdict.feasible


@pytest.mark.parametrize("verdict", [
    check_cores(2, 1, 2), check_hosts(2, 2), check_updates_per_epoch(128, 32, 4),
    check_global_batch(32, 2, 64), check_global_batch(32, 2, 64, smallest=True),
])
def test_a_rule_that_holds_has_no_reason(verdict):
    assert verdict.feasible and verdict.reason == "" and verdict.value <= 0


def test_trial_verdicts_are_the_four_constraints_in_order():
    verdicts = trial_verdicts(nodes=3, ranks=2, threads=2, per_worker_batch=16, cores_per_node=2,
                              available_hosts=2, n_train=1000,
                              limits=Constraints(min_updates_per_epoch=20, max_global_batch=64))
    assert {k: v.value for k, v in verdicts.items()} == {
        "cores": 2.0, "hosts": 1.0, "updates_per_epoch": 10.0, "global_batch": 32.0}
    assert verdicts["updates_per_epoch"].reason == (
        "updates per epoch = 1000 images // global batch 96 = 10 < minimum 20")


def test_smallest_verdicts_check_hosts_then_cores_then_batch():
    verdicts = smallest_verdicts(nodes=1, ranks=1, threads=1, per_worker_batch=8,
                                 largest_cores=2, available_hosts=1, cap=64)
    assert list(verdicts) == ["hosts", "cores", "global_batch"]
    assert all(v.feasible for v in verdicts.values())


def _space(base=None, cap=64, **dims):
    dimensions = {n: Dimension(n, "categorical", choices=tuple(c)) for n, c in dims.items()}
    return SearchSpace("s", dimensions, base=base or {},
                       constraints=Constraints(max_global_batch=cap))


TWO = [HostInfo("a", 2), HostInfo("b", 4)]


@pytest.mark.parametrize(("space", "problem"), [
    (_space(nodes=[3, 4]), "nodes is at least 3, but 2 host(s) are available"),
    (_space(ranks_per_node=[8, 16], threads_per_rank=[2]),
     "ranks_per_node × threads_per_rank is at least 8×2 = 16, but the largest host has 4 cores"),
    (_space(base={"layout": {"ranks_per_node": 4, "threads_per_rank": 2}}),
     "ranks_per_node × threads_per_rank is at least 4×2 = 8, but the largest host has 4 cores"),
    (_space(per_worker_batch=[512], nodes=[2], ranks_per_node=[1]),
     "the global batch is at least 512×2 = 1024, above the space's max_global_batch 64"),
    (_space(base={"per_worker_batch": 128}), "the global batch is at least 128×1 = 128, above "
                                             "the space's max_global_batch 64"),
    (_space(nodes=[1, 2], ranks_per_node=[2, 1], per_worker_batch=[8]), None),
])
def test_preflight_names_the_first_rule_the_smallest_sample_breaks(space, problem):
    assert layout_problem(space, TWO) == problem
