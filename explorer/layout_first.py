"""``--strategy layout-first``: measure the layouts first, then search convergence on the fastest.

Throughput depends on the layout (ranks, threads, binding, thread environment); convergence on the
global batch, the LR schedule and the precision. A joint search spends trials on both at once. In
one study, layout-first instead runs

* **stage 1**: one short throughput trial (no evaluation, :data:`LAYOUT_EPOCHS` epochs, steady
  images/s) for every layout of the space that fits each candidate batch and precision; recorded
  as ``MEASURED`` (told to Optuna as pruned: never a best trial, never a sampler's data point);
  their node-seconds count against the study's budget, not against ``--trials``;
* **stage 2**: the search proper over the space without its layout dimensions; each trial is
  launched on the fastest stage-1 layout measured for its batch and precision.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from explorer.record import Outcome, TrialRecord
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError
from search_spaces.plan import build_plan
from search_spaces.space import Dimension, SearchSpace

__all__ = ["BATCH_DIMS", "LAYOUT_DIMS", "LAYOUT_EPOCHS", "fastest_layout", "search_space",
           "stage1_trials"]

LAYOUT_DIMS = ("ranks_per_node", "threads_per_rank", "binding", "omp_num_threads",
               "kmp_blocktime", "kmp_affinity", "inter_op_threads")
BATCH_DIMS = ("per_node_batch", "per_worker_batch", "precision")
LAYOUT_EPOCHS = 2.0  # one epoch of warm-up (tracing), one timed


def _values(dim: Dimension) -> list[Any]:
    if dim.kind == "categorical":
        return list(dim.choices)
    if dim.kind == "int":
        assert dim.low is not None and dim.high is not None
        step = int(dim.step or 1)
        return list(range(int(dim.low), int(dim.high) + 1, step))
    raise ConfigError(f"--strategy layout-first measures every layout, so {dim.name} must be a "
                      "list of choices or an int range, not a float range")


def stage1_trials(space: SearchSpace, hosts: Sequence[HostInfo], n_train: int, *,
                  data_root: Path, epochs: float = LAYOUT_EPOCHS,
                  allow_emulated_bf16: bool = False) -> list[dict[str, Any]]:
    """The fixed trials of stage 1: every feasible (layout × batch × precision) of the space.

    Raises:
        ConfigError: the space samples no layout dimension, a float one, or no layout fits.
    """
    names = [n for n in (*LAYOUT_DIMS, *BATCH_DIMS) if n in space.dimensions]
    if not any(n in space.dimensions for n in LAYOUT_DIMS):
        raise ConfigError(f"--strategy layout-first: the space {space.source or space.name} "
                          "samples no layout dimension (ranks_per_node, threads_per_rank, "
                          "binding, ...); use the default joint strategy")
    overrides = {"eval": False, "target_accuracy": None, "max_epochs": epochs}
    trials = []
    for combo in itertools.product(*(_values(space.dimensions[n]) for n in names)):
        params = dict(zip(names, combo, strict=True))
        plan = build_plan(space, params, data_root=data_root, n_train=n_train, hosts=hosts,
                          overrides=overrides, allow_emulated_bf16=allow_emulated_bf16)
        if plan.feasible:
            trials.append({"stage": 1, "fixed": {"name": "layout", "params": params,
                                                 "overrides": overrides}})
    if not trials:
        raise ConfigError(f"--strategy layout-first: no layout of {space.source or space.name} "
                          "fits these hosts")
    return trials


def search_space(space: SearchSpace) -> SearchSpace:
    """Stage 2's space: the same without its layout dimensions."""
    return dataclasses.replace(space, dimensions={
        n: d for n, d in space.dimensions.items() if n not in LAYOUT_DIMS})


def _batch_key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params.get(n) for n in BATCH_DIMS)


def fastest_layout(trials: list[TrialRecord], params: dict[str, Any]) -> dict[str, Any] | None:
    """The layout values of the fastest stage-1 measurement for ``params``' batch and
    precision (None when none of them was measured)."""
    key = _batch_key(params)
    measured = [r for r in trials if r.stage == 1 and r.state is Outcome.MEASURED
                and r.median_images_per_sec and _batch_key(r.fixed.get("params") or {}) == key]
    if not measured:
        return None
    best = max(measured, key=lambda r: (r.median_images_per_sec or 0.0, -r.number))
    fixed = best.fixed.get("params") or {}
    return {n: fixed[n] for n in LAYOUT_DIMS if n in fixed}
