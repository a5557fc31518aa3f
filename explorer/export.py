"""Best-trial export: a validated training config, the ``mpirun`` command, or a SLURM script.

The exported config carries the trial's ``layout`` (hosts, ranks and threads per node, binding,
thread env), so ``mcnn-explore train --config best.yaml`` replays it through the same launcher, and
the command forms are rendered by the same argv builders the study used.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import optuna
import yaml

from explorer import preflight
from explorer.confirm import best_group
from explorer.mcnn.config import TrainConfig, config_from_dict
from explorer.record import TrialRecord, records
from explorer.study import best_trial
from launchers.base import Resources
from launchers.mpirun import build_mpirun_argv, train_command
from launchers.slurm import render_sbatch
from mcnn_base.errors import ConfigError
from mcnn_base.urls import mask_url
from search_spaces import plan

__all__ = ["FORMATS", "best_config", "load_study", "render_mpirun", "render_sbatch_script",
           "render_yaml"]

FORMATS = ("yaml", "mpirun", "sbatch")


def load_study(name: str, storage: str) -> optuna.Study:
    """Open an existing study; a missing storage file, an unreachable database or a missing study
    name is a clear error (the URL's password masked)."""
    if storage.startswith("sqlite:///"):
        path = Path(storage[len("sqlite:///"):])
        if not path.is_file():
            raise ConfigError(f"no Optuna storage at {str(path)!r} (from --storage {storage!r}); "
                              "pass the storage URL the study was launched with")
    preflight.check_storage(storage)  # through the module: tests replace it there
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage=storage)
        raise ConfigError(f"no study named {name!r} in {mask_url(storage)}; it holds "
                          f"{', '.join(map(repr, names)) or 'no study'}") from None


def best_config(study: optuna.Study) -> tuple[TrialRecord, TrainConfig]:
    """The best trial and its validated config (no events path, no injected fault).

    Raises:
        ConfigError: the study has no completed, feasible trial.
    """
    chosen = best_group(records(study), str(study.user_attrs.get("objective", "tta_s")))
    frozen = best_trial(study)
    best = (chosen.root if chosen is not None else
            None if frozen is None else TrialRecord.from_frozen(frozen))
    if best is None or not best.config:
        states: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            states[t.state.name] = states.get(t.state.name, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trials"
        raise ConfigError(f"study {study.study_name!r} has no completed feasible trial to export "
                          f"({summary}); run more trials with 'mcnn-explore study launch'")
    raw = dict(best.config)
    raw.pop("events", None)
    raw.pop("fault", None)
    cfg = config_from_dict(raw, f"trial {best.number} of study {study.study_name!r}")
    return best, cfg


def _header(study: optuna.Study, best: TrialRecord) -> list[str]:
    tta = best.tta_s
    reached = f"TTA {tta:.1f}s" if tta is not None else "target NOT reached"
    lines = [f"best trial {best.number} of study {study.study_name!r}: {reached}, best val "
             f"accuracy {best.best_val_accuracy or 0.0:.3f}"]
    objective = str(study.user_attrs.get("objective", "tta_s"))
    chosen = best_group(records(study), objective)
    if chosen is not None and chosen.root.number == best.number:
        lines.append(f"confirmed ({objective}): {chosen.describe()}")
    elif objective in ("tta_s", "tta_wall_s", "tta_interp_s"):
        lines.append("unconfirmed: a single run; 'mcnn-explore study confirm' reruns the top "
                     "configs with new seeds and picks by median TTA")
    derived: dict[str, Any] = best.derived
    if derived:
        lines.append(f"world size {derived.get('world_size')}, global batch "
                     f"{derived.get('global_batch')}, {derived.get('updates_per_epoch')} updates/"
                     f"epoch, schedule {derived.get('piecewise')}")
    return lines


def render_yaml(study: optuna.Study) -> str:
    best, cfg = best_config(study)
    head = "".join(f"# {line}\n" for line in _header(study, best))
    return head + "# replay: mcnn-explore train --config THIS_FILE\n" + yaml.safe_dump(
        cfg.to_dict(), sort_keys=False)


def resources_of(cfg: TrainConfig) -> Resources:
    """The resources of an exported config: its ``layout`` (defaults without one)."""
    return Resources() if cfg.layout is None else plan.resources_of(cfg.layout)


def _thread_env(res: Resources) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(res.threads_per_rank), **res.env}


def render_mpirun(study: optuna.Study, config_path: Path) -> str:
    """A shell script: the env exports and the exact ``mpirun`` argv of the best layout."""
    best, cfg = best_config(study)
    res = resources_of(cfg)
    argv = build_mpirun_argv(train_command(config_path.resolve(), Path("events.jsonl")), res,
                             is_root=os.geteuid() == 0)
    lines = ["#!/bin/sh", *(f"# {line}" for line in _header(study, best)),
             *(f"export {k}={shlex.quote(v)}" for k, v in sorted(_thread_env(res).items())),
             "MCNN_LAUNCH_TIME=$(date +%s.%N); export MCNN_LAUNCH_TIME  # start-up clock",
             "exec " + shlex.join(argv)]
    recorded = best.argv
    if recorded:
        lines.insert(len(_header(study, best)) + 1,
                     "# as launched by the study: " + shlex.join(recorded))
    return "\n".join(lines) + "\n"


def render_sbatch_script(study: optuna.Study, config_path: Path) -> str:
    """A SLURM batch script for the best layout (``srun`` with the same binding and env)."""
    best, cfg = best_config(study)
    res = resources_of(cfg)
    workdir = config_path.resolve().parent
    script = render_sbatch(train_command(config_path.resolve(), workdir / "events.jsonl"), res,
                           job_name=re.sub(r"[^A-Za-z0-9._-]", "_", f"mcnn-{study.study_name}")[:60],
                           workdir=workdir)
    head = "".join(f"# {line}\n" for line in _header(study, best))
    first, _, rest = script.partition("\n")
    return f"{first}\n{head}{rest}"
