"""Several `study launch` drivers share one study on a real PostgreSQL server (Optuna and MLflow),
starting at the same instant on fresh databases, where both stores create their schemas."""

from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import optuna
import pytest

from tests.conftest import requires_mpi
from tests.postgres import (
    assert_all_exited_0,
    launch_argv,
    one_parent,
)
from tests.spaces import write_space

pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi]

REPO = Path(__file__).resolve().parents[2]
DRIVERS = 4




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


def _span(trial: optuna.trial.FrozenTrial) -> tuple[datetime, datetime]:
    assert trial.datetime_start is not None and trial.datetime_complete is not None
    return trial.datetime_start, trial.datetime_complete


def test_four_drivers_share_a_fresh_postgres_study_without_duplicates_or_losses(
        pg, synth_tree, cache, tmp_path):
    storage, tracking = pg.createdb("optuna"), pg.createdb("mlflow")
    space = write_space(tmp_path / "space.yaml", name="shared", ranks=(1,), batches=(8, 16))
    argv = launch_argv(space, synth_tree, "shared", storage, tracking, tmp_path / "runs",
                        "--trials", "4")
    results = _start_together(argv, tmp_path, cache)
    assert_all_exited_0(results, pg)
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

    runs = one_parent(tracking, "shared")
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
    argv = launch_argv(space, synth_tree, "race", storage, tracking, tmp_path / "runs",
                        "--trials", "4", "--timeout", "0.001")
    results = _start_together(argv, tmp_path, cache)
    assert_all_exited_0(results, pg)
    study = optuna.load_study(study_name="race", storage=storage)
    assert study.get_trials(deepcopy=False) == []
    assert len(optuna.get_all_study_names(storage)) == 1
    runs = one_parent(tracking, "race")
    assert [r for r in runs if r.data.tags.get("mcnn.role") == "trial"] == []
