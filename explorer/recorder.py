"""The recorder: the one writer of a study's trials to Optuna (tell, user attributes) and MLflow
(a parent run per study, a child run per trial), including the back-fill after an MLflow outage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml

from explorer.objective import TrialOutcome, objective_values
from explorer.record import FINAL_METRICS, Outcome, TrialRecord, records, set_attrs
from explorer.speedup import speedup
from explorer.study import StudySettings, best_record
from explorer.tracking import SIMULATED_TAG, RunRecorder, Tracker
from launchers.base import JobHandle
from search_spaces.plan import TrialPlan

__all__ = ["Recorder", "run_name"]


def run_name(number: int, plan: TrialPlan) -> str:
    """A run name that reads well in the MLflow UI: ``trial-007 np=2x1 bs=16 lr=0.008;2;…``."""
    layout = plan.config.get("layout") or {}
    lr = str(plan.derived.get("piecewise", ""))
    lr = lr if len(lr) <= 24 else lr[:23] + "…"
    nodes = plan.derived.get("nodes", 1)
    where = f"{nodes}n×" if nodes != 1 else ""
    return (f"trial-{number:03d} np={where}{layout.get('ranks_per_node', 1)}x"
            f"{layout.get('threads_per_rank', 1)} bs={plan.derived.get('global_batch')} lr={lr}")


def _told(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether ``trial`` is finished in the storage already (e.g. told by a pass that the storage
    interrupted after the tell, or marked stale by another driver): then it takes no more
    writes (Optuna refuses them)."""
    return study._storage.get_trial(trial._trial_id).state.is_finished()


