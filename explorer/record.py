"""One typed record per trial, and its one mapping to Optuna user attributes and to MLflow.

Between stages a trial lives in Optuna as user attributes; everything that reads it (the loop,
stale recovery, export, ``study status``, the dashboards, the benchmarks) reads it through
:meth:`TrialRecord.from_frozen`, and everything that writes it goes through :func:`set_attrs`,
which only accepts the names declared here. The outcome states and their Optuna and MLflow
counterparts live in :class:`Outcome`; the final metrics a trial's MLflow run gets are
:data:`FINAL_METRICS`.
"""

from __future__ import annotations

import dataclasses
import enum
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna

__all__ = ["ATTR_NAMES", "FINAL_METRICS", "Outcome", "TrialRecord", "enqueue",
           "live_trial", "median_images_per_sec", "records", "set_attrs"]


class Outcome(enum.StrEnum):
    """What became of a trial, and how Optuna and MLflow are told."""

    WAITING = "WAITING"  # enqueued (e.g. a stale trial's retry), not yet asked
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    PRUNED = "PRUNED"
    FAILED = "FAILED"
    # never launched: told PRUNED (with positive constraint values) so that pruners' start-up
    # counts and the best trial ignore it
    INFEASIBLE = "INFEASIBLE"
    # a throughput measurement (layout-first stage 1): told PRUNED, never a best trial
    MEASURED = "MEASURED"

    @property
    def optuna_state(self) -> optuna.trial.TrialState:
        return _OPTUNA[self]

    @property
    def mlflow_status(self) -> str:
        return _MLFLOW[self]

    @classmethod
    def of(cls, frozen: optuna.trial.FrozenTrial) -> Outcome:
        """The recorded outcome, else one read from Optuna's state (e.g. a run that predates
        the record, or a trial told by another tool)."""
        recorded = frozen.user_attrs.get("state")
        if recorded in cls.__members__:
            return cls[str(recorded)]
        return _FROM_OPTUNA.get(frozen.state, cls.FAILED)


_OPTUNA = {Outcome.WAITING: optuna.trial.TrialState.WAITING,
           Outcome.RUNNING: optuna.trial.TrialState.RUNNING,
           Outcome.COMPLETED: optuna.trial.TrialState.COMPLETE,
           Outcome.PRUNED: optuna.trial.TrialState.PRUNED,
           Outcome.FAILED: optuna.trial.TrialState.FAIL,
           Outcome.INFEASIBLE: optuna.trial.TrialState.PRUNED,
           Outcome.MEASURED: optuna.trial.TrialState.PRUNED}
_MLFLOW = {Outcome.WAITING: "SCHEDULED", Outcome.RUNNING: "RUNNING",
           Outcome.COMPLETED: "FINISHED", Outcome.PRUNED: "KILLED", Outcome.FAILED: "FAILED",
           Outcome.INFEASIBLE: "FINISHED", Outcome.MEASURED: "FINISHED"}
_FROM_OPTUNA = {optuna.trial.TrialState.RUNNING: Outcome.RUNNING,
                optuna.trial.TrialState.WAITING: Outcome.WAITING,
                optuna.trial.TrialState.COMPLETE: Outcome.COMPLETED,
                optuna.trial.TrialState.PRUNED: Outcome.PRUNED,
                optuna.trial.TrialState.FAIL: Outcome.FAILED}

# the final figures of a finished trial: user attributes in Optuna, metrics in MLflow
FINAL_METRICS = ("tta_s", "tta_interp_s", "startup_s", "tta_wall_s", "best_val_accuracy",
                 "median_images_per_sec", "node_hours", "wall_s", "epochs")


