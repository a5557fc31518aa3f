"""Real studies: Optuna (sqlite) + MLflow (sqlite, read back with MlflowClient) + mpirun -np 2."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

import explorer.study as study_mod
from explorer.cli import main
from explorer.driver import StudyDriver
from explorer.mcnn.config import load_config
from explorer.progress import ProgressLine
from explorer.study import StudySettings
from launchers import MpirunLauncher, detect_local, session_pids
from tests.conftest import requires_mpi
from tests.spaces import write_space

pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi]

REPO = Path(__file__).resolve().parents[2]


def _space(tmp_path, epochs=3):
    return write_space(tmp_path / "space.yaml", name="two-rank", epochs=epochs,
                       bindings=("none", "core"))


def _urls(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"


def _launch_argv(tmp_path, space, data, trials, study="s", *extra):
    storage, tracking = _urls(tmp_path)
    return ["study", "launch", "--space", str(space), "--data", str(data), "--study", study,
            "--storage", storage, "--tracking-uri", tracking, "--trials", str(trials),
            "--target-accuracy", "0.3", "--trial-timeout", "240", "--seed", "0",
            "--workdir", str(tmp_path / "runs"), *extra]


def _no_process_mentions(text: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                return False
    return True


def test_three_trial_study_records_optuna_mlflow_and_exports_a_replayable_config(
        study_env, synth_tree, capsys):
    tmp = study_env
    assert main(_launch_argv(tmp, _space(tmp), synth_tree, 3, "s", "--pruner", "none",
                             "--baseline", "seed")) == 0
    out = capsys.readouterr().out
    assert "best: trial" in out and "mlflow ui --backend-store-uri" in out
    assert "mcnn-explore study export --study s" in out
    assert "baseline (seed) queued as the next trial" in out
    speedup_line = next(line for line in out.splitlines() if line.startswith("speedup:"))
    assert "baseline (seed)" in speedup_line

    storage, tracking = _urls(tmp)
    study = optuna.load_study(study_name="s", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 3 and all(t.state.name == "COMPLETE" for t in finished)
    # the baseline ran first, as the seed's run mapped onto this 2-core host: 2 ranks × 1
    # thread, 32 images per node, the seed's schedule
    seed = finished[0]
    assert seed.user_attrs["baseline"] is True and seed.params == {}
    assert seed.user_attrs["fixed"]["name"] == "seed"
    assert seed.user_attrs["derived"]["global_batch"] == 32
    assert seed.user_attrs["config"]["schedule"]["piecewise"].startswith("0.008;2;0.032")
    for t in finished:
        acc = t.user_attrs["best_val_accuracy"]
        tta = t.user_attrs["tta_s"]
        assert (t.value == tta) if tta is not None else (t.value == pytest.approx(1e6 * (2 - acc)))

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("s")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mcnn.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["speedup_vs_baseline"] == speedup_line.removeprefix("speedup:").strip()
    assert parent.data.params["study.trials"] == "3"
    assert {c.info.run_id for c in children} >= {parent.data.tags["best_run_id"]}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"study.yaml",
                                                                         "space.yaml"}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["state"] == "COMPLETED"
        baseline = "baseline(seed)" in child.info.run_name
        assert {*([] if baseline else ["peak_lr"]), "binding", "global_batch", "world_size",
                "piecewise", "updates_per_epoch"} <= set(child.data.params)
        assert child.data.params["world_size"] == "2"
        assert child.data.params["global_batch"] == ("32" if baseline else "16")
        assert {"best_val_accuracy", "node_hours", "startup_s", "wall_s"} <= set(
            child.data.metrics)
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        assert len(client.get_metric_history(child.info.run_id, "images_per_sec")) == len(history)
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {
            "config.yaml", "argv.txt", "events.jsonl", "log_tail.txt"}

    # export -> replay through the same launcher, recorded as one MLflow run
    assert main(["study", "export", "--study", "s", "--storage", storage, "--format", "yaml",
                 "--out", "best.yaml"]) == 0
    cfg = load_config(tmp / "best.yaml")
    assert cfg.layout is not None and cfg.layout.ranks_per_node == 2
    capsys.readouterr()
    assert main(["train", "--config", "best.yaml", "--tracking-uri", tracking,
                 "--experiment", "replay", "--workdir", str(tmp / "replay")]) == 0
    out = capsys.readouterr().out
    assert "mpirun -np 2" in out and "done (" in out
    replay_exp = client.get_experiment_by_name("replay")
    assert replay_exp is not None
    replay = client.search_runs([replay_exp.experiment_id])
    assert len(replay) == 1 and replay[0].data.tags["state"] == "COMPLETED"
    assert replay[0].data.params["world_size"] == "2"
    assert "best_val_accuracy" in replay[0].data.metrics


class _PruneAfterFirstEpoch(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return (trial.last_step or 0) >= 1


def _settings(tmp, data, trials, **over):
    storage, tracking = _urls(tmp)
    kw = dict(space=_space(tmp, over.pop("epochs", 3)), data_root=data, study="s",
              storage=storage, tracking_uri=tracking, workdir=tmp / "runs",
              hosts=[detect_local()], trials=trials, target_accuracy=0.99, pruner="none")
    kw.update(over)
    return StudySettings(**kw)


def _quiet():
    return ProgressLine(1, stream=open(os.devnull, "w"))


def test_pruned_trial_leaves_no_process_behind(study_env, synth_tree, monkeypatch):
    monkeypatch.setattr(study_mod, "make_pruner", lambda name, epochs: _PruneAfterFirstEpoch())
    study = StudyDriver(_settings(study_env, synth_tree, 1, epochs=30),
                        MpirunLauncher(grace_s=3), progress=_quiet()).run()
    (t,) = study.trials
    assert t.state is optuna.trial.TrialState.PRUNED
    assert t.user_attrs["state"] == "PRUNED" and t.user_attrs["epochs"] < 30
    assert session_pids(t.user_attrs["job"]["pid"]) == []
    assert _no_process_mentions(t.user_attrs["job"]["workdir"])


# trial faults (raise, SIGKILL, hang, NaN, timeout, driver killed, MLflow down) live in
# tests/faults/, which checks each for orphans, lost trials and a study that goes on
