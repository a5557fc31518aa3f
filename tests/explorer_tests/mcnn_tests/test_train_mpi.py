"""Real ``mpirun -np 2`` Horovod training on a tiny synthetic tree."""

from __future__ import annotations

import pytest

from explorer.mcnn.events import KINDS, read_events
from launchers import JobState, MpirunLauncher, Resources, session_pids
from tests.conftest import requires_mpi
from tests.spaces import write_trial_config

pytestmark = [pytest.mark.slow, pytest.mark.mpi, requires_mpi]


def _config(tmp_path, root, **over):
    return write_trial_config(tmp_path / "trial.yaml", root, tmp_path / "cache", **over)


def _run(tmp_path, root, timeout=600, **over):
    job = MpirunLauncher(grace_s=3).launch(
        _config(tmp_path, root, **over),
        Resources(ranks_per_node=2, threads_per_rank=1, binding="core", timeout_s=timeout),
        workdir=tmp_path / "run")
    state = job.wait(timeout + 30)
    assert job.events_path is not None
    return job, state, read_events(job.events_path)


def test_two_rank_training_learns_and_keeps_replicas_identical(tmp_path, synth_tree):
    # evaluated on a moving average of the weights: each rank keeps its own, training goes on
    # from the raw weights, which stay identical across ranks
    job, state, events = _run(tmp_path, synth_tree, optimizer={"ema_epochs": 0.5})
    assert state is JobState.COMPLETED, job.log_tail()
    kinds = [e["event"] for e in events]
    assert set(kinds) <= set(KINDS)  # every line parsed as a known event (no "corrupt")
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 12
    start, done = events[0], events[-1]
    assert start["world_size"] == 2 and start["startup_s"] > 0
    assert len(done["replica_fingerprints"]) == 2
    assert done["replica_divergence"] == 0.0
    # every rank's peak RSS (a TF process is hundreds of MiB), and the largest of them
    assert len(done["rank_peak_rss_mib"]) == 2 and min(done["rank_peak_rss_mib"]) > 200
    assert done["peak_rss_mib"] == max(done["rank_peak_rss_mib"])
    chance = 1.0 / len(start["classes"])
    assert done["best_val_accuracy"] >= chance + 0.12, [e.get("val_accuracy") for e in events]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 13))
    assert all(e["images_seen"] == e["step"] * 16 for e in epochs)
    assert session_pids(job.pid) == []


def test_target_accuracy_stops_early_with_tta(tmp_path, synth_tree):
    # in float32 with bf16 math: the job lets oneDNN compute in bf16 before TensorFlow loads
    job, state, events = _run(tmp_path, synth_tree, target_accuracy=0.05, max_epochs=5,
                              precision="float32_bf16math")
    assert state is JobState.COMPLETED, job.log_tail()
    assert events[0]["onednn_fpmath"] == "BF16"
    reached = [e for e in events if e["event"] == "target_reached"]
    assert len(reached) == 1 and reached[0]["epoch"] == 1
    assert reached[0]["tta_wall_s"] == pytest.approx(reached[0]["tta_s"] + reached[0]["startup_s"])
    assert events[-1]["reason"] == "target_reached"


def test_nan_loss_fails_every_rank(tmp_path, synth_tree):
    job, state, events = _run(tmp_path, synth_tree, fault={"kind": "nan", "rank": 0, "at_step": 3})
    assert state is JobState.FAILED and job.returncode != 0
    failed = [e for e in events if e["event"] == "failed"]
    # every rank sees the NaN (allreduced loss); each that gets its line out before mpirun ends
    # the job reports it once
    assert failed and {f["reason"] for f in failed} == {"nan_loss"}
    ranks = [f["rank"] for f in failed]
    assert len(ranks) == len(set(ranks)) and set(ranks) <= {0, 1}
    assert job.returncode == 3
    assert session_pids(job.pid) == []


def test_exception_on_one_rank_does_not_hang_the_other(tmp_path, synth_tree):
    job, state, events = _run(tmp_path, synth_tree, timeout=120,
                              fault={"kind": "raise", "rank": 1, "at_step": 2})
    assert state is JobState.FAILED, job.log_tail()
    failed = [e for e in events if e["event"] == "failed"]
    assert failed and failed[0]["rank"] == 1 and "injected fault" in failed[0]["detail"]
    assert session_pids(job.pid) == []


def test_local_launcher_runs_one_process_without_mpi(tmp_path, synth_tree):
    from launchers import LocalLauncher

    # evaluated twice an epoch: the evaluation time stays on the clock
    job = LocalLauncher().launch(_config(tmp_path, synth_tree, max_epochs=1, comm="local",
                                         eval_every_epochs=0.5),
                                 Resources(timeout_s=300), workdir=tmp_path / "local")
    assert job.wait(330) is JobState.COMPLETED, job.log_tail()
    assert job.events_path is not None
    events = read_events(job.events_path)
    assert events[0]["world_size"] == 1 and events[-1]["event"] == "done"
    evals = [e for e in events if e["event"] == "epoch"]
    # half an epoch, to the nearest update (19 updates an epoch here: 10 of them)
    assert [e["eval"] for e in evals] == [1, 2] and evals[1]["epoch"] == 1
    assert evals[0]["epoch"] == pytest.approx(0.5, abs=0.05)
    assert all(e["val_accuracy"] is not None and e["eval_s"] > 0 for e in evals)
    assert evals[1]["elapsed_s"] > evals[0]["elapsed_s"] + evals[1]["eval_s"]
