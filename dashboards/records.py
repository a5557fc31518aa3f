"""Plain records of a study (Optuna trials + MLflow per-epoch curves) that every figure reads.

Figures are built in two steps: a ``*_data`` function turns a :class:`StudyRecord` into plain
lists and dicts (what tests check), and a ``*_figure`` function draws them with plotly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

__all__ = ["StudyRecord", "TrialRecord", "study_record"]

_CURVE_KEYS = ("val_accuracy", "elapsed_s", "images_per_sec", "train_loss", "lr")


@dataclass
class TrialRecord:
    number: int
    state: str  # COMPLETED | PRUNED | FAILED | INFEASIBLE | RUNNING
    reason: str
    values: list[float] | None
    params: dict[str, Any]
    derived: dict[str, Any]
    config: dict[str, Any]
    tta_s: float | None = None
    startup_s: float | None = None
    best_val_accuracy: float | None = None
    node_hours: float | None = None
    wall_s: float | None = None
    start: float | None = None  # unix seconds
    end: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)  # one row per epoch

    @property
    def reached(self) -> bool:
        return self.tta_s is not None

    @property
    def median_images_per_sec(self) -> float | None:
        """Median training throughput over epochs, skipping the first (graph tracing) if possible."""
        rates = [r["images_per_sec"] for r in self.curve if "images_per_sec" in r]
        rates = rates[1:] if len(rates) > 1 else rates
        if not rates:
            return None
        rates = sorted(rates)
        mid = len(rates) // 2
        return rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2


@dataclass
class StudyRecord:
    name: str
    directions: list[str]
    target_accuracy: float | None
    trials: list[TrialRecord]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    def by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        return counts

    def completed(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == "COMPLETED" and t.values is not None]

    def ranked(self) -> list[TrialRecord]:
        """Completed trials, best objective first."""
        return sorted(self.completed(), key=lambda t: (t.values or [math.inf])[0])

    def best(self) -> TrialRecord | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None


def _state(t: optuna.trial.FrozenTrial) -> str:
    recorded = t.user_attrs.get("state")
    if recorded:
        return str(recorded)
    return {"COMPLETE": "COMPLETED", "FAIL": "FAILED"}.get(t.state.name, t.state.name)


def _curve(client: Any, run_id: str | None) -> list[dict[str, float]]:
    if client is None or not run_id:
        return []
    rows: dict[int, dict[str, float]] = {}
    for key in _CURVE_KEYS:
        try:
            history = client.get_metric_history(run_id, key)
        except Exception:  # a deleted or foreign run must not break the report
            return []
        for m in history:
            rows.setdefault(int(m.step), {"epoch": float(m.step)})[key] = float(m.value)
    return [rows[k] for k in sorted(rows)]


def study_record(study: optuna.Study, client: Any = None) -> StudyRecord:
    """Read every trial of ``study`` and, when an ``MlflowClient`` is given, its epoch curves."""
    trials = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        trials.append(TrialRecord(
            number=t.number, state=_state(t), reason=str(ua.get("reason", "")),
            values=list(t.values) if t.values is not None else None, params=dict(t.params),
            derived=dict(ua.get("derived", {})), config=dict(ua.get("config", {})),
            tta_s=ua.get("tta_s"), startup_s=ua.get("startup_s"),
            best_val_accuracy=ua.get("best_val_accuracy"), node_hours=ua.get("node_hours"),
            wall_s=ua.get("wall_s"),
            start=t.datetime_start.timestamp() if t.datetime_start else None,
            end=t.datetime_complete.timestamp() if t.datetime_complete else None,
            curve=_curve(client, ua.get("mlflow_run_id"))))
    return StudyRecord(name=study.study_name,
                       directions=[d.name.lower() for d in study.directions],
                       target_accuracy=study.user_attrs.get("target_accuracy"),
                       trials=trials, attrs=dict(study.user_attrs))
