"""Two `study launch` drivers share one study on a real PostgreSQL server (Optuna and MLflow)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import requires_mpi
from tests.postgres import bin_dir, postgres_server
from tests.spaces import write_space

pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg():
    if bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install PostgreSQL (scripts/setup.sh --with-test-deps)")
        pytest.skip("PostgreSQL server binaries are not installed (apt install postgresql)")
    with postgres_server() as server:
        yield server


def test_two_drivers_share_a_postgres_study_without_duplicates_or_losses(pg, synth_tree,
                                                                       tmp_path):
    storage, tracking = pg.createdb("optuna"), pg.createdb("mlflow")
    space = write_space(tmp_path / "space.yaml", name="shared", ranks=(1,), batches=(8, 16))
    argv = [sys.executable, "-m", "explorer.cli", "study", "launch", "--space", str(space),
            "--data", str(synth_tree), "--study", "shared", "--storage", storage,
            "--tracking-uri", tracking, "--trials", "4", "--target-accuracy", "0.99",
            "--trial-timeout", "240", "--pruner", "none", "--workdir", str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MCNN_CACHE_DIR": str(tmp_path / "cache")}
    drivers = [subprocess.Popen([*argv, "--seed", str(seed)], cwd=tmp_path, env=env,  # noqa: S603
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for seed in (1, 2)]
    outputs = []
    try:
        for d in drivers:
            outputs.append(d.communicate(timeout=900)[0])
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
    for d, out in zip(drivers, outputs, strict=True):
        assert d.returncode == 0, out[-3000:]
        assert pg.password not in out  # storage URLs are printed masked
        assert "postgresql://mcnn:***@" in out

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert all(t.state.is_finished() for t in trials)
    # every trial was run by exactly one driver, and both drivers did work
    by_driver = collections.Counter(t.user_attrs["driver"]["pid"] for t in trials)
    assert set(by_driver) == {d.pid for d in drivers}
    assert sum(by_driver.values()) == len(trials)
    # --trials counts across drivers: at most one overshoot per extra driver
    assert 4 <= len(trials) <= 5
    folders = [t.user_attrs["job"]["workdir"] for t in trials]
    assert len(set(folders)) == len(folders)
    for folder in folders:
        events = [json.loads(line) for line in
                  (Path(folder) / "events.jsonl").read_text().splitlines()]
        assert sum(e["event"] == "start" for e in events) == 1  # launched once
        assert sum(e["event"] == "done" for e in events) == 1

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("shared")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mcnn.role") == "study"]
    assert len(parents) == 1
    assert pg.password not in parents[0].data.params["study.storage"]
    children = [r for r in runs if r.data.tags.get("mcnn.role") == "trial"]
    numbers = [int(r.data.tags["optuna.trial"]) for r in children]
    assert sorted(numbers) == sorted(t.number for t in trials)  # one run per trial, none lost
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.tags["state"] == "COMPLETED" and r.info.status == "FINISHED"
        assert "best_val_accuracy" in r.data.metrics
