"""Sampled values → one trial's plan: a training config, its resources and its feasibility.

:func:`sample_params` asks an Optuna trial (anything with ``suggest_float/int/categorical``) for
every dimension of a space; :func:`build_plan` is pure and turns those values into

* a training-config dict (validated by :class:`~explorer.mcnn.config.TrainConfig`): the space's
  ``base`` under the sampled values, each written where the dimension registry
  (:mod:`search_spaces.dimensions`) says; the LR schedule is always a tf_cnn_benchmarks piecewise
  string, rendered from the schedule family (:func:`render_schedule`);
* :class:`~launchers.base.Resources` (hosts, ranks/threads per node, binding, thread env), read
  from the validated config's ``layout``;
* the derived values (global batch, world size, updates per epoch, piecewise string);
* constraint values, one per feasibility rule (:mod:`search_spaces.feasibility`), feasible when
  ``<= 0`` (Optuna's convention): ``cores``, ``hosts``, ``updates_per_epoch``, ``global_batch``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from explorer.mcnn.config import BF16_MATH, config_from_dict
from explorer.mcnn.memory import MemoryCalibration, default_calibration, predict_peak
from explorer.mcnn.schedule import parse_piecewise
from launchers.base import Resources
from search_spaces.dimensions import render_schedule, resolve, sampled_config
from search_spaces.feasibility import Verdict, check_bf16, check_memory, trial_verdicts

if TYPE_CHECKING:
    from explorer.mcnn.config import LayoutConfig, TrainConfig
    from launchers.hosts import HostInfo
    from search_spaces.space import Dimension, SearchSpace

__all__ = ["TrialPlan", "build_plan", "deep_merge", "place", "render_schedule", "resources_of",
           "sample_params"]


class Suggester(Protocol):
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def sample_params(space: SearchSpace, trial: Suggester) -> dict[str, Any]:
    """Ask ``trial`` for a value of every dimension of ``space`` (in file order)."""
    return {name: _suggest(dim, trial) for name, dim in space.dimensions.items()}


def _suggest(dim: Dimension, trial: Suggester) -> Any:
    if dim.kind == "categorical":
        return trial.suggest_categorical(dim.name, list(dim.choices))
    assert dim.low is not None and dim.high is not None
    if dim.kind == "int":
        step = int(dim.step) if dim.step else 1
        return trial.suggest_int(dim.name, int(dim.low), int(dim.high), step=step, log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step, log=dim.log)


@dataclass(frozen=True)
class TrialPlan:
    """Everything the driver needs to launch (or refuse) one trial."""

    params: dict[str, Any]
    config: dict[str, Any]
    resources: Resources | None  # None when the layout cannot exist (e.g. more nodes than hosts)
    derived: dict[str, Any]
    constraints: dict[str, float]
    reasons: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``over``, merging nested mappings (neither is modified)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_plan(space: SearchSpace, params: dict[str, Any], *, data_root: Path, n_train: int,
               hosts: Sequence[HostInfo], overrides: dict[str, Any] | None = None,
               allow_emulated_bf16: bool = False,
               memory: MemoryCalibration | None = None) -> TrialPlan:
    """Turn sampled ``params`` into a validated config, resources and constraint values.

    Args:
        space: the search space (its ``base`` and ``constraints`` apply).
        params: one value per dimension, as from :func:`sample_params`.
        data_root: the BBBC021 tree every trial trains on.
        n_train: training images of the split (for updates per epoch).
        hosts: the host pool; a trial with ``nodes = k`` runs on its first ``k`` hosts.
        overrides: config values that win over both ``base`` and samples (e.g. the target).
        allow_emulated_bf16: let ``mixed_bfloat16`` run on hosts whose CPU has no bf16
            hardware, and ``float32_bf16math`` on hosts without AMX (otherwise such a trial is
            infeasible).
        memory: the memory model's calibration (default: the one ``bench.memory`` measured,
            if any); with it, a trial whose ranks do not fit a host's memory is infeasible.

    Raises:
        ConfigError: the merged config is invalid (a bad ``base`` in the space file).
    """
    if not hosts:
        raise ValueError("hosts must hold at least one host")
    p = dict(params)
    base = deep_merge(space.base, {"data": {"root": str(data_root)}})
    cfg = deep_merge(base, sampled_config(p, base, [h.name for h in hosts]))
    if overrides:
        cfg = deep_merge(cfg, overrides)
    validated = config_from_dict(cfg, f"trial config of space {space.name!r}")
    layout = validated.layout
    assert layout is not None  # sampled_config always writes the layout
    nodes = int(resolve("nodes", p, base))
    chosen = list(hosts[:nodes])  # as in layout.hosts, unless nodes exceed the pool
    ranks = layout.ranks_per_node
    # the per-node rule in every trial of a space that samples it (samplers need the same
    # constraints for all trials); a fixed trial given a per-worker batch passes it
    per_node = (int(p.get("per_node_batch", validated.per_worker_batch * ranks))
                if "per_node_batch" in space.dimensions else None)
    # the bf16 rule in every trial of a space that samples the precision (or sets bf16)
    bf16 = (check_bf16(validated.precision,
                       [h.name for h in chosen if h.bf16_hardware is False],
                       allow_emulated=allow_emulated_bf16,
                       without_amx=[h.name for h in chosen if h.amx_hardware is False])
            if "precision" in space.dimensions or validated.precision in BF16_MATH
            else None)
    verdicts = trial_verdicts(nodes=nodes, ranks=ranks, threads=layout.threads_per_rank,
                              per_worker_batch=validated.per_worker_batch,
                              cores_per_node=min(h.cores for h in chosen),
                              available_hosts=len(hosts), n_train=n_train,
                              limits=space.constraints, per_node_batch=per_node, bf16=bf16,
                              memory=_memory_verdict(validated, hosts, nodes * ranks, n_train,
                                                     memory or default_calibration()))
    constraints = {name: v.value for name, v in verdicts.items()}
    reasons = [v.reason for v in verdicts.values() if not v.feasible]
    world = nodes * ranks
    global_batch = validated.per_worker_batch * world
    derived = {
        "global_batch": global_batch,
        "world_size": world,
        "nodes": nodes,
        "updates_per_epoch": n_train // global_batch,
        "piecewise": parse_piecewise(validated.schedule.piecewise).render(),
        "lr_scale": (global_batch / validated.schedule.reference_batch
                     if validated.schedule.linear_scaling else 1.0),
        "hosts": ",".join(h.name for h in chosen),
        "per_node_batch": validated.per_worker_batch * ranks,
    }
    resources = resources_of(layout) if verdicts["hosts"].feasible else None
    return TrialPlan(params=p, config=validated.to_dict(), resources=resources, derived=derived,
                     constraints=constraints, reasons=reasons)


def _memory_verdict(cfg: TrainConfig, pool: Sequence[HostInfo], world: int, n_train: int,
                    calibration: MemoryCalibration | None) -> Verdict:
    """The memory rule on the pool's host with the least known memory (the trial may be placed
    on any free slice of the pool). The validation images are estimated from the split's
    ``val_fraction`` (the planner knows only the training ones); they matter only for small
    splits, which the pipeline caches in memory. Every trial has the rule (0 while the model is
    uncalibrated): a sampler needs the same constraints on all of a study's trials."""
    if calibration is None:
        return check_memory(0, None, None, None, "")
    known = [h for h in pool if h.memory_gib is not None]
    host = min(known, key=lambda h: h.memory_gib or 0.0) if known else None
    data = cfg.data
    n_val = round(n_train * data.split.val_fraction / (1.0 - data.split.val_fraction))
    assert cfg.layout is not None
    estimate = predict_peak(image_size=data.image_size, input_size=data.model_input_size,
                            per_rank_batch=cfg.per_worker_batch, precision=cfg.precision,
                            n_train=n_train, n_val=n_val, world=world, calibration=calibration,
                            weight_average=cfg.optimizer.ema_epochs is not None)
    h, w = data.model_input_size
    what = f"batch {cfg.per_worker_batch} at {h}×{w}, {cfg.precision}"
    return check_memory(cfg.layout.ranks_per_node, estimate, host.name if host else None,
                        host.memory_gib if host else None, what)


def resources_of(layout: LayoutConfig) -> Resources:
    """The launcher's :class:`~launchers.base.Resources` of a validated ``layout:`` section."""
    return Resources(hosts=layout.hosts, ranks_per_node=layout.ranks_per_node,
                     threads_per_rank=layout.threads_per_rank, binding=layout.binding,
                     env=dict(layout.env))


def place(plan: TrialPlan, hosts: Sequence[HostInfo]) -> TrialPlan:
    """The same plan on a given slice of the host pool (its config, resources and params agree).

    Raises:
        ValueError: the plan is infeasible or ``hosts`` is not the size it needs.
    """
    if plan.resources is None or len(hosts) != plan.resources.nodes:
        raise ValueError(f"cannot place a plan needing {plan.derived.get('nodes')} node(s) on "
                         f"{len(hosts)} host(s)")
    names = [h.name for h in hosts]
    config = deep_merge(plan.config, {"layout": {"hosts": names}})
    resources = dataclasses.replace(plan.resources, hosts=tuple(names))
    return dataclasses.replace(plan, config=config, resources=resources,
                               derived={**plan.derived, "hosts": ",".join(names)})