class Recorder:
    """Writes every trial of one study: Optuna first (the record of truth), MLflow beside it."""

    def __init__(self, settings: StudySettings, tracker: Tracker, parent: RunRecorder,
                 log: Callable[[str], None]) -> None:
        self.s = settings
        self.tracker = tracker
        self.parent = parent
        self.log = log

    @classmethod
    def open(cls, settings: StudySettings, study: optuna.Study,
             log: Callable[[str], None]) -> Recorder:
        """Open the tracking store and the study's parent run (created, or resumed)."""
        tracker = Tracker(settings.tracking_uri, settings.study,
                          artifact_root=settings.workdir / "mlartifacts", warn=log)
        parent, existed = tracker.parent(settings.study)
        if parent.run_id is not None:
            study.set_user_attr("mlflow_parent_run_id", parent.run_id)
        settings_yaml = yaml.safe_dump(settings.describe(), sort_keys=False)
        if settings.simulated:
            parent.set_tags({SIMULATED_TAG: "true"})
        if existed:
            parent.log_text(settings_yaml, f"resumes/study-{int(time.time())}.yaml")
        else:
            parent.log_params({f"study.{k}": v for k, v in settings.describe().items()})
            parent.log_text(settings_yaml, "study.yaml")
            parent.log_files([settings.space])
        return cls(settings, tracker, parent, log)

    # -- one trial --------------------------------------------------------------------------
    def start(self, trial: optuna.Trial, plan: TrialPlan, **attrs: Any) -> RunRecorder:
        """Record an asked and planned trial: its attributes, constraints and MLflow child run."""
        for key, value in plan.constraints.items():
            trial.set_constraint(key, value)
        name = run_name(trial.number, plan)
        fixed = trial.user_attrs.get("fixed")
        if fixed:  # e.g. "trial-000 baseline(seed) np=2x1 ...", "trial-009 confirm(4) np=..."
            ua = trial.user_attrs
            label = (f"baseline({fixed.get('name')})" if ua.get("baseline") else
                     "layout" if ua.get("stage") == 1 else f"confirm({ua.get('confirm_of')})")
            name = name.replace(" ", f" {label} ", 1)
        set_attrs(trial, config=plan.config, derived=plan.derived, run_name=name, **attrs)
        stage = trial.user_attrs.get("stage")
        run = self.tracker.child(self.parent.run_id, name,
                                 {"optuna.trial": trial.number, "mcnn.study": self.s.study,
                                  **({"mcnn.stage": stage} if stage else {}),
                                  **({SIMULATED_TAG: "true"} if self.s.simulated else {})})
        if run.run_id is not None:
            set_attrs(trial, mlflow_run_id=run.run_id)
        run.log_params({**plan.params, **plan.derived})
        run.log_text(yaml.safe_dump(plan.config, sort_keys=False), "config.yaml")
        return run

    def finish(self, study: optuna.Study, trial: optuna.Trial, run: RunRecorder,
               outcome: TrialOutcome, job: JobHandle | None) -> None:
        """Tell Optuna and end the MLflow run with the outcome's figures and artifacts."""
        if _told(study, trial):
            return  # told already: a pass the storage interrupted after the tell, run again
        final = outcome.final_metrics()
        run.log_metrics(final)
        run.set_tags({"reason": outcome.reason})
        set_attrs(trial, **final, state=outcome.state, reason=outcome.reason)
        if job is not None:
            tail = job.log_tail(60)
            run.log_text(tail, "log_tail.txt")
            if outcome.state not in (Outcome.COMPLETED, Outcome.PRUNED):
                set_attrs(trial, log_tail=tail[-2000:])
            run.log_files([job.log_path.parent / "argv.txt", job.log_path.parent / "config.yaml"])
            if job.events_path is not None:
                run.log_files([job.events_path])
        run.end(outcome.state)
        if outcome.state is Outcome.COMPLETED:
            study.tell(trial, objective_values(outcome, objective=self.s.objective,
                                               multi_objective=self.s.multi_objective))
        else:
            study.tell(trial, state=outcome.state.optuna_state)
        tta = "-" if outcome.tta_s is None else f"{outcome.tta_s:.1f}s"
        self.log(f"trial {trial.number}: {outcome.state.value} ({outcome.reason}) TTA {tta}, "
                 f"best val acc {outcome.best_val_accuracy:.3f}, {outcome.epochs} epochs, "
                 f"wall {outcome.wall_s:.0f}s")
        if outcome.state is Outcome.FAILED and job is not None:
            self.log("  log tail:\n    " + "\n    ".join(job.log_tail(8).splitlines()))

    def failed_to_start(self, study: optuna.Study, trial: optuna.Trial, run: RunRecorder,
                        reason: str) -> None:
        """A trial whose job could not be started (a launcher error, no free node): FAILED."""
        if _told(study, trial):
            return
        run.set_tags({"reason": reason})
        set_attrs(trial, state=Outcome.FAILED, reason=reason)
        run.end(Outcome.FAILED)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def interrupted(self, study: optuna.Study, trial: optuna.Trial, run: RunRecorder) -> None:
        """The driver was stopped while the trial ran (or waited for nodes)."""
        if _told(study, trial):
            return
        run.set_tags({"reason": "interrupted"})
        run.end(Outcome.FAILED)
        set_attrs(trial, reason="interrupted: the driver was stopped")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def stale(self, record: TrialRecord, reason: str) -> None:
        """End the MLflow run of a trial whose driver died or lost it (a storage outage)."""
        if record.mlflow_run_id:
            rec = self.tracker.recorder(record.mlflow_run_id)
            rec.set_tags({"reason": reason})
            rec.end(Outcome.FAILED)
        self.log(f"trial {record.number}: marked FAILED ({reason})")

    # -- the study --------------------------------------------------------------------------
    def best(self, study: optuna.Study) -> TrialRecord | None:
        """Tag the parent run with the best trial so far; return it."""
        best = best_record(study)
        if best is None or best.values is None:
            return best
        self.parent.set_tags({"best_trial": best.number, "best_run_id": best.mlflow_run_id or "",
                              "best_config": yaml.safe_dump(best.config)})
        self.parent.log_metrics({"best_value": best.values[0], "best_tta_s": best.tta_s},
                                step=best.number)
        found = speedup(records(study), self.s.objective)
        if found is not None:
            self.parent.set_tags({"speedup_vs_baseline": found.describe()})
            self.parent.log_metrics({"speedup_vs_baseline": found.ratio}, step=best.number)
        return best

    def end(self, finished: bool) -> None:
        """End the parent run: FINISHED, or KILLED when the driver was stopped."""
        self.parent.end_status("FINISHED" if finished else "KILLED",
                               state="COMPLETED" if finished else "CANCELLED")

    def backfill(self, study: optuna.Study) -> int:
        """Give every finished trial its complete MLflow child run (after the store was down).

        A trial finished while the store was unavailable has no run, or one that was never
        ended; it is rebuilt from its record (params, derived values, final metrics, reason) and
        its trial folder (per-epoch metrics from ``events.jsonl``, ``config.yaml``,
        ``argv.txt``). Returns the count.
        """
        tracker, parent = self.tracker, self.parent
        if tracker.down is not None or parent.run_id is None:
            return 0
        runs = tracker.trial_runs(parent.run_id)
        filled = 0
        for t in study.get_trials(deepcopy=False):
            if not t.state.is_finished() or tracker.down is not None:
                continue
            run = runs.get(t.number)
            if run is not None and run.data.tags.get("state"):
                continue
            r = TrialRecord.from_frozen(t)
            if run is None:
                rec = tracker.child(parent.run_id, r.run_name or f"trial-{t.number:03d}",
                                    {"optuna.trial": t.number, "mcnn.study": study.study_name,
                                     "mcnn.backfilled": "true"})
                rec.log_params({**r.params, **r.derived})
                if r.config:
                    rec.log_text(yaml.safe_dump(r.config, sort_keys=False), "config.yaml")
            else:
                rec = tracker.recorder(run.info.run_id)
            folder = Path(str(r.job.get("workdir", "")))
            events_path = folder / "events.jsonl"
            if events_path.is_file() and (run is None or not run.data.metrics):
                for line in events_path.read_text(errors="replace").splitlines():
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("event") == "epoch":
                        rec.log_epoch(event)
            if str(folder) not in ("", "."):
                rec.log_files([folder / "config.yaml", folder / "argv.txt", events_path])
            rec.log_metrics({k: getattr(r, k) for k in FINAL_METRICS})
            rec.set_tags({"reason": r.reason or "recorded while MLflow was down"})
            rec.end(r.state)
            if tracker.down is None:
                filled += 1
        if filled:
            self.log(f"back-filled {filled} MLflow run(s) of trials finished while the store "
                     "was unavailable")
        return filled
