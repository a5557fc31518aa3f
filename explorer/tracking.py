"""MLflow records: one experiment per study, a parent run for the study, a child run per trial.

Only the driver (or ``mcnn-explore train``) writes here; jobs never import MLflow. Everything goes
through :class:`mlflow.tracking.MlflowClient` with explicit run ids, so no global "active run"
state leaks between trials.

Child runs carry: params = every sampled value plus the derived ones (global batch, world size,
piecewise string, updates per epoch); metrics = per-epoch ``val_accuracy``, ``train_loss``,
``images_per_sec``, ``lr`` (step = epoch; ``train_step`` gives the update count at each epoch)
and the final ``tta_s``, ``startup_s``, ``tta_wall_s``, ``best_val_accuracy``, ``node_hours``,
``wall_s``; tag ``state`` (COMPLETED, PRUNED, FAILED, TIMEOUT, INFEASIBLE) and ``reason``;
artifacts = ``config.yaml``, ``argv.txt``, ``events.jsonl`` and ``log_tail.txt``.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from explorer.record import Outcome
from explorer.schema import retry_schema_race
from mcnn_base.errors import ConfigError
from mcnn_base.urls import mask_url, scrub

__all__ = ["SIMULATED_TAG", "TRIALS_VIEW", "RunRecorder", "Tracker", "trials_view_query",
           "ui_command"]

ROLE_TAG = "mcnn.role"
STUDY_TAG = "mcnn.study"
SIMULATED_TAG = "mcnn.simulated"  # a rehearsal's runs (mcnn-explore rehearse)
PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
_ARTIFACT_METHODS = ("log_artifact", "log_text")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


class RunRecorder:
    """Writes one run: params, per-epoch metrics, final metrics, artifacts, end status.

    Every call goes through its :class:`Tracker`'s guard: once the store is unavailable the calls
    are skipped (the driver back-fills the run on the next launch). ``run_id`` is None when the
    run could not even be created.
    """

    def __init__(self, tracker: Tracker, run_id: str | None) -> None:
        self.tracker = tracker
        self.run_id = run_id

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.run_id is None:
            return None
        return self.tracker.guard(method, self.run_id, *args, **kwargs)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(str(k), _param_value(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self._call("log_batch", params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call("log_batch", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float | None], step: int = 0) -> None:
        ts = _now_ms()
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        if batch:
            self._call("log_batch", metrics=batch)

    def log_epoch(self, event: Mapping[str, Any]) -> None:
        """Log one ``epoch`` event of the job: step = the evaluation's number (the epoch when
        the job evaluates once an epoch), with the epochs trained as the ``epoch`` metric."""
        self.log_metrics({
            "epoch": event.get("epoch"),
            "val_accuracy": event.get("val_accuracy"),
            "train_loss": event.get("train_loss"),
            "images_per_sec": event.get("images_per_sec"),
            "lr": event.get("lr"),
            "train_step": event.get("step"),
            "elapsed_s": event.get("elapsed_s"),
        }, step=int(event.get("eval") or event.get("epoch") or 0))

    def log_files(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if path.is_file():
                self._call("log_artifact", str(path))

    def log_text(self, text: str, name: str) -> None:
        self._call("log_text", text, name)

    def end(self, state: Outcome) -> None:
        """End a trial's run: tag ``state`` and the MLflow status that goes with it."""
        self.end_status(state.mlflow_status, state=state.value)

    def end_status(self, status: str, *, state: str) -> None:
        """End the run with an MLflow ``status`` (FINISHED, KILLED, FAILED) and a state tag."""
        self.set_tags({"state": state})
        self._call("set_terminated", status=status)


