"""Baselines: the seed's run mapped onto a pool, and a user's own config file."""

from __future__ import annotations

import pytest
import yaml

from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError
from search_spaces.baseline import (
    SEED_SCHEDULE,
    base_differences,
    file_baseline,
    load_baseline,
    seed_baseline,
)
from search_spaces.plan import build_plan
from search_spaces.space import load_space
from tests.spaces import write_space


def _space(tmp_path, min_updates=2, linear=False):
    path = write_space(tmp_path / "s.yaml", ranks=(1, 2), batches=(8, 16),
                       base={"schedule": {"warmup_epochs": 0.5, "linear_scaling": linear}})
    text = path.read_text().replace("min_updates_per_epoch: 2",
                                    f"min_updates_per_epoch: {min_updates}")
    path.write_text(text.replace("max_global_batch: 64", "max_global_batch: 2048"))
    return load_space(path)


def test_the_seed_maps_onto_the_pool_by_the_readme_rule(tmp_path):
    space = _space(tmp_path)
    small = seed_baseline(space, [HostInfo("a", 2)], n_train=1000)
    assert small.params == {"nodes": 1, "ranks_per_node": 2, "threads_per_rank": 1,
                            "binding": "core", "per_node_batch": 32}
    assert small.overrides["schedule"]["piecewise"] == SEED_SCHEDULE
    xeon = seed_baseline(space, [HostInfo("n1", 40), HostInfo("n2", 40)], n_train=10_000)
    assert (xeon.params["ranks_per_node"], xeon.params["threads_per_rank"]) == (4, 10)
    # fewer images: the batch per node is lowered just enough for the minimum updates
    lowered = seed_baseline(_space(tmp_path, min_updates=20), [HostInfo("a", 2)], n_train=410)
    assert lowered.params["per_node_batch"] == 20  # 410 // 20 = 20 updates of 20 images
    plan = build_plan(_space(tmp_path, min_updates=20), lowered.params, data_root=tmp_path,
                      n_train=410, hosts=[HostInfo("a", 2)], overrides=lowered.overrides)
    assert plan.feasible and plan.config["per_worker_batch"] == 10
    assert plan.config["schedule"]["piecewise"] == SEED_SCHEDULE


def test_the_seed_refuses_data_too_small_for_the_minimum_updates(tmp_path):
    with pytest.raises(ConfigError, match=r"--baseline seed: 30 training images leave fewer "
                                          r"than 20 updates per epoch"):
        seed_baseline(_space(tmp_path, min_updates=20), [HostInfo("a", 2)], n_train=30)


def test_a_baseline_file_keeps_its_values_and_layout(tmp_path):
    cfg = {"data": {"root": "/elsewhere", "image_size": [64, 80]}, "per_worker_batch": 16,
           "schedule": {"piecewise": "0.02;3;0.002"}, "max_epochs": 6, "target_accuracy": 0.3,
           "layout": {"hosts": ["x"], "ranks_per_node": 1, "threads_per_rank": 2,
                      "binding": "none"}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    b = load_baseline(str(path), _space(tmp_path), [HostInfo("a", 2)], n_train=100)
    assert b.params == {"nodes": 1, "ranks_per_node": 1, "threads_per_rank": 2,
                        "binding": "none", "per_worker_batch": 16}
    assert b.overrides["schedule"]["piecewise"] == "0.02;3;0.002"
    assert "target_accuracy" not in b.overrides and "root" not in b.overrides["data"]


def test_a_missing_or_invalid_baseline_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--baseline '.*nope.yaml': no such file"):
        file_baseline(tmp_path / "nope.yaml", [HostInfo("a", 2)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("per_worker_batch: -3\n")
    with pytest.raises(ConfigError) as err:
        file_baseline(bad, [HostInfo("a", 2)])
    assert "bad.yaml" in str(err.value) and "\n" not in str(err.value)


def test_a_file_baseline_says_where_it_differs_from_the_spaces_base(tmp_path):
    path = write_space(tmp_path / "s.yaml", ranks=(1, 2), batches=(8, 16),
                       base={"optimizer": {"ema_epochs": 0.5}, "data": {"image_size": [48, 64]},
                             "target_accuracy": 0.7})
    space = load_space(path)
    mine = tmp_path / "mine.yaml"  # the same image size, no moving average, its own target
    mine.write_text(yaml.safe_dump({"data": {"root": "/x", "image_size": [48, 64]},
                                    "target_accuracy": 0.9}))
    differs = base_differences(file_baseline(mine, [HostInfo("a", 2)]), space)
    # the config's defaults where the file is silent; the target is the study's, not compared
    assert "optimizer.ema_epochs None (base 0.5)" in differs
    assert "max_epochs 20.0 (base 2)" in differs and not any("target" in d for d in differs)
    assert not any(d.startswith("data.") for d in differs)
    same = {k: v for k, v in space.base.items() if k != "target_accuracy"}
    same["data"] = {**same["data"], "root": "/x"}  # the study's data replaces it
    mine.write_text(yaml.safe_dump(same))
    assert base_differences(file_baseline(mine, [HostInfo("a", 2)]), space) == []


def test_a_key_the_space_samples_is_not_called_a_difference(tmp_path):
    path = write_space(tmp_path / "s.yaml", batches=(8,),
                       base={"optimizer": {"ema_epochs": 0.5},
                             "schedule": {"warmup_epochs": 0.5, "piecewise": "0.01;1;0.001"}})
    doc = yaml.safe_load(path.read_text())
    doc["dimensions"]["ema_epochs"] = {"choices": [0.5, 1.0]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    mine = tmp_path / "mine.yaml"  # no moving average, its own schedule and warm-up
    mine.write_text(yaml.safe_dump({"data": {"root": "/x"},
                                    "schedule": {"piecewise": "0.02;3;0.002"}}))
    differs = base_differences(file_baseline(mine, [HostInfo("a", 2)]), load_space(path))
    # ema_epochs and the piecewise string (peak_lr) are sampled; the warm-up is the base's
    assert not any(d.startswith(("optimizer.ema_epochs", "schedule.piecewise")) for d in differs)
    assert any(d.startswith("schedule.warmup_epochs") for d in differs)
