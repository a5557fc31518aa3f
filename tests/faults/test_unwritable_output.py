"""Fault 9: a run folder (events, job logs, MLflow artifacts) that cannot be written.

(a) ``--workdir`` that cannot be written at all — below a regular file, on a read-only mount, on a
    full disk — is refused before anything is written: one ``error:`` line, exit 2.
(b) The disk fills up during a real study: the trial whose events cannot be written fails, the
    launch stops with one ``error:`` line saying no space is left (exit 1), the Optuna storage
    (on another disk) is intact and loadable with no trial left RUNNING, and no process is left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from tests.conftest import requires_mpi
from tests.faults.conftest import (
    REPO,
    TAG_VAR,
    assert_no_job_processes,
    assert_user_error,
    run_cli,
    tmpfs,
)
from tests.spaces import write_space

TINY = REPO / "search_spaces" / "tiny.yaml"


def _launch(tmp_path: Path, data: Path, workdir: Path):
    return run_cli("study", "launch", "--space", TINY, "--data", data, "--study", "s",
                   "--target-accuracy", "0.5", "--storage", f"sqlite:///{tmp_path / 'o.db'}",
                   "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--workdir", workdir,
                   cwd=tmp_path)


def _fill(folder: Path) -> None:
    """Write zeros into ``folder`` until its file system refuses (ENOSPC)."""
    try:
        with (folder / "filler").open("wb", buffering=0) as fh:
            while True:
                fh.write(b"\0" * 4096)
    except OSError:
        pass


# -- (a) unwritable --workdir, refused up front -----------------------------------------------------
def test_workdir_below_a_regular_file(synth_tree, tmp_path):
    (tmp_path / "afile").write_text("x")
    workdir = tmp_path / "afile" / "runs"
    proc = _launch(tmp_path, synth_tree, workdir)
    assert_user_error(proc, f"--workdir '{workdir}' cannot be written", "Not a directory")
    assert not (tmp_path / "o.db").exists() and not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("state", ["read-only", "full"])
def test_workdir_on_a_read_only_or_full_mount(synth_tree, tmp_path, mountable, state):
    mount = tmp_path / "mnt"
    options = ("size=64k", "ro") if state == "read-only" else ("size=64k",)
    with tmpfs(mount, *options):
        if state == "full":
            _fill(mount)
        proc = _launch(tmp_path, synth_tree, mount / "runs")
    reason = "Read-only file system" if state == "read-only" else "No space left on device"
    assert_user_error(proc, f"--workdir '{mount / 'runs'}' cannot be written", reason)
    assert not (tmp_path / "o.db").exists()


# -- (b) the disk fills up while a real study runs --------------------------------------------------
@pytest.fixture(scope="module")
def full_disk_study(synth_tree, tmp_path_factory, mountable):
    """Run a 2-trial study whose --workdir is a tmpfs filled up once trial 0's job has started.

    Returns (the finished CLI process, the Optuna storage URL, the process tag).
    """
    tmp = tmp_path_factory.mktemp("disk-full")
    write_space(tmp / "space.yaml", name="disk-full")
    storage = f"sqlite:///{tmp / 'optuna.db'}"  # outside the full disk
    tag = uuid.uuid4().hex
    argv = [sys.executable, "-m", "explorer.cli", "study", "launch", "--space",
            str(tmp / "space.yaml"), "--data", str(synth_tree), "--study", "full",
            "--storage", storage, "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}",
            "--trials", "2", "--target-accuracy", "0.3", "--trial-timeout", "120",
            "--seed", "0", "--workdir", str(tmp / "mnt" / "runs")]
    env = {"PYTHONPATH": str(REPO), "MCNN_CACHE_DIR": str(tmp / "cache"), TAG_VAR: tag}
    started = tmp / "mnt" / "runs" / "trial-0000" / "argv.txt"  # the job starts right after
    with tmpfs(tmp / "mnt", "size=256k"):
        driver = subprocess.Popen(argv, cwd=tmp, env={**os.environ, **env}, text=True,  # noqa: S603
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 300
            while not started.exists() and driver.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            _fill(tmp / "mnt")  # the job is still importing TensorFlow: its events cannot be written
            out, err = driver.communicate(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        proc = subprocess.CompletedProcess(argv, driver.returncode, out, err)
        yield proc, storage, tag
        assert_no_job_processes(tag)  # also before unmounting (a rank may hold a file open)


@pytest.mark.slow
@pytest.mark.mpi
@requires_mpi
class TestDiskFillsDuringAStudy:
    def test_full_disk_stops_the_launch_with_one_clear_line(self, full_disk_study):
        proc, _, _ = full_disk_study
        line = assert_user_error(proc, "No space left on device", code=1)
        assert "runs" in line  # names the folder it could not write

    def test_full_disk_leaves_the_storage_intact_and_no_process(self, full_disk_study):
        _, storage, tag = full_disk_study
        trials = optuna.load_study(study_name="full", storage=storage).trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
        assert "No space left on device" in trials[1].user_attrs["reason"]  # its folder: unwritable
        assert_no_job_processes(tag)

    def test_the_trial_whose_events_hit_the_full_disk_says_so(self, full_disk_study):
        _, storage, _ = full_disk_study
        first = optuna.load_study(study_name="full", storage=storage).trials[0]
        assert "no space left on device" in first.user_attrs["reason"].lower()
