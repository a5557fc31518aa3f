"""The dimension registry: every entry writes where it says, converted as it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.mcnn.config import config_from_dict
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError
from search_spaces.dimensions import DIMENSIONS, Dim, Like, Member, resolve, sampled_config
from search_spaces.plan import build_plan, resources_of
from search_spaces.space import Dimension, SearchSpace, load_space

POOL = [HostInfo("n1", 8), HostInfo("n2", 8), HostInfo("n3", 8)]
ONE_DIM = SearchSpace("one", {"nodes": Dimension("nodes", "int", 1, 3)},
                      base={"max_epochs": 10})

# name -> (sampled value, config path, value in the validated config); one row per registry entry
CASES = {
    "peak_lr": (0.02, ("schedule", "piecewise"), "0.02;5;0.002;7.5;0.0002"),
    "first_decay_epoch": (4.0, ("schedule", "piecewise"), "0.01;4;0.001;6.5;0.0001"),
    "decay_every_epochs": (3.0, ("schedule", "piecewise"), "0.01;5;0.001;8;0.0001"),
    "decay_phases": (1, ("schedule", "piecewise"), "0.01;5;0.001"),
    "decay_factor": (0.5, ("schedule", "piecewise"), "0.01;5;0.005;7.5;0.0025"),
    "warmup_epochs": (0.12345, ("schedule", "warmup_epochs"), 0.123),
    "linear_scaling": (1, ("schedule", "linear_scaling"), True),
    "per_worker_batch": (16.0, ("per_worker_batch",), 16),
    "per_node_batch": (32.0, ("per_worker_batch",), 32),  # one rank per node by default
    "momentum": (0.5, ("optimizer", "momentum"), 0.5),
    "nesterov": (True, ("optimizer", "nesterov"), True),
    "ema_epochs": (0.5, ("optimizer", "ema_epochs"), 0.5),
    "precision": ("mixed_bfloat16", ("precision",), "mixed_bfloat16"),
    "inter_op_threads": (2.0, ("inter_op_threads",), 2),
    "nodes": (2, ("layout", "hosts"), ["n1", "n2"]),
    "ranks_per_node": (4, ("layout", "ranks_per_node"), 4),
    "threads_per_rank": (2, ("layout", "threads_per_rank"), 2),
    "binding": ("socket", ("layout", "binding"), "socket"),
    "omp_num_threads": (3.0, ("layout", "env", "OMP_NUM_THREADS"), "3"),
    "kmp_blocktime": (0, ("layout", "env", "KMP_BLOCKTIME"), "0"),
    "kmp_affinity": ("disabled", ("layout", "env", "KMP_AFFINITY"), "disabled"),
}


def _at(cfg, path):
    for key in path:
        cfg = cfg[key]
    return cfg


def test_every_registry_entry_has_a_case():
    assert set(CASES) == set(DIMENSIONS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_dimension_lands_at_its_path(tmp_path, name):
    value, path, expected = CASES[name]
    plan = build_plan(ONE_DIM, {name: value}, data_root=tmp_path, n_train=10_000, hosts=POOL)
    assert _at(plan.config, path) == expected
    entry = DIMENSIONS[name]
    if isinstance(entry, Dim):
        assert path in entry.paths
    layout = config_from_dict(plan.config).layout
    assert plan.resources is not None and layout is not None
    assert plan.resources == resources_of(layout)


def test_layout_is_written_in_full_from_the_base_when_not_sampled(tmp_path):
    space = SearchSpace("s", {}, base={"layout": {"ranks_per_node": 2, "threads_per_rank": 3,
                                                  "binding": "none",
                                                  "env": {"FOO": 1, "OMP_NUM_THREADS": "9"}}})
    cfg = sampled_config({}, space.base, ["a", "b"])
    assert cfg == {"intra_op_threads": 3,
                   "layout": {"hosts": ["a"], "ranks_per_node": 2, "threads_per_rank": 3,
                              "binding": "none", "env": {"FOO": "1", "OMP_NUM_THREADS": "3"}}}
    plan = build_plan(space, {}, data_root=tmp_path, n_train=1000, hosts=POOL)
    assert plan.resources is not None
    assert list(plan.resources.env.items()) == [("FOO", "1"), ("OMP_NUM_THREADS", "3")]


def test_thread_env_order_follows_the_registry():
    cfg = sampled_config({"kmp_affinity": "disabled", "kmp_blocktime": 1}, {}, ["a"])
    assert list(cfg["layout"]["env"]) == ["OMP_NUM_THREADS", "KMP_BLOCKTIME", "KMP_AFFINITY"]


def test_unsampled_config_dimensions_leave_the_base_alone(tmp_path):
    assert set(sampled_config({}, {}, ["a"])) == {"intra_op_threads", "layout"}
    space = SearchSpace("s", {}, base={"optimizer": {"momentum": 0.5},
                                       "precision": "mixed_bfloat16"})
    plan = build_plan(space, {}, data_root=tmp_path, n_train=1000, hosts=POOL)
    assert plan.config["optimizer"]["momentum"] == 0.5
    assert plan.config["precision"] == "mixed_bfloat16"


def test_fallbacks_refer_to_earlier_plain_dimensions():
    names = list(DIMENSIONS)
    for i, (name, entry) in enumerate(DIMENSIONS.items()):
        if isinstance(entry, Dim) and isinstance(entry.fallback, Like):
            target = entry.fallback.name
            assert isinstance(DIMENSIONS[target], Dim), name
            assert names.index(target) < i, name


def test_schedule_members_are_one_group():
    members = [n for n, e in DIMENSIONS.items() if isinstance(e, Member)]
    assert members == ["peak_lr", "first_decay_epoch", "decay_every_epochs", "decay_phases",
                       "decay_factor"]
    with pytest.raises(TypeError, match="schedule family"):
        resolve("peak_lr", {"peak_lr": 0.1}, {})


def test_space_accepts_exactly_the_registry(tmp_path):
    good = tmp_path / "good.yaml"
    # every name but per_node_batch, which may not be sampled with per_worker_batch
    names = [n for n in DIMENSIONS if n != "per_node_batch"]
    good.write_text("dimensions:\n" + "".join(f"  {n}: {{choices: [1]}}\n" for n in names))
    assert set(load_space(good).dimensions) == set(names)
    good.write_text("dimensions:\n  per_node_batch: {choices: [32]}\n")
    assert set(load_space(good).dimensions) == {"per_node_batch"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("dimensions:\n  no_such_knob: {float: [0.0, 0.1]}\n")
    with pytest.raises(ConfigError) as err:
        load_space(bad)
    assert str(err.value) == (
        f"{bad}:2: dimensions.no_such_knob: unknown dimension 'no_such_knob'; expected one of "
        f"{', '.join(sorted(DIMENSIONS))}")
    assert ("binding, decay_every_epochs, decay_factor, decay_phases, ema_epochs, "
            "first_decay_epoch") in str(err.value)


def test_shipped_spaces_only_use_registered_names():
    shipped = Path(__file__).resolve().parents[2] / "search_spaces"
    for path in shipped.glob("*.yaml"):
        assert set(load_space(path).dimensions) <= set(DIMENSIONS)
