"""Plain records of a study (each trial's :class:`explorer.record.TrialRecord` plus its MLflow
per-epoch curve) that every figure reads.

Figures are built in two steps: a ``*_data`` function turns a :class:`StudyRecord` into plain
lists and dicts (what tests check), and a ``*_figure`` function draws them with plotly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from explorer.record import TrialRecord, median_images_per_sec

__all__ = ["StudyRecord", "TrialRecord", "study_record"]

# "epoch" (epochs trained at each evaluation) is logged since evaluations may come mid-epoch;
# runs without it keep the step as their epoch
_CURVE_KEYS = ("val_accuracy", "elapsed_s", "images_per_sec", "train_loss", "lr", "epoch")


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
        record = TrialRecord.from_frozen(t)
        record.curve = _curve(client, record.mlflow_run_id)
        if record.median_images_per_sec is None:  # a trial recorded before that attribute
            record.median_images_per_sec = median_images_per_sec(
                [r["images_per_sec"] for r in record.curve if "images_per_sec" in r])
        trials.append(record)
    return StudyRecord(name=study.study_name,
                       directions=[d.name.lower() for d in study.directions],
                       target_accuracy=study.user_attrs.get("target_accuracy"),
                       trials=trials, attrs=dict(study.user_attrs))
