"""Several `study launch` drivers share one study on a real PostgreSQL server (Optuna and MLflow),
starting at the same instant on fresh databases, where both stores create their schemas."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import requires_mpi
from tests.postgres import PostgresServer, postgres_server, require_postgres
from tests.spaces import write_space

pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi]

REPO = Path(__file__).resolve().parents[2]
DRIVERS = 4


@pytest.fixture(scope="module")
def pg():
    require_postgres()
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, synth_tree: Path) -> Path:
    """One shard cache for every driver of the module (built by the first, reused after)."""
    return tmp_path_factory.mktemp("shard-cache")


def _start_together(argv: list[str], cwd: Path, cache: Path,
                    n: int = DRIVERS) -> list[tuple[subprocess.Popen[str], str]]:
    """Start ``n`` drivers at the same instant (seeds 1..n); wait for all; (process, output)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MCNN_CACHE_DIR": str(cache)}
    drivers = [subprocess.Popen([*argv, "--seed", str(seed)], cwd=cwd, env=env,  # noqa: S603
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for seed in range(1, n + 1)]
    outputs = []
    try:
        for d in drivers:
            outputs.append(d.communicate(timeout=900)[0])
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
    return list(zip(drivers, outputs, strict=True))


def _launch_argv(space: Path, tree: Path, study: str, storage: str, tracking: str,
                 workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "explorer.cli", "study", "launch", "--space", str(space),
            "--data", str(tree), "--study", study, "--storage", storage, "--tracking-uri",
            tracking, "--target-accuracy", "0.99", "--trial-timeout", "240", "--pruner", "none",
            "--workdir", str(workdir), *extra]


def _span(trial: optuna.trial.FrozenTrial) -> tuple[datetime, datetime]:
    assert trial.datetime_start is not None and trial.datetime_complete is not None
    return trial.datetime_start, trial.datetime_complete


def _one_parent(tracking: str, study: str) -> list[Run]:
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(study)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mcnn.role") == "study"]
    assert len(parents) == 1, [p.info.run_id for p in parents]
    return runs


def _assert_all_exited_0(results: list[tuple[subprocess.Popen[str], str]], pg: PostgresServer
                         ) -> None:
    for d, out in results:
        assert d.returncode == 0, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert pg.password not in out  # storage URLs are printed masked


def test_four_drivers_share_a_fresh_postgres_study_without_duplicates_or_losses(
        pg, synth_tree, cache, tmp_path):
    storage, tracking = pg.createdb("optuna"), pg.createdb("mlflow")
    space = write_space(tmp_path / "space.yaml", name="shared", ranks=(1,), batches=(8, 16))
    argv = _launch_argv(space, synth_tree, "shared", storage, tracking, tmp_path / "runs",
                        "--trials", "4")
    results = _start_together(argv, tmp_path, cache)
    _assert_all_exited_0(results, pg)
    assert all("postgresql://mcnn:***@" in out for _, out in results)

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert all(t.state.is_finished() for t in trials)
    # every trial was run by exactly one driver, and several drivers did work
    by_driver = collections.Counter(t.user_attrs["driver"]["pid"] for t in trials)
    assert set(by_driver) <= {d.pid for d, _ in results}
    assert len(by_driver) >= 2
    # --trials counts across drivers: at most one overshoot per extra driver
    assert 4 <= len(trials) <= 4 + DRIVERS - 1
    # the study really is shared: trials of different drivers ran at the same time
    assert any(a.user_attrs["driver"]["pid"] != b.user_attrs["driver"]["pid"]
               and _span(a)[0] < _span(b)[1] and _span(b)[0] < _span(a)[1]
               for a, b in itertools.combinations(trials, 2))
    folders = [t.user_attrs["job"]["workdir"] for t in trials]
    assert len(set(folders)) == len(folders)
    for folder in folders:
        events = [json.loads(line) for line in
                  (Path(folder) / "events.jsonl").read_text().splitlines()]
        assert sum(e["event"] == "start" for e in events) == 1  # launched once
        assert sum(e["event"] == "done" for e in events) == 1

    runs = _one_parent(tracking, "shared")
    parents = [r for r in runs if r.data.tags.get("mcnn.role") == "study"]
    assert pg.password not in parents[0].data.params["study.storage"]
    children = [r for r in runs if r.data.tags.get("mcnn.role") == "trial"]
    numbers = [int(r.data.tags["optuna.trial"]) for r in children]
    assert sorted(numbers) == sorted(t.number for t in trials)  # one run per trial, none lost
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.tags["state"] == "COMPLETED" and r.info.status == "FINISHED"
        assert "best_val_accuracy" in r.data.metrics


@pytest.mark.parametrize("backend", ["postgresql-1", "postgresql-2", "postgresql-3", "sqlite"])
def test_drivers_starting_together_create_each_new_schema_once(pg, synth_tree, cache, tmp_path,
                                                               backend):
    """Four drivers open the same brand-new databases at once: each store's schema is created
    once, every driver exits 0 and the study has one MLflow parent run. (``--timeout`` is so
    short that no trial starts: the set-up race is the whole test.)"""
    if backend == "sqlite":
        storage, tracking = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    else:
        storage, tracking = pg.createdb(f"o_{backend[-1]}"), pg.createdb(f"m_{backend[-1]}")
    space = write_space(tmp_path / "space.yaml", name="race", ranks=(1,))
    argv = _launch_argv(space, synth_tree, "race", storage, tracking, tmp_path / "runs",
                        "--trials", "4", "--timeout", "0.001")
    results = _start_together(argv, tmp_path, cache)
    _assert_all_exited_0(results, pg)
    study = optuna.load_study(study_name="race", storage=storage)
    assert study.get_trials(deepcopy=False) == []
    assert len(optuna.get_all_study_names(storage)) == 1
    runs = _one_parent(tracking, "race")
    assert [r for r in runs if r.data.tags.get("mcnn.role") == "trial"] == []


def _epoch_seen(runs: Path) -> bool:
    for events in runs.glob("trial-*/events.jsonl"):
        with contextlib.suppress(OSError):
            if '"event": "epoch"' in events.read_text():
                return True
    return False


@pytest.mark.timeout(900)
def test_two_drivers_ride_out_a_postgres_restart_and_a_relaunch_finishes_the_study(
        pg, synth_tree, cache, tmp_path):
    storage, tracking = pg.createdb("optuna_restart"), pg.createdb("mlflow_restart")
    space = write_space(tmp_path / "space.yaml", name="restart", ranks=(1,), epochs=6)
    argv = _launch_argv(space, synth_tree, "restart", storage, tracking, tmp_path / "runs",
                        "--trials", "4")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MCNN_CACHE_DIR": str(cache)}
    drivers = [subprocess.Popen([*argv, "--seed", str(seed)], cwd=tmp_path, env=env,  # noqa: S603
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for seed in (1, 2)]
    try:
        deadline = time.monotonic() + 300
        while not _epoch_seen(tmp_path / "runs") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _epoch_seen(tmp_path / "runs"), "no trial trained an epoch"
        pg.restart(down_s=8.0)  # every connection dropped, the server gone for 8 s
        results = [(d, d.communicate(timeout=600)[0]) for d in drivers]
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
    _assert_all_exited_0(results, pg)
    said = "".join(out for _, out in results)
    assert "does not answer" in said and "answers again" in said, said[-3000:]

    study = optuna.load_study(study_name="restart", storage=storage)
    trials = study.get_trials(deepcopy=False)
    # the jobs ran on through the outage: no trial lost or run twice
    assert all(t.user_attrs.get("state") == "COMPLETED" for t in trials), [
        (t.number, t.state, t.user_attrs.get("reason")) for t in trials]
    assert 4 <= len(trials) <= 5
    for t in trials:
        events = [json.loads(line) for line in
                  (Path(t.user_attrs["job"]["workdir"]) / "events.jsonl").read_text().splitlines()]
        assert sum(e["event"] == "start" for e in events) == 1
    # MLflow was down too: the relaunch back-fills what it missed, one run per trial
    again = subprocess.run([*argv, "--seed", "3"], cwd=tmp_path, env=env,  # noqa: S603
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(optuna.load_study(study_name="restart", storage=storage).trials) == len(trials)
    runs = _one_parent(tracking, "restart")
    children = [r for r in runs if r.data.tags.get("mcnn.role") == "trial"]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == [t.number for t in trials]
    assert all(r.data.tags.get("state") == "COMPLETED" for r in children)
