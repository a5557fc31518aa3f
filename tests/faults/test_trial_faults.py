"""Faults 1-5, injected for real into one trial of a real 2-rank study.

Each study runs three trials: a healthy one, the faulty one, a healthy one. Each fault must end
with the faulty trial FAILED and a reason a user understands, zero orphan processes, the
completed trial before it unchanged, and the study going on to complete the next trial.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

import explorer.driver as driver_mod
from explorer.driver import StudyDriver
from explorer.progress import ProgressLine
from explorer.study import StudySettings
from launchers import MpirunLauncher, detect_local
from tests.conftest import requires_mpi
from tests.faults.conftest import wait_for_no_new_processes
from tests.spaces import write_space

pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi]


# fault -> (train-config overrides of the faulty trial, study settings, expected reason)
FAULTS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "rank_raises": ({"fault": {"kind": "raise", "rank": 1, "at_step": 3}}, {},
                    "injected fault on rank 1 at step 3"),
    "rank_sigkilled": ({"fault": {"kind": "kill", "rank": 1, "at_step": 3}}, {},
                       "killed by signal 9"),
    "rank_hangs": ({"fault": {"kind": "hang", "rank": 1, "at_step": 3}},
                   {"stall_timeout_s": 25.0}, "stalled: no progress"),  # > a loaded start-up
    "nan_loss": ({"fault": {"kind": "nan", "rank": 0, "at_step": 2}}, {}, "nan_loss"),
    "trial_timeout": ({"max_epochs": 200}, {"trial_timeout_s": 40.0, "stall_timeout_s": None},
                      "timeout"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_fails_one_trial_and_the_study_goes_on(fault, synth_tree, tmp_path, monkeypatch,
                                                    no_orphans):
    monkeypatch.setenv("MCNN_CACHE_DIR", str(tmp_path / "cache"))
    overrides, settings_over, expected = FAULTS[fault]
    real = driver_mod.build_plan
    planned = iter([{}, overrides])

    def plan_with_fault(*args: Any, **kwargs: Any) -> Any:
        extra = next(planned, {})
        kwargs["overrides"] = {**kwargs.get("overrides", {}), **extra}
        return real(*args, **kwargs)

    monkeypatch.setattr(driver_mod, "build_plan", plan_with_fault)
    space = write_space(tmp_path / "space.yaml", name="faults", base={"progress_every_s": 1})
    settings = StudySettings(
        space=space, data_root=synth_tree, study=fault, storage=f"sqlite:///{tmp_path}/o.db",
        tracking_uri=f"sqlite:///{tmp_path}/m.db", workdir=tmp_path / "runs",
        hosts=[detect_local()], trials=3, target_accuracy=0.99, pruner="none",
        **{"trial_timeout_s": 240.0, **settings_over})
    with open(os.devnull, "w") as sink:
        driver = StudyDriver(settings, MpirunLauncher(grace_s=3),
                             progress=ProgressLine(3, stream=sink))
        study = driver.run()

    assert not wait_for_no_new_processes([], tag=no_orphans), "orphan mpirun/orted/ranks"
    t0, t1, t2 = study.get_trials(deepcopy=False)
    assert t0.state is optuna.trial.TrialState.COMPLETE, t0.user_attrs.get("reason")  # intact
    assert t1.state is optuna.trial.TrialState.FAIL
    assert t1.user_attrs["state"] == "FAILED"
    assert expected in t1.user_attrs["reason"], t1.user_attrs["reason"]
    assert t2.state is optuna.trial.TrialState.COMPLETE  # the study went on
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(t1.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and expected in run.data.tags["reason"]
    assert Path(t1.user_attrs["job"]["workdir"], "job.log").is_file()
