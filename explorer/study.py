"""Study set-up: the settings of a launch, the sampler and pruner, opening the Optuna study, the
best trial and the budget counters (how many trials count, compute spent, other drivers' trials).
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import sqlalchemy.exc

from explorer.objective import direction
from explorer.record import TrialRecord, records
from explorer.sampler_view import SampledOnly
from explorer.schema import retry_schema_race
from explorer.stale import stale_reason
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError
from mcnn_base.urls import mask_url

__all__ = ["MEMORY", "PRUNERS", "PRUNE_RESOURCE", "StudySettings", "best_record", "best_trial",
           "counted", "make_pruner", "make_sampler", "open_study", "running_elsewhere", "spent_node_s",
           "storage_outage"]


@dataclass
class StudySettings:
    """Everything ``mcnn-explore study launch`` was asked to do."""

    space: Path
    data_root: Path
    study: str
    storage: str
    tracking_uri: str
    workdir: Path
    hosts: list[HostInfo]
    trials: int = 10
    timeout_s: float | None = None
    trial_timeout_s: float | None = None
    target_accuracy: float | None = None
    sampler: str = "tpe"
    pruner: str = "sh"
    seed: int | None = None
    objective: str = "tta_s"
    multi_objective: bool = False
    retry_stale: bool = True
    stale_after_s: float = 300.0
    prepare_timeout_s: float = 6 * 3600.0
    max_infeasible_in_a_row: int = 50
    budget_node_s: float | None = None  # stop starting trials once this much compute is spent
    concurrent_trials: int | None = None  # None: one per host of the pool
    stall_timeout_s: float | None = 600.0  # a job silent this long (no event) is ended FAILED
    mca: dict[str, str] = field(default_factory=dict)  # extra Open MPI --mca settings
    baseline: str | None = None  # "seed" or a config file: run as the study's first trial
    only_queued: bool = False  # run the enqueued trials only (study confirm), sample nothing
    strategy: str = "joint"  # or "layout-first" (explorer.layout_first)
    allow_emulated_bf16: bool = False  # bf16 also on hosts without bf16 hardware
    simulated: bool = False  # a rehearsal (explorer.rehearsal): MLflow runs tagged simulated
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> bool:
        """A layout study: maximise steady-state images/s, no evaluation, no target."""
        return self.objective == "images_per_sec"

    def describe(self) -> dict[str, Any]:
        return {"space": str(self.space), "data_root": str(self.data_root), "study": self.study,
                "storage": mask_url(self.storage), "tracking_uri": mask_url(self.tracking_uri),
                "trials": self.trials, "timeout_s": self.timeout_s,
                "trial_timeout_s": self.trial_timeout_s, "target_accuracy": self.target_accuracy,
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
                "objective": self.objective, "multi_objective": self.multi_objective,
                "baseline": self.baseline, "strategy": self.strategy,
                "hosts": _hosts_text(self.hosts), "simulated": self.simulated}


def _hosts_text(hosts: list[HostInfo]) -> str:
    """The pool in a line: every host, or the first few and a count for a large pool."""
    text = ",".join(f"{h.name}:{h.cores}" for h in hosts[:8])
    return text if len(hosts) <= 8 else f"{text},... ({len(hosts)} hosts)"


def check_sampler(name: str) -> None:
    """Refuse, in one line, a sampler that cannot run here (before anything is written)."""
    if name == "gp" and importlib.util.find_spec("torch") is None:  # GPSampler's first ask
        raise ConfigError("--sampler gp needs torch (Optuna's GPSampler fits its Gaussian process "
                          "with it): pip install torch==2.13.0 (a CPU build), or use --sampler "
                          "tpe")


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The named sampler, shown only the study's sampled trials (:mod:`explorer.sampler_view`)."""
    check_sampler(name)
    if name == "tpe":
        return SampledOnly(optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
    if name == "gp":
        return SampledOnly(optuna.samplers.GPSampler(seed=seed), for_gp=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; expected tpe, gp or random")


PRUNERS = ("sh", "hyperband", "median", "none")
# what a trial's intermediate values are reported against: training seconds on the TTA clock
# (fair between trials whose epochs hold different numbers of updates), or the evaluation's
# index for the median pruner, which compares trials at equal steps
PRUNE_RESOURCE = {"sh": "seconds", "hyperband": "seconds", "none": "seconds",
                  "median": "evaluations"}


MEMORY = ":memory:"  # a storage held in the driver's memory (a rehearsal copies it out at the end)
RUN_SECONDS_ATTR = "prune_run_s"  # the study's full-run length in seconds, for the rungs


class SecondsPruner(optuna.pruners.BasePruner):
    """Successive halving (``sh``) or Hyperband on training seconds, rungs from a full run.

    Optuna's ``"auto"`` resources take 1/100 of the first finished trial's steps, made for
    epochs; with seconds as steps that judges a trial on its first evaluation. This pruner waits
    for a finished trial and takes its length T (whole seconds), stored once on the study so
    every driver of a shared study uses the same rungs. Successive halving then judges a trial
    at T/3 (reduction factor 3: a third of a run, against the trials that got that far);
    Hyperband runs its brackets from T/27 up to T.
    """

    def __init__(self, kind: str, reduction_factor: int = 3) -> None:
        if kind not in ("sh", "hyperband"):
            raise ValueError(f"kind must be sh or hyperband, got {kind!r}")
        self.kind = kind
        self.reduction_factor = reduction_factor
        self._inner: optuna.pruners.BasePruner | None = None

    def _run_seconds(self, study: optuna.Study) -> int | None:
        stored = study.user_attrs.get(RUN_SECONDS_ATTR)
        if stored is not None:
            return int(stored)
        steps = [t.last_step for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.last_step]
        if not steps:
            return None
        study.set_user_attr(RUN_SECONDS_ATTR, min(steps))
        return int(study.user_attrs.get(RUN_SECONDS_ATTR, min(steps)))

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self._inner is None:
            full = self._run_seconds(study)
            if full is None:
                return False
            eta = self.reduction_factor
            if self.kind == "sh":
                self._inner = optuna.pruners.SuccessiveHalvingPruner(
                    min_resource=max(1, full // eta), reduction_factor=eta)
            else:
                self._inner = optuna.pruners.HyperbandPruner(
                    min_resource=max(1, full // eta ** 3), max_resource=max(2, full),
                    reduction_factor=eta)
        return self._inner.prune(study, trial)


def make_pruner(name: str, max_epochs: float) -> optuna.pruners.BasePruner:
    """``sh`` (successive halving on training seconds, the default) or ``hyperband`` (on
    seconds), both :class:`SecondsPruner`; ``median`` (on evaluations); or ``none``."""
    if name in ("sh", "hyperband"):
        return SecondsPruner(name, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}; expected {', '.join(PRUNERS)}")


def open_study(s: StudySettings, *, max_epochs: float,
               attrs: dict[str, Any]) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """Create or load the study (its schema too, on a new database) and set its attributes;
    return it with its storage."""
    directions: list[Literal["minimize", "maximize"]] = (
        ["minimize", "minimize"] if s.multi_objective else
        ["maximize" if direction(s.objective) == "maximize" else "minimize"])
    try:
        storage = optuna.storages.InMemoryStorage() if s.storage == MEMORY else \
            retry_schema_race(lambda: _rdb_storage(s.storage), what="--storage", url=s.storage)
        study = retry_schema_race(lambda: optuna.create_study(
            study_name=s.study, storage=storage, load_if_exists=True, directions=directions,
            sampler=make_sampler(s.sampler, s.seed),
            pruner=make_pruner("none" if s.throughput else s.pruner, max_epochs)),
            what="--storage", url=s.storage)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"study {s.study!r} in {mask_url(s.storage)}: {exc}") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"study {s.study!r} exists with directions "
                          f"{[d.name.lower() for d in study.directions]}; relaunch it with "
                          "the same --objective and --multi-objective settings")
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study, storage


def _rdb_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's storage for ``url``; a database server's connections are checked before use
    (``pool_pre_ping``), so a restarted server costs a retry, not the study."""
    if url.startswith(("postgresql", "mysql")):
        return optuna.storages.get_storage(optuna.storages.RDBStorage(
            url, engine_kwargs={"pool_pre_ping": True}))
    return optuna.storages.get_storage(url)


def storage_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is the storage not answering (a database restart, a dropped or refused
    connection, a locked SQLite file), as opposed to a bug or bad data."""
    cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
    return isinstance(cause, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                              sqlalchemy.exc.PendingRollbackError))


def counted(study: optuna.Study) -> int:
    """Trials that count toward ``--trials``: launched and finished (infeasible samples and
    trials orphaned by a killed driver are recorded but do not use up the budget)."""
    return sum(1 for r in records(study) if r.counts_toward_budget)


def spent_node_s(study: optuna.Study) -> float:
    """Compute the study's trials have used: job wall seconds × nodes, summed."""
    return sum(r.node_s for r in records(study))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best completed, feasible single run (lowest TTA on the Pareto front when
    multi-objective); confirmation repeats are not candidates (their configs are)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("confirm_of") is None and t.values is not None]
    if len(study.directions) == 1:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        return min(done, key=lambda t: (sign * t.values[0], t.number)) if done else None

    def dominated(t: optuna.trial.FrozenTrial) -> bool:  # both objectives are minimised
        return any(all(o <= v for o, v in zip(other.values, t.values, strict=True))
                   and other.values != t.values for other in done)

    front = [t for t in done if not dominated(t)]
    return min(front, key=lambda t: (t.values[0], t.number)) if front else None


def running_elsewhere(study: optuna.Study, stale_after_s: float, now: float) -> int:
    """Live RUNNING trials of other drivers (a stale one does not count)."""
    me = (socket.gethostname(), os.getpid())
    count = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        r = TrialRecord.from_frozen(t)
        if (r.driver.get("host"), r.driver.get("pid")) == me:
            continue
        if stale_reason(t, now=now, stale_after_s=stale_after_s) is None:
            count += 1
    return count


def best_record(study: optuna.Study) -> TrialRecord | None:
    best = best_trial(study)
    return None if best is None else TrialRecord.from_frozen(best)

