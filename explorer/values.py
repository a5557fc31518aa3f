"""What a trial is planned from: sampled values, or a fixed trial's values.

Most trials are sampled from the space. Fixed trials are queued with their values
(``fixed = {name, params, overrides}``): the baseline (``--baseline``), confirmation repeats
(``study confirm``) and layout measurements (stage 1 of ``--strategy layout-first``). Stage 2 of
layout-first samples the space without its layout and adds the fastest measured layout.
:func:`trial_values` gives the loop the registry values and config overrides to plan, and
:func:`queue_fixed` queues the fixed trials a launch asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from explorer.layout_first import BATCH_DIMS, fastest_layout, search_space, stage1_trials
from explorer.record import enqueue, records, set_attrs
from launchers.hosts import HostInfo
from search_spaces.baseline import Baseline
from search_spaces.plan import deep_merge, sample_params
from search_spaces.space import SearchSpace

__all__ = ["TrialValues", "queue_fixed", "trial_values"]


@dataclass(frozen=True)
class TrialValues:
    params: dict[str, Any]  # registry values (search_spaces.dimensions)
    overrides: dict[str, Any]  # config values over the space's base and the samples
    missing: str | None = None  # why it cannot run although its values are valid


def trial_values(trial: optuna.Trial, study: optuna.Study, space: SearchSpace, *,
                 strategy: str, overrides: dict[str, Any]) -> TrialValues:
    """The values of an asked trial (``overrides``: the study's own, e.g. its target)."""
    fixed = trial.user_attrs.get("fixed")
    if fixed:  # a fixed trial: its values, under the study's rules and target
        values = Baseline.from_dict(fixed)
        # a layout measurement keeps its own settings (no evaluation, no target)
        merged = (deep_merge(overrides, values.overrides)
                  if trial.user_attrs.get("stage") == 1 else
                  deep_merge(values.overrides, overrides))
        return TrialValues(values.params, merged)
    if strategy != "layout-first":
        return TrialValues(sample_params(space, trial), overrides)
    # layout-first stage 2: the fastest layout measured for the sampled batch and precision
    params = sample_params(search_space(space), trial)
    set_attrs(trial, stage=2)
    layout = fastest_layout(records(study), params)
    if layout is None:
        batch = ", ".join(f"{k} {params[k]}" for k in BATCH_DIMS if k in params)
        return TrialValues(params, overrides, f"no layout was measured for {batch} (every "
                                              "stage-1 trial of it failed)")
    return TrialValues({**params, **layout}, overrides)


def queue_fixed(study: optuna.Study, space: SearchSpace, *, baseline: Baseline | None,
                strategy: str, hosts: list[HostInfo], n_train: int, data_root: Path,
                log: Callable[[str], None], allow_emulated_bf16: bool = False) -> None:
    """Queue the baseline (unless one ran, or is queued or running: one that was only
    interrupted, or lost with its driver, runs again) and, for layout-first, stage 1."""
    trials = records(study)
    if baseline is not None and not any(r.baseline and not r.lost for r in trials):
        enqueue(study, baseline=True, fixed=baseline.to_dict())
        log(f"baseline ({baseline.name}) queued as the next trial")
    if strategy == "layout-first" and not any(r.stage == 1 for r in trials):
        stage1 = stage1_trials(space, hosts, n_train, data_root=data_root,
                               allow_emulated_bf16=allow_emulated_bf16)
        for attrs in stage1:
            enqueue(study, **attrs)
        log(f"layout-first: stage 1 measures {len(stage1)} layout(s), then stage 2 searches "
            "on the fastest")
