"""A study on a pool of two "hosts" (network namespaces, devsupport/netns.py) runs two trials at
once on disjoint hosts, gives hosts back when trials end, runs a 2-node trial across both, and
records a trial needing more nodes than the pool has as infeasible instead of queueing it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from devsupport.netns import netns_available, netns_hosts
from explorer.cli import main
from mcnn_base.cpu import isa_flags
from tests.conftest import requires_mpi
from tests.faults.conftest import no_orphans as no_orphans
from tests.faults.conftest import wait_for_no_new_processes
from tests.spaces import write_space

_REASON = netns_available()
pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi,
              pytest.mark.skipif(_REASON is not None, reason=f"no netns hosts: {_REASON}")]


def _span(folder: str) -> tuple[float, float, list[str]]:
    events = [json.loads(x) for x in Path(folder, "events.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    done = next(e for e in events if e["event"] == "done")
    return start["time"], done["time"], list(start["hosts"])


def test_pool_runs_trials_at_once_on_disjoint_hosts(synth_tree, study_env, no_orphans):
    tmp_path = study_env
    space = write_space(tmp_path / "space.yaml", name="pool", ranks=(1,), nodes=(1, 3))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="pool", storage=storage)
    for nodes in (1, 1, 3, 2):  # two at once, one too big for the pool, one across both hosts
        study.enqueue_trial({"nodes": nodes, "peak_lr": 0.02})
    with netns_hosts(2) as net:
        mca = [arg for key, value in net.mca.items() for arg in ("--mca", f"{key}={value}")]
        code = main(["study", "launch", "--space", str(space), "--data", str(synth_tree),
                     "--study", "pool", "--storage", storage, "--tracking-uri",
                     f"sqlite:///{tmp_path / 'mlflow.db'}", "--trials", "3",
                     "--target-accuracy", "0.99", "--trial-timeout", "300", "--pruner", "none",
                     "--hosts", str(net.hostfile), *mca])
        assert code == 0
        assert not wait_for_no_new_processes([], tag=no_orphans), "orphan processes"
        namespaces = dict(zip(net.hosts, net.namespaces, strict=True))
    loaded = optuna.load_study(study_name="pool", storage=storage)
    # each host's hardware was read there, through mpirun and the rsh agent, and cached
    hardware = loaded.user_attrs["host_hardware"]
    assert set(hardware) == set(net.hosts)
    assert all(h["isa"] == list(isa_flags() or []) and h["memory_gib"] for h in hardware.values())
    trials = loaded.trials
    assert [t.params["nodes"] for t in trials] == [1, 1, 3, 2]
    big = trials[2]
    assert big.user_attrs["state"] == "INFEASIBLE" and "nodes = 3 > 2" in big.user_attrs["reason"]
    ran = [t for t in trials if t.user_attrs.get("state") == "COMPLETED"]
    assert [t.number for t in ran] == [0, 1, 3]
    spans = {t.number: _span(t.user_attrs["job"]["workdir"]) for t in ran}
    # trials 0 and 1 ran at the same time, each on its own host
    (s0, e0, h0), (s1, e1, h1), (s3, _, h3) = spans[0], spans[1], spans[3]
    assert s1 < e0 and s0 < e1, "trials 0 and 1 did not overlap"
    assert len(h0) == len(h1) == 1 and h0 != h1
    assert set(h0 + h1) == set(namespaces.values())
    # the 2-node trial waited for both hosts to be released, then spanned them
    assert s3 > max(e0, e1) and sorted(h3) == sorted(namespaces.values())
    assert trials[3].user_attrs["derived"]["hosts"] == ",".join(net.hosts)
