from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from explorer.mcnn.config import config_from_dict
from explorer.mcnn.memory import MemoryCalibration, predict_peak
from explorer.mcnn.schedule import parse_piecewise
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError
from search_spaces.plan import build_plan, render_schedule, resources_of, sample_params
from search_spaces.space import load_space
from tests.spaces import write_space

SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces"
TWO_CORES = [HostInfo("localhost", 2)]


def test_schedule_family_renders_a_piecewise_string():
    text = render_schedule({"peak_lr": 0.032, "first_decay_epoch": 5, "decay_every_epochs": 5,
                            "decay_phases": 3, "decay_factor": 0.1}, max_epochs=20)
    assert text == "0.032;5;0.0032;10;0.00032;15;3.2e-05"
    assert parse_piecewise(text).boundaries == (5.0, 10.0, 15.0)


def test_schedule_boundaries_past_the_run_are_dropped():
    text = render_schedule({"peak_lr": 0.01, "first_decay_epoch": 4, "decay_every_epochs": 4,
                            "decay_phases": 4, "decay_factor": 0.5}, max_epochs=10)
    assert text is not None
    assert parse_piecewise(text).boundaries == (4.0, 8.0)


def test_no_schedule_dimension_keeps_the_base_schedule():
    assert render_schedule({"per_worker_batch": 8}, max_epochs=10) is None


def _params(**over):
    params = {"peak_lr": 0.02, "warmup_epochs": 0.5, "first_decay_epoch": 5.0,
              "decay_factor": 0.2, "per_worker_batch": 8, "ranks_per_node": 2,
              "threads_per_rank": 1, "binding": "core"}
    params.update(over)
    return params


def test_plan_builds_a_valid_config_resources_and_derived_values(tmp_path):
    space = load_space(SHIPPED / "tiny.yaml")
    plan = build_plan(space, _params(), data_root=tmp_path, n_train=160, hosts=TWO_CORES)
    assert plan.feasible and plan.reason == ""
    cfg = config_from_dict(plan.config)
    assert cfg.per_worker_batch == 8 and cfg.intra_op_threads == 1
    assert cfg.schedule.warmup_epochs == 0.5
    assert cfg.schedule.piecewise == plan.derived["piecewise"] == "0.02;5;0.004;7.5;0.0008"
    assert cfg.layout is not None and cfg.layout.ranks_per_node == 2
    assert plan.derived == {"global_batch": 16, "world_size": 2, "nodes": 1,
                            "updates_per_epoch": 10, "piecewise": "0.02;5;0.004;7.5;0.0008",
                            "lr_scale": 1.0, "hosts": "localhost", "per_node_batch": 16}
    assert plan.resources is not None
    assert plan.resources.world_size == 2 and plan.resources.binding == "core"
    assert plan.resources.env["OMP_NUM_THREADS"] == "1"


@pytest.mark.parametrize(("over", "n_train", "key", "text"), [
    ({"ranks_per_node": 2, "threads_per_rank": 2}, 160, "cores", "2×2 = 4 > 2 cores"),
    ({"per_worker_batch": 16}, 100, "updates_per_epoch", "100 images // global batch 32 = 3 < "
                                                         "minimum 4"),
    ({"per_worker_batch": 64}, 10_000, "global_batch", "global batch = 64×2 = 128 > cap 64"),
])
def test_each_feasibility_rule_names_its_numbers(tmp_path, over, n_train, key, text):
    space = load_space(SHIPPED / "tiny.yaml")
    plan = build_plan(space, _params(**over), data_root=tmp_path, n_train=n_train,
                      hosts=TWO_CORES)
    assert not plan.feasible
    assert plan.constraints[key] > 0
    assert [k for k, v in plan.constraints.items() if v > 0] == [key]
    assert text in plan.reason


def test_more_nodes_than_hosts_is_infeasible_and_has_no_resources(tmp_path):
    space = load_space(SHIPPED / "seed_bbbc021.yaml")
    plan = build_plan(space, {"nodes": 3, "ranks_per_node": 1, "threads_per_rank": 1,
                              "per_worker_batch": 4}, data_root=tmp_path, n_train=100_000,
                      hosts=[HostInfo("n1", 8), HostInfo("n2", 8)])
    assert plan.constraints["hosts"] == 1 and plan.resources is None
    assert "nodes = 3 > 2 available hosts" in plan.reason


def test_thread_env_and_linear_scaling(tmp_path):
    space = load_space(SHIPPED / "seed_bbbc021.yaml")
    params = {"nodes": 2, "ranks_per_node": 2, "threads_per_rank": 4, "per_worker_batch": 32,
              "linear_scaling": True, "kmp_blocktime": 0, "kmp_affinity": "disabled",
              "inter_op_threads": 2, "precision": "mixed_bfloat16"}
    plan = build_plan(space, params, data_root=tmp_path, n_train=100_000,
                      hosts=[HostInfo("n1", 8), HostInfo("n2", 8), HostInfo("n3", 8)])
    assert plan.feasible, plan.reason
    assert plan.resources is not None and plan.resources.hosts == ("n1", "n2")
    assert dict(plan.resources.env) == {"OMP_NUM_THREADS": "4", "KMP_BLOCKTIME": "0",
                                        "KMP_AFFINITY": "disabled"}
    assert plan.derived["global_batch"] == 128 and plan.derived["lr_scale"] == 0.5
    assert plan.config["precision"] == "mixed_bfloat16" and plan.config["inter_op_threads"] == 2


