from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launchers import (
    Job,
    JobState,
    Resources,
    SlurmBatchJob,
    SlurmLauncher,
    build_srun_argv,
    render_sbatch,
    session_pids,
    slurm,
)
from launchers.slurm import format_time_limit
from mcnn_base.errors import ConfigError, LaunchError

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
FAKES = HERE / "fakes"
CMD = ["/opt/venv/bin/python", "-m", "explorer.mcnn.train", "--config",
       "/runs/trial-3/config.yaml", "--events", "/runs/trial-3/events.jsonl"]


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``golden/<name>``; rewrite the file when MCNN_UPDATE_GOLDEN=1."""
    path = GOLDEN / name
    if os.environ.get("MCNN_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}; run with MCNN_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


# --------------------------------------------------------------------------------------------
# golden argv / scripts
# --------------------------------------------------------------------------------------------

SRUN_CASES = {
    "srun_none.txt": Resources(binding="none", ranks_per_node=2),
    "srun_core.txt": Resources(binding="core", ranks_per_node=2, threads_per_rank=4),
    "srun_socket.txt": Resources(binding="socket", ranks_per_node=2, threads_per_rank=8),
    "srun_multihost.txt": Resources(hosts=("node01", "node02", "gpu5"), ranks_per_node=4,
                                    threads_per_rank=9),
}


@pytest.mark.parametrize("name", sorted(SRUN_CASES))
def test_srun_argv_golden(name):
    argv = build_srun_argv(CMD, SRUN_CASES[name])
    assert argv[-len(CMD):] == CMD
    check_golden(name, "\n".join(argv) + "\n")


SBATCH_CASES: dict[str, tuple[Resources, dict[str, Any]]] = {
    "sbatch_one_node.sbatch": (Resources(), {"job_name": "mcnn-trial-3"}),
    "sbatch_two_hosts.sbatch": (
        Resources(hosts=("node01", "node02"), ranks_per_node=2, threads_per_rank=18,
                  binding="socket", env={"KMP_BLOCKTIME": "1", "MCNN_NOTE": "trial 3 $HOME"}),
        {"job_name": "mcnn-trial-3", "time_limit_s": 90061.5, "partition": "cpu.long",
         "account": "proj_42", "mpi": "pmi2"},
    ),
}


@pytest.mark.parametrize("name", sorted(SBATCH_CASES))
def test_sbatch_script_golden(name):
    resources, kwargs = SBATCH_CASES[name]
    script = render_sbatch(CMD, resources, workdir=Path("/runs/trial-3"), **kwargs)
    check_golden(name, script)
    syntax = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True,
                            check=False)
    assert syntax.returncode == 0, syntax.stderr


def test_sbatch_env_values_are_quoted_and_override_threads():
    script = render_sbatch(["x"], Resources(threads_per_rank=3, env={"OMP_NUM_THREADS": "1",
                                                                     "A": "x;rm -rf /"}),
                           job_name="j", workdir=Path("/w"))
    assert "export A='x;rm -rf /'\nexport OMP_NUM_THREADS=1\n" in script
    assert "OMP_NUM_THREADS=3" not in script


@pytest.mark.parametrize(("seconds", "expected"), [
    (1, "00:00:01"), (59.2, "00:01:00"), (3600, "01:00:00"), (86399.5, "1-00:00:00"),
    (90061, "1-01:01:01"), (3 * 86400 + 7, "3-00:00:07"),
])
def test_format_time_limit(seconds, expected):
    assert format_time_limit(seconds) == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"job_name": "a b"}, r"invalid SLURM job name 'a b'"),
    ({"job_name": "x;rm"}, r"invalid SLURM job name 'x;rm'"),
    ({"partition": "p$"}, r"invalid SLURM partition 'p\$'"),
    ({"account": "acc`id`"}, r"invalid SLURM account 'acc`id`'"),
    ({"mpi": "pmix --x"}, r"invalid SLURM MPI plugin 'pmix --x'"),
    ({"time_limit_s": 0}, r"invalid SLURM time limit 0: expected a positive number"),
    ({"time_limit_s": float("inf")}, r"invalid SLURM time limit inf"),
    ({"workdir": Path("/runs/my trial")}, r"invalid SLURM workdir '/runs/my trial'"),
    ({"workdir": Path("/runs/t%j")}, r"invalid SLURM workdir '/runs/t%j'"),
])
def test_render_sbatch_rejects(kwargs, message):
    kw = {"job_name": "ok", "workdir": Path("/runs/trial-3"), **kwargs}
    with pytest.raises(ConfigError, match=message):
        render_sbatch(CMD, Resources(), **kw)


def test_render_sbatch_rejects_env_names():
    with pytest.raises(ConfigError, match=r"invalid environment variable name 'BAD-KEY'"):
        render_sbatch(CMD, Resources(env={"BAD-KEY": "1"}), job_name="j", workdir=Path("/w"))


def test_launcher_options_are_validated():
    with pytest.raises(ConfigError, match=r"invalid SLURM launcher mode 'batch': expected one of "
                                          r"auto, srun, sbatch"):
        SlurmLauncher("batch")
    with pytest.raises(ConfigError, match=r"invalid SLURM partition"):
        SlurmLauncher(partition="a b")
    auto = SlurmLauncher()
    assert auto.resolved_mode({}) == "sbatch"
    assert auto.resolved_mode({"SLURM_JOB_ID": "12"}) == "srun"
    assert SlurmLauncher("sbatch").resolved_mode({"SLURM_JOB_ID": "12"}) == "sbatch"


def test_srun_options_and_overcommit():
    argv = build_srun_argv(["cmd"], Resources(oversubscribe=True), srun="/x/srun", mpi="none")
    assert argv == ["/x/srun", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1",
                    "--cpu-bind=cores", "--mpi=none", "--overcommit", "--export=ALL",
                    "--kill-on-bad-exit=1", "cmd"]


# --------------------------------------------------------------------------------------------
# fake srun / sbatch / scancel on PATH
# --------------------------------------------------------------------------------------------

@dataclass
class FakeSlurm:
    bin: Path
    records: Path

    def calls(self, tool: str) -> list[dict]:
        path = self.records / f"{tool}.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> FakeSlurm:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for tool in ("srun", "sbatch", "scancel"):
        text = (FAKES / tool).read_text()
        # run the fakes with this interpreter, whatever python3 is (or is not) on PATH
        text = text.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1)
        (bin_dir / tool).write_text(text)
        (bin_dir / tool).chmod(0o755)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(records))
    for name in ("SLURM_JOB_ID", "FAKE_SLURM_JOBID", "FAKE_SBATCH_ERROR", "FAKE_SCANCEL_RC"):
        monkeypatch.delenv(name, raising=False)
    return FakeSlurm(bin_dir, records)


def _use_command(monkeypatch, code: str) -> list[list[str]]:
    """Make the launcher run ``python -c code <events>`` instead of the training module."""
    made: list[list[str]] = []

    def command(config_path: Path, events_path: Path) -> list[str]:
        made.append([sys.executable, "-c", code, str(events_path)])
        return made[-1]

    monkeypatch.setattr(slurm, "train_command", command)
    return made


QUICK = "import sys; open(sys.argv[1], 'w').write('{}\\n'); print('trained', flush=True)"
SLEEP = "import time; print('started', flush=True); time.sleep(600)"


def _wait_for_text(path: Path, text: str, limit: float = 20.0) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_sbatch_mode_runs_to_completion(fake_slurm, tmp_path, monkeypatch):
    made = _use_command(monkeypatch, QUICK)
    resources = Resources(threads_per_rank=2, env={"KMP_BLOCKTIME": "1"}, timeout_s=120)
    launcher = SlurmLauncher("sbatch", partition="debug", account="proj1", grace_s=2.0)
    workdir = tmp_path / "trial-3"
    job = launcher.launch(tmp_path / "config.yaml", resources, workdir=workdir)
    assert isinstance(job, SlurmBatchJob)
    assert job.wait(30) is JobState.COMPLETED, job.log_tail()

    script_path = workdir / "job.sbatch"
    expected = render_sbatch(made[0], resources, job_name="mcnn-trial-3", workdir=workdir,
                             time_limit_s=180, partition="debug", account="proj1")
    assert script_path.read_text() == expected
    assert "#SBATCH --time=00:03:00\n" in expected
    [sbatch] = fake_slurm.calls("sbatch")
    assert sbatch["argv"] == [str(fake_slurm.bin / "sbatch"), "--parsable", "--wait",
                              str(script_path)]
    assert sbatch["script"] == expected
    assert (workdir / "argv.txt").read_text() == " ".join(job.argv) + "\n"

    [srun] = fake_slurm.calls("srun")
    assert srun["argv"] == build_srun_argv(made[0], resources, srun=str(fake_slurm.bin / "srun"))
    assert srun["env"]["OMP_NUM_THREADS"] == "2" and srun["env"]["KMP_BLOCKTIME"] == "1"
    assert srun["env"]["SLURM_JOB_ID"] == "4242" and "MCNN_LAUNCH_TIME" in srun["env"]

    assert job.slurm_job_id == "4242"
    assert (workdir / "sbatch.log").read_text() == "4242\n"
    assert job.log_path == workdir / "job.log"
    assert job.log_tail() == "trained"
    assert (workdir / "events.jsonl").read_text() == "{}\n"
    assert fake_slurm.calls("scancel") == []


def test_sbatch_cancel_scancels_the_job_and_ends_the_session(fake_slurm, tmp_path, monkeypatch):
    _use_command(monkeypatch, SLEEP)
    monkeypatch.setenv("FAKE_SLURM_JOBID", "777")
    job = SlurmLauncher("sbatch", grace_s=2.0).launch(tmp_path / "c.yaml", Resources(),
                                                      workdir=tmp_path / "run")
    assert isinstance(job, SlurmBatchJob)
    _wait_for_text(job.log_path, "started")
    assert len(session_pids(job.pid)) >= 3  # sbatch, bash, the (srun-exec'd) command
    assert job.state is JobState.RUNNING
    assert job.cancel() is JobState.CANCELLED
    assert session_pids(job.pid) == []
    assert [c["argv"] for c in fake_slurm.calls("scancel")] == [[str(fake_slurm.bin / "scancel"),
                                                                 "777"]]
    assert job.scancel_argv == [str(fake_slurm.bin / "scancel"), "777"]
    assert job.scancel_error is None
    assert job.cancel() is JobState.CANCELLED  # idempotent: no second scancel
    assert len(fake_slurm.calls("scancel")) == 1


def test_sbatch_timeout_scancels_the_job(fake_slurm, tmp_path, monkeypatch):
    _use_command(monkeypatch, SLEEP)
    job = SlurmLauncher("sbatch", grace_s=2.0).launch(
        tmp_path / "c.yaml", Resources(timeout_s=1.5), workdir=tmp_path / "run")
    assert "#SBATCH --time=00:01:02\n" in (tmp_path / "run" / "job.sbatch").read_text()
    assert job.wait(30) is JobState.TIMEOUT
    assert session_pids(job.pid) == []
    assert [c["argv"][1:] for c in fake_slurm.calls("scancel")] == [["4242"]]


def test_scancel_failure_is_recorded_not_raised(fake_slurm, tmp_path, monkeypatch):
    _use_command(monkeypatch, SLEEP)
    monkeypatch.setenv("FAKE_SCANCEL_RC", "1")
    job = SlurmLauncher("sbatch", grace_s=2.0).launch(tmp_path / "c.yaml", Resources(),
                                                      workdir=tmp_path / "run")
    assert isinstance(job, SlurmBatchJob)
    _wait_for_text(job.log_path, "started")
    assert job.cancel() is JobState.CANCELLED
    assert job.scancel_error is not None and "exited with 1" in job.scancel_error
    assert "exited with 1" in (tmp_path / "run" / "sbatch.log").read_text()


def test_sbatch_failures_are_failed_with_the_message(fake_slurm, tmp_path, monkeypatch):
    _use_command(monkeypatch, "raise SystemExit(3)")
    job = SlurmLauncher("sbatch").launch(tmp_path / "c.yaml", Resources(), workdir=tmp_path / "a")
    assert job.wait(30) is JobState.FAILED and job.returncode == 3

    monkeypatch.setenv("FAKE_SBATCH_ERROR", "sbatch: error: invalid partition specified: nope")
    job = SlurmLauncher("sbatch").launch(tmp_path / "c.yaml", Resources(), workdir=tmp_path / "b")
    assert job.wait(30) is JobState.FAILED
    assert isinstance(job, SlurmBatchJob) and job.slurm_job_id is None
    assert "invalid partition specified: nope" in job.log_tail()
    assert len(fake_slurm.calls("srun")) == 1  # only the first job reached srun


def test_srun_mode_inside_an_allocation(fake_slurm, tmp_path, monkeypatch):
    made = _use_command(monkeypatch, QUICK)
    monkeypatch.setenv("SLURM_JOB_ID", "55")
    resources = Resources(ranks_per_node=1, threads_per_rank=3, binding="none")
    workdir = tmp_path / "run"
    job = SlurmLauncher(mpi="pmi2", grace_s=2.0).launch(tmp_path / "c.yaml", resources,
                                                        workdir=workdir)
    assert type(job) is Job
    assert job.wait(30) is JobState.COMPLETED, job.log_tail()
    srun_exe = shutil.which("srun")
    assert srun_exe == str(fake_slurm.bin / "srun")
    expected = build_srun_argv(made[0], resources, srun=srun_exe, mpi="pmi2")
    assert job.argv == expected
    assert [c["argv"] for c in fake_slurm.calls("srun")] == [expected]
    assert fake_slurm.calls("srun")[0]["env"]["OMP_NUM_THREADS"] == "3"
    assert (workdir / "argv.txt").read_text() == " ".join(expected) + "\n"
    assert "trained" in job.log_tail()
    assert fake_slurm.calls("sbatch") == [] and not (workdir / "job.sbatch").exists()


def test_srun_mode_cancel_ends_the_session(fake_slurm, tmp_path, monkeypatch):
    _use_command(monkeypatch, SLEEP)
    job = SlurmLauncher("srun", grace_s=2.0).launch(tmp_path / "c.yaml", Resources(),
                                                    workdir=tmp_path / "run")
    _wait_for_text(job.log_path, "started")
    assert job.cancel() is JobState.CANCELLED
    assert session_pids(job.pid) == []
    assert fake_slurm.calls("scancel") == []


@pytest.mark.parametrize(("mode", "kwargs", "missing"), [
    ("srun", {"srun": "no-such-srun-xyz"}, "no-such-srun-xyz"),
    ("sbatch", {"sbatch": "no-such-sbatch-xyz"}, "no-such-sbatch-xyz"),
    ("sbatch", {"scancel": "no-such-scancel-xyz"}, "no-such-scancel-xyz"),
])
def test_missing_executables_raise_launch_error(fake_slurm, tmp_path, mode, kwargs, missing):
    with pytest.raises(LaunchError, match=rf"'{missing}' not found on PATH"):
        SlurmLauncher(mode, **kwargs).launch(tmp_path / "c.yaml", Resources(),
                                             workdir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unavailable_nodes_reads_sinfo_states_and_flags(tmp_path):
    sinfo = tmp_path / "sinfo"
    sinfo.write_text("#!/bin/sh\nprintf 'n1|idle\\nn2|drained\\nn3|draining\\nn4|idle*\\n"
                     "n5|reboot_requested\\nn6|mixed\\nn7|down~\\nother|down\\n'\n")
    sinfo.chmod(0o755)
    names = [f"n{i}" for i in range(1, 8)]
    assert slurm.unavailable_nodes(names, sinfo=str(sinfo)) == {
        "n2": "drained", "n3": "draining", "n4": "idle (not responding)",
        "n5": "reboot_requested", "n7": "down"}
    failing = tmp_path / "sinfo-fails"
    failing.write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact' >&2\nexit 1\n")
    failing.chmod(0o755)
    assert slurm.unavailable_nodes(names, sinfo=str(failing)) is None  # cannot tell
    assert slurm.unavailable_nodes(names, sinfo="no-such-sinfo-xyz") is None
