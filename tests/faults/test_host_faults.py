"""Faults of many hosts, for real, on network-namespace hosts that each run a real ``sshd``:
Open MPI starts its daemons through ``ssh``, as on a cluster, so a host's ranks are children of
its ``sshd`` and not of ``mpirun``'s session (a session kill cannot reach them).

* A host's network is cut in the middle of a 2-node trial (its netns link taken down). The trial
  ends FAILED with a reason naming the host, the host is quarantined for the rest of the study
  (``study status`` says so), the other host keeps working. What mpirun cannot reach is left on
  the cut host only, and exits once its network is back.
* The driver is SIGKILLed in the middle of a 2-node trial: no rank or daemon is left on any host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from devsupport.netns import NetnsHosts, netns_hosts, sshd_available
from tests.conftest import requires_mpi
from tests.faults.conftest import REPO, job_processes, run_cli, wait_for_no_new_processes
from tests.spaces import write_space

_REASON = sshd_available()
pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi,
              pytest.mark.skipif(_REASON is not None, reason=f"no ssh netns hosts: {_REASON}")]


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


def _driver(net: NetnsHosts, space: Path, data: Path, tmp_path: Path, name: str, storage: str,
            trials: int) -> subprocess.Popen[str]:
    """``study launch`` over the hosts (their hostfile and ``--mca`` settings), one trial at a
    time, in its own process."""
    mca = [arg for key, value in net.mca.items() for arg in ("--mca", f"{key}={value}")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "explorer.cli", "study", "launch", "--space", str(space),
            "--data", str(data), "--study", name, "--storage", storage,
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--trials", str(trials),
            "--target-accuracy", "0.6", "--pruner", "none", "--stall-timeout", "45",
            "--concurrent-trials", "1", "--hosts", str(net.hostfile), *mca]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,  # noqa: S603 - argv list
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_an_epoch(events: Path, driver: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 240
    while _epochs(events) < 1 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if _epochs(events) < 1:
        out = driver.communicate(timeout=60)[0] if driver.poll() is not None else ""
        raise AssertionError(f"the first trial never trained an epoch: {out[-3000:]}")


@pytest.mark.timeout(600)
def test_a_host_whose_network_is_cut_mid_trial_is_named_and_quarantined(synth_tree, study_env):
    tmp_path = study_env
    space = write_space(tmp_path / "space.yaml", name="cut", ranks=(1,), nodes=(1, 2), epochs=30)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="cut", storage=storage)
    study.enqueue_trial({"nodes": 2, "peak_lr": 0.02})  # across both hosts: cut under it
    study.enqueue_trial({"nodes": 1, "peak_lr": 0.02})
    before = job_processes()
    with netns_hosts(2, ssh=True) as net:
        driver = _driver(net, space, synth_tree, tmp_path, "cut", storage, trials=2)
        _wait_for_an_epoch(tmp_path / "runs" / "cut" / "trial-0000" / "events.jsonl", driver)
        cut_host = net.hosts[1]
        subprocess.run(["ip", "link", "set", net.veths[1], "down"], check=True)  # noqa: S603
        out, _ = driver.communicate(timeout=420)
        assert driver.returncode == 0, out[-3000:]
        status = run_cli("study", "status", "--study", "cut", "--storage", storage)
        # mpirun could not reach its daemon on the cut host (Open MPI daemonizes it out of the
        # trial's session): what is left runs there, and nowhere else
        cut_net = net.net_ids[1]
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


@pytest.mark.timeout(480)
def test_a_driver_sigkilled_mid_trial_leaves_no_rank_or_daemon_on_any_host(synth_tree, study_env):
    tmp_path = study_env
    space = write_space(tmp_path / "space.yaml", name="kill", ranks=(1,), nodes=(1, 2), epochs=30)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="kill", storage=storage).enqueue_trial(
        {"nodes": 2, "peak_lr": 0.02})
    before = job_processes()
    known = {p.pid for p in before}
    with netns_hosts(2, ssh=True) as net:
        driver = _driver(net, space, synth_tree, tmp_path, "kill", storage, trials=1)
        try:
            _wait_for_an_epoch(tmp_path / "runs" / "kill" / "trial-0000" / "events.jsonl", driver)
            running = [p for p in job_processes() if p.pid not in known]
            ranks = [p for p in running if p.kind == "rank"]
            mpirun = [p for p in running if p.kind == "mpirun"]
            # one rank on each host, started through its sshd: outside mpirun's session
            assert sorted(_netns(p.pid) for p in ranks) == sorted(net.net_ids), running
            assert len(mpirun) == 1 and all(
                os.getsid(r.pid) != os.getsid(mpirun[0].pid) for r in ranks), running
            driver.kill()
            driver.wait(30)
        finally:
            if driver.poll() is None:
                driver.kill()
        # mpirun got SIGTERM with its driver (PR_SET_PDEATHSIG) and ended its daemons over ssh
        left = wait_for_no_new_processes(before, grace_s=60)
        on_hosts = [p for p in left if _netns(p.pid) in net.net_ids]
    assert not left, f"left after the driver was killed: {left} (on the hosts: {on_hosts})"