class Tracker:
    """An MLflow tracking store and one experiment in it, robust to the store going away.

    The first failing call (store unreachable, read-only, disk full, ...) marks the tracker
    ``down`` with the reason and reports it once through ``warn``; later calls are skipped, so a
    broken store never stops a study (Optuna still records every trial).
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None,
                 *, warn: Callable[[str], None] | None = None, attempts: int = 3) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/ -]{0,200}$", experiment):
            raise ConfigError(f"experiment/study name {experiment!r}: expected letters, digits, "
                              "'.', '_', '-', '/' or spaces")
        # a dead HTTP server must not cost MLflow's default minutes of retries per call
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
        self.down: str | None = None
        # SqlAlchemyStore creates a new database's schema here; a lost race with another driver
        # is retried, a schema that cannot be created is one error line (explorer.schema)
        self.client = retry_schema_race(lambda: MlflowClient(tracking_uri=tracking_uri),
                                        what="--tracking-uri", url=tracking_uri)
        self.experiment_id: str | None = None
        for attempt in range(attempts):
            try:
                self.experiment_id = self._experiment(experiment, artifact_root)
                break
            except Exception as exc:  # any store failure: reported below
                # another driver may be creating the experiment right now: try again
                if attempt == attempts - 1:
                    self._fail(exc)
                else:
                    time.sleep(1.0 + random.random() * 2.0)  # jitter

    def _experiment(self, name: str, artifact_root: Path | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = None
            if artifact_root is not None and urlsplit(self.tracking_uri).scheme in ("sqlite",
                                                                                     "file", ""):
                location = (artifact_root.resolve() / name.replace("/", "_")).as_uri()
            try:
                experiment_id = str(self.client.create_experiment(name, location))
            except Exception:  # another driver created it first
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                experiment_id = str(found.experiment_id)
        else:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            experiment_id = str(found.experiment_id)
        # MLflow 3's UI opens GenAI (traces) pages unless told this is a model-training experiment
        self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG,
                                       "custom_model_development")
        return experiment_id

    def _fail(self, exc: BaseException, method: str = "") -> None:
        if self.down is None:
            text = scrub(str(exc).strip(), self.tracking_uri)
            detail = text.splitlines()[0][:300] if text else ""
            self.down = f"{type(exc).__name__}: {detail}"
            what = (f"writing MLflow artifacts of {mask_url(self.tracking_uri)} failed"
                    if method in _ARTIFACT_METHODS else
                    f"the MLflow tracking store {mask_url(self.tracking_uri)} is unavailable")
            self.warn(f"{what} ({self.down}); trials are still recorded in Optuna and the "
                      "missing MLflow records are back-filled on the next `study launch`")

    def guard(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``MlflowClient.<method>``; None (and the tracker marked down) if the store fails."""
        if self.down is not None:
            return None
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except Exception as exc:  # the store failed: record it, go on
            self._fail(exc, method)
            return None

    def _search(self, filter_string: str, max_results: int = 1000) -> list[Any]:
        if self.experiment_id is None:
            return []
        return list(self.guard("search_runs", [self.experiment_id], filter_string=filter_string,
                               max_results=max_results, order_by=["attributes.start_time ASC"])
                    or [])

    def find_parent(self, study: str) -> str | None:
        runs = self._search(f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study}'")
        return runs[0].info.run_id if runs else None

    def parent(self, study: str) -> tuple[RunRecorder, bool]:
        """Return the study's parent run (created if missing) and whether it already existed.

        Two drivers starting together may both create one: the earliest wins and the other
        driver deletes its own.
        """
        run_id = self.find_parent(study)
        if run_id is not None:
            self.guard("update_run", run_id, status="RUNNING")
            return RunRecorder(self, run_id), True
        if self.experiment_id is None:
            return RunRecorder(self, None), False
        run = self.guard("create_run", self.experiment_id, run_name=study,
                         tags={ROLE_TAG: "study", STUDY_TAG: study})
        if run is None:
            return RunRecorder(self, None), False
        winner = self.find_parent(study)
        if winner is not None and winner != run.info.run_id:
            self.guard("delete_run", run.info.run_id)
            self.guard("update_run", winner, status="RUNNING")
            return RunRecorder(self, winner), True
        return RunRecorder(self, run.info.run_id), False

    def child(self, parent_id: str | None, name: str, tags: Mapping[str, Any]) -> RunRecorder:
        if parent_id is None or self.experiment_id is None:
            return RunRecorder(self, None)
        run = self.guard("create_run", self.experiment_id, run_name=name,
                         tags={PARENT_TAG: parent_id, ROLE_TAG: "trial",
                               **{k: str(v) for k, v in tags.items()}})
        return RunRecorder(self, None if run is None else run.info.run_id)

    def trial_runs(self, parent_id: str) -> dict[int, Any]:
        """The child runs of a study's parent run, by Optuna trial number."""
        runs = self._search(f"tags.`{ROLE_TAG}` = 'trial' and tags.`{PARENT_TAG}` = '{parent_id}'",
                            max_results=50_000)
        out: dict[int, Any] = {}
        for run in runs:
            number = run.data.tags.get("optuna.trial")
            if number is not None and number.isdigit():
                out.setdefault(int(number), run)
        return out

    def run(self, name: str, tags: Mapping[str, Any]) -> RunRecorder:
        """A standalone run (``mcnn-explore train``)."""
        if self.experiment_id is None:
            return RunRecorder(self, None)
        run = self.guard("create_run", self.experiment_id, run_name=name,
                         tags={ROLE_TAG: "train", **{k: str(v) for k, v in tags.items()}})
        return RunRecorder(self, None if run is None else run.info.run_id)

    def recorder(self, run_id: str) -> RunRecorder:
        return RunRecorder(self, run_id)


# The view MLflow 3.17's runs page opens on, from its URL: the study's trial runs (flat, not
# under the collapsed parent), sorted by TTA, fastest first. The page honours searchFilter,
# orderByKey, orderByAsc (also startTime, lifecycleFilter, modelVersionFilter, datasetsFilter);
# the visible columns are kept in the browser's local storage, not the URL.
TRIALS_VIEW = {"searchFilter": "tags.`mcnn.role` = 'trial'", "orderByKey": "metrics.`tta_s`",
               "orderByAsc": "true"}


def trials_view_query() -> str:
    return "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in TRIALS_VIEW.items())


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this tracking store."""
    return shlex.join(["mlflow", "ui", "--backend-store-uri", mask_url(tracking_uri), "--port",
                       "5000"])
