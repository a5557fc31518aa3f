"""The SLURM paths against a real SLURM 22.05 cluster of two nodes (tests/slurm.py): srun, salloc,
sbatch and scancel for real, Horovod over ``srun --mpi=pmix``. The fake-command tests in
test_slurm.py keep the golden files of the rendered argv and sbatch text."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

import explorer.driver as driver_mod
from devsupport.slurm_cluster import SlurmCluster, slurm_cluster
from explorer.cli import main as cli_main
from explorer.driver import StudyDriver
from explorer.mcnn.events import read_events
from explorer.outcome import classify
from explorer.progress import ProgressLine
from explorer.record import Outcome
from explorer.study import StudySettings
from launchers import JobState, Resources, SlurmLauncher
from launchers.hosts import hosts_from_slurm
from tests.slurm import require_slurm
from tests.spaces import write_space, write_trial_config

pytestmark = [pytest.mark.slow, pytest.mark.mpi]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    require_slurm(nodes=2)
    with slurm_cluster(nodes=2) as c:
        yield c


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line holds ``text`` (the nodes share this machine's pid space)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(int(entry.name))
    return found


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def _study_in_allocation(cluster: SlurmCluster, synth_tree: Path, tmp_path: Path,
                         *launcher: str) -> list[optuna.trial.FrozenTrial]:
    """``salloc -N2 --exclusive mcnn-explore study launch ...`` of two 1-node trials."""
    space = write_space(tmp_path / "space.yaml", name="slurm", epochs=2, ranks=(1,))
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'ml.db'}"
    launch = [sys.executable, "-m", "explorer.cli", "study", "launch", *launcher,
              "--space", str(space), "--data", str(synth_tree), "--study", "s",
              "--storage", storage, "--tracking-uri", tracking, "--trials", "2",
              "--target-accuracy", "0.99", "--trial-timeout", "300", "--seed", "0",
              "--workdir", str(tmp_path / "runs")]
    env = {**cluster.env, "MCNN_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(["salloc", "-N2", "--exclusive", *launch], env=env, cwd=tmp_path,  # noqa: S603 - argv list
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    study = optuna.load_study(study_name="s", storage=storage)
    # each node's hardware was read on the node (srun, or mpirun through SLURM) and cached
    assert "host_hardware" in study.user_attrs, done.stdout[-3000:] + done.stderr[-2000:]
    assert set(study.user_attrs["host_hardware"]) == set(cluster.nodes)
    trials = [t for t in study.trials if t.state.is_finished()]
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials), [
        (t.state, t.user_attrs.get("reason")) for t in trials]
    for t in trials:
        events = read_events(Path(t.user_attrs["job"]["workdir"]) / "events.jsonl")
        assert any(e.get("event") == "done" for e in events)
    return trials


def test_a_study_inside_an_allocation_runs_trials_through_srun_on_node_slices(
        cluster, synth_tree, tmp_path):
    trials = _study_in_allocation(cluster, synth_tree, tmp_path, "--launcher", "slurm")
    nodelists = []
    for t in trials:
        argv = t.user_attrs["argv"]
        assert argv[0].endswith("srun") and "--mpi=pmix" in argv
        nodelists += [a.split("=", 1)[1] for a in argv if a.startswith("--nodelist=")]
    # one trial per node of the allocation, each on its own slice
    assert sorted(nodelists) == sorted(cluster.nodes)


def test_the_default_mpirun_launcher_runs_inside_an_allocation(cluster, synth_tree, tmp_path):
    trials = _study_in_allocation(cluster, synth_tree, tmp_path)
    hosts = sorted(t.user_attrs["derived"]["hosts"] for t in trials)
    assert hosts == sorted(cluster.nodes)  # the pool is the allocation's nodes
    assert all(t.user_attrs["argv"][0].endswith("mpirun") for t in trials)


@contextlib.contextmanager
def _allocation(cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A one-node allocation (``salloc --no-shell``) whose variables this process carries, as
    a driver started inside ``salloc`` does; cancelled on exit."""
    granted = cluster.run("salloc", "--no-shell", "-N1", "--exclusive", timeout=60)
    job_id = next((w for w in granted.stderr.split() if w.isdigit()), None)
    assert job_id is not None, f"salloc --no-shell failed: {granted.stderr}"
    try:
        node = cluster.run("squeue", "-h", "-j", job_id, "-o", "%N").stdout.strip()
        for key, value in {**cluster.env, "SLURM_JOB_ID": job_id, "SLURM_JOB_NODELIST": node,
                           "SLURM_JOB_CPUS_PER_NODE": "2"}.items():
            monkeypatch.setenv(key, value)
        yield job_id
    finally:
        cluster.run("scancel", job_id)