@dataclass
class TrialRecord:
    """Everything the toolkit knows about one trial (a view of an Optuna trial)."""

    number: int
    state: Outcome
    reason: str = ""
    values: list[float] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, Any] = field(default_factory=dict)  # global batch, world size, hosts, ...
    config: dict[str, Any] = field(default_factory=dict)  # the validated training config
    # final figures (FINAL_METRICS)
    tta_s: float | None = None
    tta_interp_s: float | None = None  # interpolated crossing (explorer.objective), not MLPerf's
    startup_s: float | None = None
    tta_wall_s: float | None = None
    best_val_accuracy: float | None = None
    median_images_per_sec: float | None = None
    node_hours: float | None = None
    wall_s: float | None = None
    epochs: float | None = None
    # bookkeeping
    run_name: str | None = None
    mlflow_run_id: str | None = None
    driver: dict[str, Any] = field(default_factory=dict)  # host, pid, start_ticks
    heartbeat: float | None = None  # unix seconds
    job: dict[str, Any] = field(default_factory=dict)  # pid (session), workdir, host
    argv: list[str] | None = None
    log_tail: str | None = None
    stale: bool = False
    retry_of: int | None = None
    # a fixed trial (not sampled): its name, registry values and config overrides
    fixed: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False  # the study's baseline trial (fixed)
    confirm_of: int | None = None  # a repeat of trial N with a new seed (study confirm)
    stage: int | None = None  # layout-first: 1 = a layout measurement, 2 = a searched trial
    start: float | None = None  # unix seconds
    end: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)  # per epoch (dashboards fill it)

    @property
    def reached(self) -> bool:
        return self.tta_s is not None

    @property
    def nodes(self) -> int:
        return int(self.derived.get("nodes", 1))

    @property
    def hosts(self) -> list[str]:
        """The host slice the trial ran on."""
        return [h for h in str(self.derived.get("hosts", "")).split(",") if h]

    @property
    def layout_text(self) -> str:
        """The layout as a person reads it: ``2 nodes × 4 ranks × 10 threads, bind core``."""
        layout = self.config.get("layout") or {}
        if not layout:
            return "-"
        nodes = len(layout.get("hosts") or []) or self.nodes

        def count(n: int, what: str) -> str:
            return f"{n} {what}{'' if n == 1 else 's'}"

        return (f"{count(nodes, 'node')} × {count(int(layout.get('ranks_per_node', 1)), 'rank')}"
                f" × {count(int(layout.get('threads_per_rank', 1)), 'thread')}, bind "
                f"{layout.get('binding', 'core')}")

    @property
    def node_s(self) -> float:
        """Compute used: job wall seconds × nodes."""
        return float(self.wall_s or 0.0) * self.nodes

    @property
    def lost(self) -> bool:
        """Ended by its driver's death or interruption, not by its own run (rerun it)."""
        return self.state is Outcome.FAILED and (
            self.stale or self.reason.startswith("interrupted"))

    @property
    def counts_toward_budget(self) -> bool:
        """Launched and finished (an infeasible sample, a stale trial or a confirmation repeat
        does not use up ``--trials``)."""
        return (self.state not in (Outcome.WAITING, Outcome.RUNNING, Outcome.INFEASIBLE,
                                   Outcome.MEASURED)
                and not self.stale and self.confirm_of is None and self.stage != 1)

    @classmethod
    def from_frozen(cls, t: optuna.trial.FrozenTrial) -> TrialRecord:
        ua = t.user_attrs
        known = {k: ua[k] for k in ATTR_NAMES if k in ua and k not in ("state",)}
        for key in ("derived", "config", "driver", "job", "fixed"):
            if not isinstance(known.get(key), dict):
                known.pop(key, None)
        if "reason" in known:
            known["reason"] = str(known["reason"])
        return cls(number=t.number, state=Outcome.of(t),
                   values=list(t.values) if t.values is not None else None,
                   params=dict(t.params),
                   start=t.datetime_start.timestamp() if t.datetime_start else None,
                   end=t.datetime_complete.timestamp() if t.datetime_complete else None,
                   **known)


# the record's fields that are stored as Optuna user attributes (same names)
ATTR_NAMES = tuple(f.name for f in dataclasses.fields(TrialRecord)
                   if f.name not in ("number", "values", "params", "start", "end", "curve"))


def _as_attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Record fields as user attributes: declared names only, outcomes as their names."""
    for key in values:
        if key not in ATTR_NAMES:
            raise KeyError(f"{key!r} is not a TrialRecord attribute")
    return {k: v.value if isinstance(v, Outcome) else v for k, v in values.items()}


def set_attrs(trial: optuna.Trial, **values: Any) -> None:
    """Write record fields to a live trial's user attributes (only declared names)."""
    for key, value in _as_attrs(values).items():
        trial.set_user_attr(key, value)


def enqueue(study: optuna.Study, params: dict[str, Any] | None = None, **attrs: Any) -> None:
    """Queue a trial (a retry, a fixed trial) with record fields as its first attributes."""
    study.enqueue_trial(params or {}, user_attrs=_as_attrs(attrs), skip_if_exists=False)


def median_images_per_sec(epoch_rates: list[float]) -> float | None:
    """Steady-state throughput: the median training images/s over the epochs after the first
    (which pays for graph tracing); the one epoch's rate when there is only one."""
    rates = epoch_rates[1:] if len(epoch_rates) > 1 else epoch_rates
    return float(statistics.median(rates)) if rates else None


def live_trial(study: optuna.Study, storage: optuna.storages.BaseStorage,
               number: int) -> optuna.Trial:
    """The writable trial ``number`` of ``study`` (e.g. a RUNNING trial of a dead driver)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                                     number))


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of ``study`` as a record."""
    return [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)]

