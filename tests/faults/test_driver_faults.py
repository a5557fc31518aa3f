"""Faults 6-7: the driver is SIGKILLed mid-trial; the MLflow tracking server dies mid-study."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from explorer.cli import main
from tests.conftest import requires_mpi
from tests.faults.conftest import wait_for_no_new_processes
from tests.spaces import write_space

pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi]

REPO = Path(__file__).resolve().parents[2]


def _argv(tmp: Path, data: Path, trials: int, study: str, tracking: str, epochs: int) -> list[str]:
    space = write_space(tmp / "space.yaml", name="driver-faults", epochs=epochs,
                        bindings=("none", "core"))
    return ["study", "launch", "--space", str(space), "--data", str(data), "--study", study,
            "--storage", f"sqlite:///{tmp / 'optuna.db'}", "--tracking-uri", tracking,
            "--trials", str(trials), "--target-accuracy", "0.3", "--trial-timeout", "240",
            "--seed", "0", "--pruner", "none", "--workdir", str(tmp / "runs")]


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.25)
    raise AssertionError(f"{path} never held {text!r}")


def _start_driver(cwd: Path, argv: list[str]) -> subprocess.Popen[bytes]:
    """`study launch` in its own process, so that it can be signalled."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "explorer.cli", *argv], cwd=cwd, env=env,  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_driver_sigkilled_mid_trial_then_relaunched(study_env, synth_tree, no_orphans):
    tmp = study_env
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    argv = _argv(tmp, synth_tree, 2, "r", tracking, epochs=6)
    driver = _start_driver(tmp, argv)
    try:
        _wait_for(tmp / "runs" / "trial-0001" / "events.jsonl", '"epoch"', driver, 300)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    first = optuna.load_study(study_name="r", storage=storage).trials
    assert first[0].state is optuna.trial.TrialState.COMPLETE
    assert first[1].state is optuna.trial.TrialState.RUNNING
    # the orphaned job got SIGTERM with its launcher (PR_SET_PDEATHSIG): no rank survives
    assert not wait_for_no_new_processes([], 30, tag=no_orphans), "the job outlived its driver"

    assert main(argv) == 0
    trials = optuna.load_study(study_name="r", storage=storage).trials
    assert trials[0].state is optuna.trial.TrialState.COMPLETE
    assert trials[0].values == first[0].values  # no completed trial lost
    assert trials[1].state is optuna.trial.TrialState.FAIL
    assert trials[1].user_attrs["stale"] and "is gone" in trials[1].user_attrs["reason"]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == first[1].params
    assert trials[2].state.is_finished() and len(trials) == 3
    assert not wait_for_no_new_processes([], tag=no_orphans)
    client = MlflowClient(tracking)
    assert client.get_run(trials[1].user_attrs["mlflow_run_id"]).info.status == "FAILED"
    exp = client.get_experiment_by_name("r")
    assert exp is not None
    parent = [r for r in client.search_runs([exp.experiment_id])
              if r.data.tags.get("mcnn.role") == "study"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(tmp: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A real MLflow tracking server (sqlite backend in ``tmp``); killed on exit."""
    log = (tmp / f"mlflow-server-{time.time():.0f}.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp / 'mlflow-backend.db'}",
         "--artifacts-destination", str(tmp / "served-artifacts")],
        cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        yield proc
    finally:
        stop_server(proc)
        log.close()


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def test_mlflow_server_dies_mid_study_then_records_are_backfilled(study_env, synth_tree, capsys,
                                                                 no_orphans):
    tmp = study_env
    port = _free_port()
    tracking = f"http://127.0.0.1:{port}"
    argv = _argv(tmp, synth_tree, 3, "m", tracking, epochs=2)
    with mlflow_server(tmp, port) as server:
        # the server dies as soon as trial 1 is running: trial 0 is recorded, 1 and 2 are not
        def kill_server_once_trial_1_runs() -> None:
            _wait_for(tmp / "runs" / "trial-0001" / "config.yaml", "layout", None, 600)
            stop_server(server)

        killer = threading.Thread(target=kill_server_once_trial_1_runs, daemon=True)
        killer.start()
        assert main(argv) == 0
        killer.join(5)
    out = capsys.readouterr()
    assert "is unavailable" in out.out + out.err  # reported, clearly, once
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3

    with mlflow_server(tmp, port):
        assert main(argv) == 0  # nothing left to run: the relaunch back-fills MLflow
        out = capsys.readouterr()
        assert "back-filled 2 MLflow run(s)" in out.out + out.err
        client = MlflowClient(tracking)
        exp = client.get_experiment_by_name("m")
        assert exp is not None
        runs = client.search_runs([exp.experiment_id])
        children = {int(r.data.tags["optuna.trial"]): r for r in runs
                    if r.data.tags.get("mcnn.role") == "trial"}
        assert sorted(children) == [0, 1, 2]
        for t in study.trials:
            run = children[t.number]
            assert run.data.tags["state"] == "COMPLETED" and run.info.status == "FINISHED"
            assert run.data.metrics["best_val_accuracy"] == pytest.approx(
                t.user_attrs["best_val_accuracy"])
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            assert len(history) == t.user_attrs["epochs"]


def test_driver_sigterm_cancels_its_trial_and_records_it(study_env, synth_tree, no_orphans):
    tmp = study_env
    argv = _argv(tmp, synth_tree, 2, "t", f"sqlite:///{tmp / 'mlflow.db'}", epochs=30)
    driver = _start_driver(tmp, argv)
    try:
        _wait_for(tmp / "runs" / "trial-0000" / "events.jsonl", '"epoch"', driver, 300)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(60) == 128 + signal.SIGTERM
    finally:
        if driver.poll() is None:
            driver.kill()
    assert not wait_for_no_new_processes([], 10, tag=no_orphans), "the trial's job survived"
    (trial,) = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp / 'optuna.db'}").trials
    assert trial.state is optuna.trial.TrialState.FAIL
    assert trial.user_attrs["reason"] == "interrupted: the driver was stopped"