@pytest.mark.parametrize("mode", ["sbatch", "srun"])
def test_cancelling_a_job_ends_it_and_leaves_no_process_on_any_node(
        cluster, synth_tree, tmp_path, monkeypatch, mode):
    """sbatch: cancel scancels the batch job; srun (how a pruned trial ends): the step ends."""
    for key, value in cluster.env.items():
        if key.startswith("SLURM_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MCNN_CACHE_DIR", str(tmp_path / "cache"))
    config = write_trial_config(tmp_path / "c.yaml", synth_tree, tmp_path / "cache",
                                max_epochs=200)
    workdir = tmp_path / "run"
    with contextlib.ExitStack() as stack:
        if mode == "srun":
            stack.enter_context(_allocation(cluster, monkeypatch))
        job = SlurmLauncher(mode, grace_s=2.0).launch(
            config, Resources(ranks_per_node=2, threads_per_rank=1, binding="none"),
            workdir=workdir)
        events = workdir / "events.jsonl"
        _wait(lambda: events.is_file() and any(e.get("event") == "start"
                                               for e in read_events(events)), 240,
              "the ranks to start")
        assert _processes_mentioning(str(config)), "the job is not running"
        assert job.cancel() is JobState.CANCELLED
        _wait(lambda: not _processes_mentioning(str(config)), 60, "the ranks to end")
    _wait(lambda: cluster.run("squeue", "-h").stdout.strip() == "", 60, "an empty queue")


