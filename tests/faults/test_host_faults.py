"""Faults of many hosts, for real: a host's network is cut in the middle of a 2-node trial
(its netns link taken down). The trial ends FAILED with a reason naming the host, the host is
quarantined for the rest of the study (``study status`` says so), the other host keeps working.
What mpirun cannot reach is left on the cut host only, and exits once its network is back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from devsupport.netns import netns_available, netns_hosts
from tests.conftest import requires_mpi
from tests.faults.conftest import REPO, job_processes, run_cli, wait_for_no_new_processes
from tests.spaces import write_space

_REASON = netns_available()
pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi,
              pytest.mark.skipif(_REASON is not None, reason=f"no netns hosts: {_REASON}")]


def _netns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return "gone"


def _epochs(events: Path) -> int:
    try:
        return sum(json.loads(x).get("event") == "epoch" for x in events.read_text().splitlines())
    except (OSError, json.JSONDecodeError):
        return 0


@pytest.mark.timeout(600)
def test_a_host_whose_network_is_cut_mid_trial_is_named_and_quarantined(synth_tree, study_env):
    tmp_path = study_env
    space = write_space(tmp_path / "space.yaml", name="cut", ranks=(1,), nodes=(1, 2), epochs=30)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="cut", storage=storage)
    study.enqueue_trial({"nodes": 2, "peak_lr": 0.02})  # across both hosts: cut under it
    study.enqueue_trial({"nodes": 1, "peak_lr": 0.02})
    before = job_processes()
    with netns_hosts(2) as net:
        mca = [arg for key, value in net.mca.items() for arg in ("--mca", f"{key}={value}")]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "explorer.cli", "study", "launch", "--space", str(space),
                "--data", str(synth_tree), "--study", "cut", "--storage", storage,
                "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--trials", "2",
                "--target-accuracy", "0.6", "--pruner", "none", "--stall-timeout", "45",
                "--concurrent-trials", "1", "--hosts", str(net.hostfile), *mca]
        driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,  # noqa: S603
                                  stderr=subprocess.STDOUT, text=True)
        events = tmp_path / "runs" / "cut" / "trial-0000" / "events.jsonl"
        deadline = time.monotonic() + 240
        while _epochs(events) < 1 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _epochs(events) >= 1, "trial 0 never trained an epoch"
        cut_host = net.hosts[1]
        subprocess.run(["ip", "link", "set", net.veths[1], "down"], check=True)  # noqa: S603
        out, _ = driver.communicate(timeout=420)
        assert driver.returncode == 0, out[-3000:]
        status = run_cli("study", "status", "--study", "cut", "--storage", storage)
        # mpirun could not reach its daemon on the cut host (Open MPI daemonizes it out of the
        # trial's session): what is left runs there, and nowhere else
        cut_net = next(net_id for host, _, net_id in net.agent_calls() if host == cut_host)
        stranded = wait_for_no_new_processes(before, grace_s=10)
        assert all(_netns(p.pid) == cut_net for p in stranded), stranded
        # once the host's network is back, its leftovers lose mpirun and exit by themselves
        subprocess.run(["ip", "link", "set", net.veths[1], "up"], check=True)  # noqa: S603
        left = wait_for_no_new_processes(before, grace_s=120)
    assert not left, f"orphan processes: {left}"
    loaded = optuna.load_study(study_name="cut", storage=storage)
    t0, t1 = loaded.trials[0], loaded.trials[1]
    assert t0.user_attrs["state"] == "FAILED"
    reason = t0.user_attrs["reason"]
    assert reason.startswith(f"host {cut_host} unreachable"), reason
    assert "quarantined" in reason
    assert list(loaded.user_attrs["quarantined_hosts"]) == [cut_host]
    # the other host kept working: trial 1 ran there alone and completed
    assert t1.user_attrs["state"] == "COMPLETED"
    assert t1.user_attrs["derived"]["hosts"] == net.hosts[0]
    assert f"host {cut_host} quarantined" in status.stdout, status.stdout
