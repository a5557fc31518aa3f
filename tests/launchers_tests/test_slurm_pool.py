"""A study inside a (fake) SLURM allocation of two nodes: hosts come from the compressed
``SLURM_JOB_NODELIST``, two trials run at once under ``srun --nodelist`` on disjoint nodes, and
their recorded ``srun`` argv match the golden file. ``srun`` is the recording fake (no SLURM
here); the training job it runs is real (one rank per trial)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest

from explorer.cli import main
from tests.launchers_tests.test_slurm import check_golden
from tests.launchers_tests.test_slurm import fake_slurm as fake_slurm
from tests.spaces import write_space

pytestmark = [pytest.mark.slow]


def test_study_in_an_allocation_runs_trials_on_disjoint_nodes(fake_slurm, synth_tree,
                                                              study_env, monkeypatch):
    tmp_path = study_env
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cn[07-08]")
    monkeypatch.setenv("SLURM_JOB_CPUS_PER_NODE", "2(x2)")
    space = write_space(tmp_path / "space.yaml", name="slurm-pool", ranks=(1,),
                        base={"comm": "local"})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert main(["study", "launch", "--space", str(space), "--data", str(synth_tree),
                 "--study", "sp", "--storage", storage, "--tracking-uri",
                 f"sqlite:///{tmp_path / 'mlflow.db'}", "--trials", "2", "--seed", "0",
                 "--target-accuracy", "0.99", "--trial-timeout", "300", "--pruner", "none",
                 "--launcher", "slurm", "--srun-mpi", "pmi2"]) == 0
    trials = optuna.load_study(study_name="sp", storage=storage).trials
    assert [t.user_attrs["state"] for t in trials] == ["COMPLETED", "COMPLETED"]
    every = fake_slurm.calls("srun")
    # srun reads the nodes' hardware (python -m mcnn_base.cpu): the fake runs it once, without
    # SLURM's task variables, so its record names no node and the probe is tried once more
    assert sum("mcnn_base.cpu" in c["argv"] for c in every) == 2
    # one srun per trial trains
    calls = [c for c in every if "explorer.mcnn.train" in c["argv"]]
    assert len(calls) == 2
    # the two trials overlapped in time, each on its own node of the allocation
    spans = []
    for t in trials:
        events = [json.loads(x) for x in
                  Path(t.user_attrs["job"]["workdir"], "events.jsonl").read_text().splitlines()]
        spans.append((events[0]["time"], events[-1]["time"]))
    (s0, e0), (s1, e1) = spans
    assert s1 < e0 and s0 < e1, "the two trials did not run at once"
    assert sorted(t.user_attrs["derived"]["hosts"] for t in trials) == ["cn07", "cn08"]
    normalized = []
    for call in sorted(calls, key=lambda c: c["argv"][-3]):  # by --config path: trial order
        argv = [a.replace(str(tmp_path), "TMP").replace(sys.executable, "PYTHON")
                for a in call["argv"]]
        argv[0] = "srun"
        normalized.append("\n".join(argv))
    check_golden("srun_pool_two_trials.txt", "\n--\n".join(normalized) + "\n")
