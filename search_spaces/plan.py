"""Sampled values → one trial's plan: a training config, its resources and its feasibility.

:func:`sample_params` asks an Optuna trial (anything with ``suggest_float/int/categorical``) for
every dimension of a space; :func:`build_plan` is pure and turns those values into

* a training-config dict (validated by :class:`~explorer.mcnn.config.TrainConfig`), whose LR
  schedule is always a tf_cnn_benchmarks piecewise string, rendered from the schedule family
  ``peak_lr`` / ``first_decay_epoch`` / ``decay_every_epochs`` / ``decay_phases`` /
  ``decay_factor`` (plus ``warmup_epochs``)::

      peak;  first;  peak·f;  first+every;  peak·f²;  ...   (boundaries at or past max_epochs dropped)

* :class:`~launchers.base.Resources` (hosts, ranks/threads per node, binding, thread env);
* the derived values (global batch, world size, updates per epoch, piecewise string);
* constraint values, one per feasibility rule, feasible when ``<= 0`` (Optuna's convention):
  ``cores`` (ranks × threads − cores per node), ``hosts`` (nodes − available hosts),
  ``updates_per_epoch`` (minimum − ⌊train images / global batch⌋) and ``global_batch``
  (global batch − cap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from explorer.mcnn.config import config_from_dict
from explorer.mcnn.schedule import PiecewiseSchedule, parse_piecewise
from launchers.base import Resources
from launchers.hosts import HostInfo
from search_spaces.space import Dimension, SearchSpace

__all__ = ["TrialPlan", "build_plan", "deep_merge", "place", "render_schedule", "sample_params"]

_SCHEDULE_KEYS = ("peak_lr", "first_decay_epoch", "decay_every_epochs", "decay_phases",
                  "decay_factor")


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


def render_schedule(params: dict[str, Any], max_epochs: float) -> str | None:
    """Render the sampled schedule family as a piecewise string (None if nothing was sampled)."""
    if not any(k in params for k in _SCHEDULE_KEYS):
        return None
    peak = float(params.get("peak_lr", 0.01))
    first = float(params.get("first_decay_epoch", max_epochs * 0.5))
    every = float(params.get("decay_every_epochs", max_epochs * 0.25))
    phases = int(params.get("decay_phases", 2))
    factor = float(params.get("decay_factor", 0.1))
    lrs = [_round_sig(peak)]
    boundaries: list[float] = []
    for i in range(phases):
        b = round(first + i * every, 2)
        if b >= max_epochs or (boundaries and b <= boundaries[-1]):
            break
        boundaries.append(b)
        lrs.append(_round_sig(peak * factor ** (i + 1)))
    return PiecewiseSchedule(tuple(lrs), tuple(boundaries)).render()


def _round_sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def build_plan(space: SearchSpace, params: dict[str, Any], *, data_root: Path, n_train: int,
               hosts: Sequence[HostInfo], overrides: dict[str, Any] | None = None) -> TrialPlan:
    """Turn sampled ``params`` into a validated config, resources and constraint values.

    Args:
        space: the search space (its ``base`` and ``constraints`` apply).
        params: one value per dimension, as from :func:`sample_params`.
        data_root: the BBBC021 tree every trial trains on.
        n_train: training images of the split (for updates per epoch).
        hosts: the host pool; a trial with ``nodes = k`` runs on its first ``k`` hosts.
        overrides: config values that win over both ``base`` and samples (e.g. the target).

    Raises:
        ConfigError: the merged config is invalid (a bad ``base`` in the space file).
    """
    if not hosts:
        raise ValueError("hosts must hold at least one host")
    p = dict(params)
    cfg: dict[str, Any] = deep_merge(space.base, {"data": {"root": str(data_root)}})
    max_epochs = float(cfg.get("max_epochs", 20.0))
    sampled: dict[str, Any] = {}
    if "per_worker_batch" in p:
        sampled["per_worker_batch"] = int(p["per_worker_batch"])
    schedule: dict[str, Any] = {}
    piecewise = render_schedule(p, max_epochs)
    if piecewise is not None:
        schedule["piecewise"] = piecewise
    if "warmup_epochs" in p:
        schedule["warmup_epochs"] = round(float(p["warmup_epochs"]), 3)
    if "linear_scaling" in p:
        schedule["linear_scaling"] = bool(p["linear_scaling"])
    if schedule:
        sampled["schedule"] = schedule
    optimizer = {k: p[k] for k in ("momentum", "nesterov") if k in p}
    if optimizer:
        sampled["optimizer"] = optimizer
    if "precision" in p:
        sampled["precision"] = p["precision"]

    base_layout = cfg.get("layout") or {}
    nodes = int(p.get("nodes", 1))
    ranks = int(p.get("ranks_per_node", base_layout.get("ranks_per_node", 1)))
    threads = int(p.get("threads_per_rank", base_layout.get("threads_per_rank", 1)))
    binding = str(p.get("binding", base_layout.get("binding", "core")))
    sampled["intra_op_threads"] = threads
    if "inter_op_threads" in p:
        sampled["inter_op_threads"] = int(p["inter_op_threads"])
    env = {str(k): str(v) for k, v in (base_layout.get("env") or {}).items()}
    env["OMP_NUM_THREADS"] = str(int(p.get("omp_num_threads", threads)))
    if "kmp_blocktime" in p:
        env["KMP_BLOCKTIME"] = str(p["kmp_blocktime"])
    if "kmp_affinity" in p:
        env["KMP_AFFINITY"] = str(p["kmp_affinity"])
    chosen = list(hosts[:nodes])
    sampled["layout"] = {"hosts": [h.name for h in chosen], "ranks_per_node": ranks,
                         "threads_per_rank": threads, "binding": binding, "env": env}
    cfg = deep_merge(cfg, sampled)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    validated = config_from_dict(cfg, f"trial config of space {space.name!r}")

    world = nodes * ranks
    global_batch = validated.per_worker_batch * world
    updates = n_train // global_batch
    cores = min(h.cores for h in chosen)
    limits = space.constraints
    constraints = {
        "cores": float(ranks * threads - cores),
        "hosts": float(nodes - len(hosts)),
        "updates_per_epoch": float(limits.min_updates_per_epoch - updates),
        "global_batch": float(global_batch - limits.max_global_batch),
    }
    reasons = []
    if constraints["cores"] > 0:
        reasons.append(f"ranks_per_node × threads_per_rank = {ranks}×{threads} = "
                       f"{ranks * threads} > {cores} cores per node")
    if constraints["hosts"] > 0:
        reasons.append(f"nodes = {nodes} > {len(hosts)} available hosts")
    if constraints["updates_per_epoch"] > 0:
        reasons.append(f"updates per epoch = {n_train} images // global batch {global_batch} = "
                       f"{updates} < minimum {limits.min_updates_per_epoch}")
    if constraints["global_batch"] > 0:
        reasons.append(f"global batch = {validated.per_worker_batch}×{world} = {global_batch} "
                       f"> cap {limits.max_global_batch}")
    resources = None
    if constraints["hosts"] <= 0:
        resources = Resources(hosts=tuple(h.name for h in chosen), ranks_per_node=ranks,
                              threads_per_rank=threads, binding=binding, env=env)
    derived = {
        "global_batch": global_batch,
        "world_size": world,
        "nodes": nodes,
        "updates_per_epoch": updates,
        "piecewise": parse_piecewise(validated.schedule.piecewise).render(),
        "lr_scale": (global_batch / validated.schedule.reference_batch
                     if validated.schedule.linear_scaling else 1.0),
        "hosts": ",".join(h.name for h in chosen),
    }
    return TrialPlan(params=p, config=validated.to_dict(), resources=resources, derived=derived,
                     constraints=constraints, reasons=reasons)


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

