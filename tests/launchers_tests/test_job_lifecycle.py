from __future__ import annotations

import sys
import time

import pytest

from launchers import Job, JobState, Resources, build_mpirun_argv, session_pids
from tests.conftest import requires_mpi

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _mpirun_sleepers(tmp_path, timeout_s=None):
    argv = build_mpirun_argv(SLEEPER, Resources(ranks_per_node=2, binding="none",
                                                oversubscribe=True))
    return Job(argv, env={}, log_path=tmp_path / "job.log", events_path=None,
               timeout_s=timeout_s, grace_s=3.0)


def _wait_for(n, job, limit=30.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        if len(session_pids(job.pid)) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"only {session_pids(job.pid)} in the session")


@requires_mpi
@pytest.mark.mpi
def test_cancel_kills_mpirun_and_every_rank(tmp_path):
    job = _mpirun_sleepers(tmp_path)
    _wait_for(3, job)  # mpirun + 2 ranks
    assert job.state is JobState.RUNNING
    assert job.cancel() is JobState.CANCELLED
    assert session_pids(job.pid) == []


@requires_mpi
@pytest.mark.mpi
def test_timeout_kills_the_tree(tmp_path):
    job = _mpirun_sleepers(tmp_path, timeout_s=3.0)
    _wait_for(3, job)
    assert job.wait(timeout=60) is JobState.TIMEOUT
    assert session_pids(job.pid) == []


def test_exit_codes_map_to_states(tmp_path):
    ok = Job([sys.executable, "-c", "print('hi')"], env={}, log_path=tmp_path / "a.log",
             events_path=None)
    bad = Job([sys.executable, "-c", "raise SystemExit(3)"], env={}, log_path=tmp_path / "b.log",
              events_path=None)
    assert ok.wait(30) is JobState.COMPLETED and "hi" in ok.log_tail()
    assert bad.wait(30) is JobState.FAILED and bad.returncode == 3