def test_resources_are_read_from_the_validated_layout(tmp_path):
    space = load_space(SHIPPED / "tiny.yaml")
    plan = build_plan(space, _params(), data_root=tmp_path, n_train=160, hosts=TWO_CORES,
                      overrides={"layout": {"env": {"KMP_BLOCKTIME": "1"}}})
    layout = config_from_dict(plan.config).layout
    assert layout is not None and plan.resources == resources_of(layout)
    assert dict(plan.resources.env) == {"OMP_NUM_THREADS": "1", "KMP_BLOCKTIME": "1"}


def test_overrides_win_and_a_bad_base_is_a_config_error(tmp_path):
    space = load_space(SHIPPED / "tiny.yaml")
    plan = build_plan(space, _params(), data_root=tmp_path, n_train=160, hosts=TWO_CORES,
                      overrides={"target_accuracy": 0.7, "max_epochs": 3})
    assert plan.config["target_accuracy"] == 0.7 and plan.config["max_epochs"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {per_worker_batch: -1}\ndimensions: {peak_lr: {float: [0.01, 0.1]}}\n")
    with pytest.raises(ConfigError, match="per_worker_batch"):
        build_plan(load_space(bad), {"peak_lr": 0.02}, data_root=tmp_path, n_train=100,
                   hosts=TWO_CORES)


def test_sample_params_asks_optuna_for_every_dimension():
    space = load_space(SHIPPED / "seed_bbbc021.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    params = sample_params(space, trial)
    assert set(params) == set(space.dimensions)
    assert 0.004 <= params["peak_lr"] <= 0.064
    assert params["binding"] in ("none", "core", "socket")
    assert isinstance(params["nodes"], int)


def test_per_node_batch_splits_over_the_ranks_and_keeps_the_global_batch(tmp_path):
    path = write_space(tmp_path / "s.yaml", ranks=(1, 2, 4), batches=(8,))
    text = path.read_text().replace("per_worker_batch:", "per_node_batch:")
    path.write_text(text.replace("choices: [8]", "choices: [8, 12]"))
    space = load_space(path)
    hosts = [HostInfo("h1", 8), HostInfo("h2", 8)]

    def plan(ranks: int, per_node: int):
        return build_plan(space, {"peak_lr": 0.02, "per_node_batch": per_node,
                                  "ranks_per_node": ranks, "threads_per_rank": 1,
                                  "binding": "none"},
                          data_root=tmp_path, n_train=400, hosts=hosts)

    for ranks in (1, 2, 4):
        p = plan(ranks, 8)
        assert p.feasible and p.config["per_worker_batch"] == 8 // ranks
        assert p.derived["global_batch"] == 8 and p.derived["per_node_batch"] == 8
        assert p.constraints["per_node_batch"] == 0
    odd = plan(4, 12 + 2)  # 14 images over 4 ranks
    assert not odd.feasible and odd.constraints["per_node_batch"] > 0
    assert "per_node_batch 14 is not divisible by ranks_per_node 4" in odd.reason
    assert not plan(4, 2).feasible  # fewer images than ranks


def test_a_space_may_not_sample_both_batch_dimensions(tmp_path):
    path = write_space(tmp_path / "s.yaml")
    path.write_text(path.read_text().replace(
        "  per_worker_batch:", "  per_node_batch: {choices: [16]}\n  per_worker_batch:"))
    with pytest.raises(ConfigError, match=r"per_node_batch and per_worker_batch are both "
                                          r"sampled; expected one of them"):
        load_space(path)


def _precision_space(tmp_path: Path) -> Path:
    path = write_space(tmp_path / "bf16.yaml", ranks=(1,))
    doc = yaml.safe_load(path.read_text())
    doc["dimensions"]["precision"] = {"choices": ["float32", "mixed_bfloat16",
                                                  "float32_bf16math"]}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("isa", "allow", "feasible"), [
    (("avx512f",), False, False),                       # AVX-512F only: bf16 emulated
    (("avx512f",), True, True),                         # --allow-emulated-bf16
    (("avx512f", "avx512_bf16"), False, True),          # AVX512_BF16 (no AMX)
    (("avx512f", "amx_bf16", "amx_tile"), False, True),  # AMX
    (None, False, True),                                # flags not read: cannot tell
])
def test_bf16_is_infeasible_on_a_host_without_bf16_hardware_unless_allowed(tmp_path, isa, allow,
                                                                          feasible):
    space = load_space(_precision_space(tmp_path))
    hosts = [HostInfo("node7", 2, isa=isa)]
    params = {"peak_lr": 0.02, "per_worker_batch": 8, "ranks_per_node": 1,
              "threads_per_rank": 1, "binding": "none"}
    bf16 = build_plan(space, {**params, "precision": "mixed_bfloat16"}, data_root=tmp_path,
                      n_train=160, hosts=hosts, allow_emulated_bf16=allow)
    fp32 = build_plan(space, {**params, "precision": "float32"}, data_root=tmp_path,
                      n_train=160, hosts=hosts)
    assert fp32.feasible and set(fp32.constraints) == set(bf16.constraints)  # same keys
    assert bf16.feasible is feasible
    if not feasible:
        assert bf16.constraints["bf16_hardware"] > 0
        assert bf16.reason == ("mixed_bfloat16 on node7: no bf16 hardware (the CPU has neither "
                               "avx512_bf16 nor amx_bf16), so bf16 is emulated there and runs "
                               "slower than float32; pass --allow-emulated-bf16 to try it "
                               "anyway")


@pytest.mark.parametrize(("isa", "allow", "feasible"), [
    (("avx512f",), False, False),
    (("avx512f", "avx512_bf16"), False, False),  # bf16 without AMX: oneDNN's bf16 math is AMX's
    (("avx512f", "avx512_bf16"), True, True),
    (("avx512f", "amx_bf16", "amx_tile"), False, True),
    (None, False, True),
])
def test_float32_with_bf16_math_needs_amx(tmp_path, isa, allow, feasible):
    space = load_space(_precision_space(tmp_path))
    plan = build_plan(space, {"peak_lr": 0.02, "per_worker_batch": 8, "ranks_per_node": 1,
                              "threads_per_rank": 1, "binding": "none",
                              "precision": "float32_bf16math"}, data_root=tmp_path,
                      n_train=160, hosts=[HostInfo("node7", 2, isa=isa)],
                      allow_emulated_bf16=allow)
    assert plan.feasible is feasible
    if not feasible:
        assert plan.reason.startswith("float32_bf16math on node7: no AMX (amx_bf16)")


def test_a_space_without_precision_has_no_bf16_constraint(tmp_path):
    space = load_space(SHIPPED / "tiny.yaml")
    plan = build_plan(space, _params(), data_root=tmp_path, n_train=160,
                      hosts=[HostInfo("h", 2, isa=("avx512f",))])
    assert "bf16_hardware" not in plan.constraints


CALIBRATED = MemoryCalibration(runtime_mib=600.0, activation_factor=2.0, source="test")


@pytest.mark.parametrize(("memory_gib", "feasible"), [(16.0, False), (2048.0, True),
                                                      (None, True)])
def test_a_layout_that_does_not_fit_the_nodes_memory_is_refused_with_its_numbers(
        tmp_path, memory_gib, feasible):
    space = load_space(SHIPPED / "tiny.yaml")
    hosts = [HostInfo("node3", 2, memory_gib=memory_gib)]
    plan = build_plan(space, _params(per_worker_batch=32, binding="none"), data_root=tmp_path,
                      n_train=1600, hosts=hosts, memory=CALIBRATED,
                      overrides={"data": {"image_size": [1024, 1280]}})
    assert plan.feasible is feasible and "memory" in plan.constraints
    if feasible:
        return
    per_rank = predict_peak(image_size=(1024, 1280), per_rank_batch=32, precision="float32",
                            n_train=1600, n_val=400, world=2, calibration=CALIBRATED)
    need = 2 * per_rank.peak_gib
    assert plan.constraints["memory"] == pytest.approx(need - 0.9 * 16.0)  # GiB
    assert plan.reason == (
        f"memory: 2 rank(s) × {per_rank.peak_gib:.1f} GiB predicted peak per rank (batch 32 at "
        f"1024×1280, float32; {per_rank.breakdown()}) = {need:.1f} GiB > 14.4 GiB usable (90% "
        "of 16.0 GiB) on node3")


def test_the_memory_rule_reads_the_pools_host_with_the_least_memory(tmp_path):
    space = load_space(SHIPPED / "tiny.yaml")
    hosts = [HostInfo("big", 2, memory_gib=512.0), HostInfo("small", 2, memory_gib=16.0)]
    # a 1-node trial: judged by the smallest host, since it may be placed on any free one
    plan = build_plan(space, _params(per_worker_batch=32, binding="none", ranks_per_node=1),
                      data_root=tmp_path, n_train=1600, hosts=hosts, memory=CALIBRATED,
                      overrides={"data": {"image_size": [1024, 1280]}})
    assert [k for k, v in plan.constraints.items() if v > 0] == ["memory"], plan.constraints
    assert plan.reason.startswith("memory: 1 rank(s)") and plan.reason.endswith("on small")


def test_every_plan_has_the_memory_constraint_even_uncalibrated(tmp_path):
    space = load_space(SHIPPED / "tiny.yaml")
    plan = build_plan(space, _params(), data_root=tmp_path, n_train=160,
                      hosts=[HostInfo("h", 2, memory_gib=1.0)], memory=None)
    assert "memory" in plan.constraints
