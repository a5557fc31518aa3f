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

import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from explorer.errors import ConfigError

__all__ = ["RunRecorder", "Tracker", "mask_url"]

ROLE_TAG = "mcnn.role"
STUDY_TAG = "mcnn.study"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
_MLFLOW_STATUS = {"COMPLETED": "FINISHED", "PRUNED": "KILLED", "CANCELLED": "KILLED",
                  "INFEASIBLE": "FINISHED"}


def mask_url(url: str) -> str:
    """Hide the password of a URL such as ``postgresql://user:secret@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


class RunRecorder:
    """Writes one run: params, per-epoch metrics, final metrics, artifacts, end status."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float | None], step: int = 0) -> None:
        from mlflow.entities import Metric

        ts = _now_ms()
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_epoch(self, event: Mapping[str, Any]) -> None:
        """Log one ``epoch`` event of the job (step = epoch)."""
        self.log_metrics({
            "val_accuracy": event.get("val_accuracy"),
            "train_loss": event.get("train_loss"),
            "images_per_sec": event.get("images_per_sec"),
            "lr": event.get("lr"),
            "train_step": event.get("step"),
            "elapsed_s": event.get("elapsed_s"),
        }, step=int(event.get("epoch", 0)))

    def log_files(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def end(self, state: str) -> None:
        self.set_tags({"state": state})
        self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS.get(state, "FAILED"))


class Tracker:
    """An MLflow tracking store and one experiment in it."""

    def __init__(self, tracking_uri: str, experiment: str,
                 artifact_root: Path | None = None) -> None:
        from mlflow.tracking import MlflowClient

        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/ -]{0,200}$", experiment):
            raise ConfigError(f"experiment/study name {experiment!r}: expected letters, digits, "
                              "'.', '_', '-', '/' or spaces")
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if artifact_root is not None and urlsplit(tracking_uri).scheme in ("sqlite", "file", ""):
                location = (artifact_root.resolve() / experiment.replace("/", "_")).as_uri()
            self.experiment_id = self.client.create_experiment(experiment, location)
        else:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            self.experiment_id = found.experiment_id
        self.experiment = experiment
        # MLflow 3's UI opens GenAI (traces) pages unless told this is a model-training experiment
        self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG,
                                       "custom_model_development")

    def find_parent(self, study: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study}'",
            max_results=1)
        return runs[0].info.run_id if runs else None

    def parent(self, study: str) -> tuple[RunRecorder, bool]:
        """Return the study's parent run (created if missing) and whether it already existed."""
        run_id = self.find_parent(study)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return RunRecorder(self.client, run_id), True
        run = self.client.create_run(self.experiment_id, run_name=study,
                                     tags={ROLE_TAG: "study", STUDY_TAG: study})
        return RunRecorder(self.client, run.info.run_id), False

    def child(self, parent_id: str, name: str, tags: Mapping[str, Any]) -> RunRecorder:
        run = self.client.create_run(
            self.experiment_id, run_name=name,
            tags={PARENT_TAG: parent_id, ROLE_TAG: "trial", **{k: str(v) for k, v in tags.items()}})
        return RunRecorder(self.client, run.info.run_id)

    def run(self, name: str, tags: Mapping[str, Any]) -> RunRecorder:
        """A standalone run (``mcnn-explore train``)."""
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={ROLE_TAG: "train", **{k: str(v) for k, v in tags.items()}})
        return RunRecorder(self.client, run.info.run_id)

    def recorder(self, run_id: str) -> RunRecorder:
        return RunRecorder(self.client, run_id)


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this tracking store."""
    import shlex

    return shlex.join(["mlflow", "ui", "--backend-store-uri", tracking_uri, "--port", "5000"])


__all__ += ["ui_command"]
