"""Baselines to beat: a fixed training config run as a study's first trial, under its rules.

A baseline is a :class:`Baseline`: registry values for the layout and batch (written through the
same dimension registry as a sample, see :mod:`search_spaces.dimensions`) plus config overrides
(e.g. the LR schedule), planned by :func:`search_spaces.plan.build_plan` like any trial, so the
same feasibility rules, target and clock apply.

``seed`` is the seed's hand-tuned run, mapped onto the pool by this rule (README, "Baselines"):

* ranks per node = min(4, cores of a node); threads per rank = cores ÷ ranks; binding ``core``;
  one node;
* batch per node = 32, lowered (to a multiple of the ranks) only as far as the space's
  ``min_updates_per_epoch`` requires;
* the seed's piecewise schedule as given, with no warm-up; scaled linearly by global batch ÷ 256
  when the space's base turns ``schedule.linear_scaling`` on.

``FILE`` is the user's own training config (for example one exported by ``study export``): its
values as given, and its layout's ranks, threads and binding (the seed's layout rule where it has
none), on the study's data, target and hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer.mcnn.config import load_config
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError
from search_spaces.dimensions import DIMENSIONS, SCHEDULE_PATH, Dim
from search_spaces.space import SearchSpace

__all__ = ["SEED_NODE_BATCH", "SEED_RANKS", "SEED_SCHEDULE", "Baseline", "base_differences",
           "file_baseline", "load_baseline", "seed_baseline"]

SEED_SCHEDULE = "0.008;2;0.032;5;0.029;10;0.026;15;0.001;20;0.0001"
SEED_RANKS = 4  # workers per node
SEED_NODE_BATCH = 32  # images per node and step
# what a baseline file may not decide: the study's data, clock and faults
_STUDY_OWNED = ("events", "fault", "layout", "target_accuracy")


@dataclass(frozen=True)
class Baseline:
    """A fixed trial: registry values (layout, batch) and training-config overrides."""

    name: str  # "seed" or the file's path
    params: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "overrides": self.overrides}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Baseline:
        return cls(str(doc["name"]), dict(doc.get("params") or {}),
                   dict(doc.get("overrides") or {}))


def _seed_layout(hosts: Sequence[HostInfo]) -> dict[str, Any]:
    cores = min(h.cores for h in hosts)
    ranks = min(SEED_RANKS, cores)
    return {"nodes": 1, "ranks_per_node": ranks, "threads_per_rank": max(1, cores // ranks),
            "binding": "core"}


def seed_baseline(space: SearchSpace, hosts: Sequence[HostInfo], n_train: int) -> Baseline:
    """The seed's run on this pool (the rule in the module doc).

    Raises:
        ConfigError: not even a batch of one image per rank leaves the space's minimum updates
            per epoch.
    """
    layout = _seed_layout(hosts)
    ranks = int(layout["ranks_per_node"])
    need = space.constraints.min_updates_per_epoch
    per_node = SEED_NODE_BATCH
    if n_train // per_node < need:  # lower it only as far as the minimum requires
        per_node = (n_train // need) // ranks * ranks
    if per_node < ranks:
        raise ConfigError(f"--baseline seed: {n_train} training images leave fewer than "
                          f"{need} updates per epoch (the space's min_updates_per_epoch) even "
                          f"at one image per rank ({ranks} ranks); use a larger data set or "
                          "--baseline FILE")
    base_schedule = space.base.get("schedule") or {}
    schedule = {"piecewise": SEED_SCHEDULE, "warmup_epochs": 0.0,
                "linear_scaling": bool(base_schedule.get("linear_scaling", False)),
                "reference_batch": 256}
    return Baseline("seed", {**layout, "per_node_batch": per_node}, {"schedule": schedule})


def file_baseline(path: Path, hosts: Sequence[HostInfo]) -> Baseline:
    """The user's own config: its values, and its layout (the seed's rule where it has none).

    Raises:
        ConfigError: a missing or invalid file (the message names it).
    """
    if not path.is_file():
        raise ConfigError(f"--baseline {str(path)!r}: no such file; expected a training config "
                          "(e.g. from 'mcnn-explore study export --format yaml') or 'seed'")
    try:
        cfg = load_config(path)
    except ConfigError as exc:  # one line: the file, then each problem
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ConfigError(f"--baseline {str(path)!r}: " + "; ".join(lines)) from None
    doc = cfg.to_dict()
    overrides = {k: v for k, v in doc.items() if k not in _STUDY_OWNED}
    overrides["data"] = {k: v for k, v in doc["data"].items() if k not in ("root", "cache_dir")}
    layout = _seed_layout(hosts)
    if cfg.layout is not None:
        layout.update(ranks_per_node=cfg.layout.ranks_per_node,
                      threads_per_rank=cfg.layout.threads_per_rank,
                      binding=cfg.layout.binding, nodes=max(1, len(cfg.layout.hosts)))
    return Baseline(str(path), {**layout, "per_worker_batch": cfg.per_worker_batch}, overrides)


def _leaves(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _sampled_keys(space: SearchSpace) -> set[str]:
    """The config keys the space's dimensions write (a trial's sample replaces the base there)."""
    keys: set[str] = set()
    for name in space.dimensions:
        dim = DIMENSIONS[name]
        paths = dim.paths if isinstance(dim, Dim) else (SCHEDULE_PATH,)
        keys.update(".".join(path) for path in paths)
    return keys


def base_differences(baseline: Baseline, space: SearchSpace) -> list[str]:
    """Where a file baseline runs with other values than the space's base sets for every trial
    (``optimizer.ema_epochs None (base 0.5)``): a file that leaves a key out runs with the
    config's default, not the base's, so it may be evaluated or sized differently from the
    trials. Keys the space samples differ between trials anyway, and the study's own keys (data
    root, target, layout, ...) are not compared."""
    mine = _leaves(baseline.overrides)  # the file's data root and the study's keys are not in it
    sampled = _sampled_keys(space)
    return [f"{key} {mine[key]!r} (base {value!r})" for key, value in _leaves(space.base).items()
            if key in mine and key not in sampled and mine[key] != value]


def load_baseline(spec: str, space: SearchSpace, hosts: Sequence[HostInfo],
                  n_train: int) -> Baseline:
    """``seed`` or a config file's path."""
    if spec == "seed":
        return seed_baseline(space, hosts, n_train)
    return file_baseline(Path(spec), hosts)