def test_a_node_drained_mid_study_gets_no_new_trial_and_status_says_so(cluster, synth_tree,
                                                                       tmp_path):
    space = write_space(tmp_path / "space.yaml", name="drain", epochs=2, ranks=(1,))
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'ml.db'}"
    env = {**cluster.env, "MCNN_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "explorer.cli", "study"]
    urls = ["--storage", storage, "--tracking-uri", tracking]
    proc = subprocess.Popen(  # noqa: S603 - argv list
        ["salloc", "-N2", "--exclusive", *cli, "launch", "--launcher", "slurm", "--space",
         str(space), "--data", str(synth_tree), "--study", "d", *urls, "--trials", "3",
         "--target-accuracy", "0.99", "--trial-timeout", "300", "--seed", "0", "--workdir",
         str(tmp_path / "runs")], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    drained = None
    try:
        def running() -> list[optuna.trial.FrozenTrial]:
            try:
                study = optuna.load_study(study_name="d", storage=storage)
            except KeyError:  # not created yet
                return []
            return [t for t in study.trials if t.state.name == "RUNNING"
                    and "derived" in t.user_attrs and "argv" in t.user_attrs]

        _wait(lambda: len(running()) == 2, 180, "two trials running")
        drained = running()[0].user_attrs["derived"]["hosts"]
        assert cluster.run("scontrol", "update", f"nodename={drained}", "state=drain",
                           "reason=test").returncode == 0
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    finally:
        if proc.poll() is None:  # SIGTERM: salloc releases its allocation and ends the driver
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        cluster.run("scancel", "--user=root")
        if drained:
            cluster.run("scontrol", "update", f"nodename={drained}", "state=resume")
    assert f"host {drained} excluded (SLURM node state drain" in out
    study = optuna.load_study(study_name="d", storage=storage)
    trials = sorted((t for t in study.trials if t.state.is_finished()), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # the running one finished
    assert trials[2].user_attrs["derived"]["hosts"] != drained
    status = subprocess.run([*cli, "status", "--study", "d", *urls], env=env, cwd=tmp_path,  # noqa: S603 - argv list
                            capture_output=True, text=True, timeout=120, check=True).stdout
    assert f"host {drained} excluded: SLURM node state drain" in status


def test_a_job_ended_by_slurms_time_limit_is_recorded_as_a_timeout(cluster, synth_tree,
                                                                   tmp_path, monkeypatch):
    for key, value in cluster.env.items():
        if key.startswith("SLURM_"):
            monkeypatch.setenv(key, value)
    config = write_trial_config(tmp_path / "c.yaml", synth_tree, tmp_path / "cache",
                                max_epochs=500)
    job = SlurmLauncher("sbatch", grace_s=2.0).launch(
        config, Resources(ranks_per_node=1, threads_per_rank=1, binding="none"),
        workdir=tmp_path / "run", time_limit_s=60)
    job.wait(300)
    outcome = classify(read_events(tmp_path / "run" / "events.jsonl"), job, pruned=False,
                       nodes=1, wall_s=60.0)
    assert outcome.state is Outcome.FAILED, outcome
    # SLURM names the step (srun inside the batch script) or the job, whichever it ended
    assert outcome.reason.startswith("timeout: SLURM's time limit ended "), job.log_tail()


def test_under_srun_a_failing_trial_fails_and_the_exported_best_runs_under_sbatch(
        cluster, synth_tree, tmp_path, monkeypatch):
    """A study inside an allocation (its driver in this process): the first trial's rank 1
    raises, the second completes; then ``study export --format sbatch`` of the best, submitted
    with real ``sbatch``, runs and writes its events."""
    monkeypatch.setenv("MCNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/o.db"
    with _allocation(cluster, monkeypatch):
        real = driver_mod.build_plan
        planned = iter([{"fault": {"kind": "raise", "rank": 1, "at_step": 3}}])

        def plan_with_fault(*args: Any, **kwargs: Any) -> Any:  # trial 0: rank 1 raises
            kwargs["overrides"] = {**kwargs.get("overrides", {}), **next(planned, {})}
            return real(*args, **kwargs)

        monkeypatch.setattr(driver_mod, "build_plan", plan_with_fault)
        space = write_space(tmp_path / "space.yaml", name="fail", epochs=1, ranks=(2,),
                            base={"progress_every_s": 1})
        settings = StudySettings(
            space=space, data_root=synth_tree, study="f", storage=storage,
            tracking_uri=f"sqlite:///{tmp_path}/m.db", workdir=tmp_path / "runs",
            hosts=hosts_from_slurm(), trials=2, target_accuracy=0.99, pruner="none",
            trial_timeout_s=240.0)
        with open(os.devnull, "w") as sink:
            study = StudyDriver(settings, SlurmLauncher("srun", grace_s=3),
                                progress=ProgressLine(2, stream=sink)).run()
    t0, t1 = study.get_trials(deepcopy=False)
    assert t0.state is optuna.trial.TrialState.FAIL, t0.user_attrs.get("reason")
    assert "injected fault on rank 1 at step 3" in t0.user_attrs["reason"]
    assert t1.state is optuna.trial.TrialState.COMPLETE  # the study went on
    assert all(t.user_attrs["argv"][0].endswith("srun") for t in (t0, t1))
    _wait(lambda: not _processes_mentioning(str(tmp_path / "runs")), 60, "no rank left")

    script = tmp_path / "best.sbatch"
    assert cli_main(["study", "export", "--study", "f", "--storage", storage, "--format",
                     "sbatch", "--out", str(script)]) == 0
    assert script.read_text().startswith("#!") and "srun" in script.read_text()
    submitted = cluster.run("sbatch", "--parsable", str(script), timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    _wait(lambda: cluster.run("squeue", "-h", "-j", job_id).stdout.strip() == "", 300,
          f"job {job_id} to finish")
    events = read_events(tmp_path / "events.jsonl")  # beside the config the script runs
    assert any(e.get("event") == "done" for e in events), events[-3:]
