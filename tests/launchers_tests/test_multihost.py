"""A real 2-host x 1-rank Horovod job through ``MpirunLauncher``, the hosts being network
namespaces joined by a bridge (devsupport/netns.py): the ranks talk over TCP between hosts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devsupport.netns import leftovers, netns_available, netns_hosts, remove_stale
from explorer.mcnn.events import KINDS, read_events
from launchers import JobState, MpirunLauncher, Resources, session_pids
from tests.conftest import requires_mpi
from tests.spaces import write_trial_config

_REASON = netns_available()

pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"no netns hosts: {_REASON}")


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (mpirun and orted name the agent)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.mark.slow
@pytest.mark.mpi
@requires_mpi
def test_two_hosts_one_rank_each_train_in_sync_over_tcp(tmp_path, synth_tree):
    config = write_trial_config(tmp_path / "trial.yaml", synth_tree, tmp_path / "cache",
                                max_epochs=2)
    job = None
    with netns_hosts(2) as net:
        tag, workdir = net.tag, str(net.workdir)
        resources = Resources(hosts=net.hosts, ranks_per_node=1, threads_per_rank=1,
                              binding="none", mca=net.mca, timeout_s=240)
        try:
            job = MpirunLauncher(grace_s=3).launch(config, resources, workdir=tmp_path / "run")
            # the explorer's own argv: -H host:1,host:1 plus the netns mca settings
            assert ["-H", ",".join(f"{h}:1" for h in net.hosts)] == job.argv[3:5]
            state = job.wait(270)
            traffic = net.link_bytes()
            calls = net.agent_calls()
        finally:
            if job is not None:
                job.cancel()
    assert state is JobState.COMPLETED, job.log_tail()
    assert job.events_path is not None
    events = read_events(job.events_path)
    kinds = [e["event"] for e in events]
    assert set(kinds) <= set(KINDS) and kinds[0] == "start" and kinds[-1] == "done", kinds
    start, done = events[0], events[-1]
    assert start["world_size"] == 2
    # each rank's host name is set only inside its host's namespace (by the agent), so rank r
    # ran in namespace r; the agent log (written inside) shows two distinct network namespaces
    assert start["hosts"] == list(net.namespaces)
    assert sorted(c[:2] for c in calls) == sorted(zip(net.hosts, net.namespaces, strict=True))
    assert len({c[2] for c in calls}) == 2
    assert Path("/proc/self/ns/net").readlink().name not in {c[2] for c in calls}
    # Horovod's allreduce crossed the bridge: replicas identical, and each host moved far more
    # than Open MPI's launch/control traffic (a few tens of KB) in both directions
    assert len(done["replica_fingerprints"]) == 2 and done["replica_divergence"] == 0.0
    assert done["steps"] >= 2
    assert all(rx > 1_000_000 and tx > 1_000_000 for rx, tx in traffic), traffic
    # torn down: nothing named after this run, no mpirun/orted left
    assert leftovers(tag) == []
    assert session_pids(job.pid) == []
    assert _processes_mentioning(workdir) == []


def test_teardown_on_error_and_stale_leftovers_are_removed():
    with pytest.raises(KeyError), netns_hosts(2) as net:
        assert net.hostfile.read_text().split() == [net.hosts[0], "slots=1",
                                                    net.hosts[1], "slots=1"]
        assert len(leftovers(net.tag)) == 2 + 2 + 1 + 1  # namespaces, veths, bridge, dir
        raise KeyError("boom")
    assert leftovers(net.tag) == []
    # a "crashed" run: exits without tearing down, leaving everything under its (dead) pid
    code = ("import os; from devsupport.netns import netns_hosts\n"
            "ctx = netns_hosts(1); net = ctx.__enter__(); print(net.tag, flush=True); os._exit(0)")
    argv = [sys.executable, "-c", code]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60,  # noqa: S603
                         check=True, cwd=Path(__file__).resolve().parents[2])
    stale = out.stdout.strip()
    assert len(leftovers(stale)) == 1 + 1 + 1 + 1
    assert stale in remove_stale()
    assert leftovers(stale) == []
