"""The study loop on a FakeLauncher and a simulated clock: scripted jobs, real Optuna and MLflow
stores, no TensorFlow and no MPI. Pruning, stalls, failures, timeouts, the host pool and
concurrent trials, each in well under a second of loop time."""

from __future__ import annotations

import importlib.util
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage

import explorer.study as study_mod
from devsupport.fake_launcher import FakeLauncher, Script, epochs
from explorer.clock import ManualClock
from explorer.driver import StudyDriver
from explorer.progress import ProgressLine
from explorer.record import Outcome, TrialRecord, records
from explorer.study import StudySettings, spent_node_s
from launchers.base import JobState
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError, LaunchError
from search_spaces.space import load_space
from tests.spaces import write_space

N_TRAIN = 200


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module (its schema is created once); a study per test."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


_names: Iterator[int] = itertools.count()


def _driver(tmp_path: Path, tracking: str, launcher: FakeLauncher, clock: ManualClock, *,
            hosts: list[HostInfo] | None = None, ranks: tuple[int, ...] = (1,),
            base: dict[str, Any] | None = None, node_probe: Any = None, log: Any = None,
            nodes: tuple[int, int] | None = None, **settings: Any) -> StudyDriver:
    tmp_path.mkdir(parents=True, exist_ok=True)
    space = write_space(tmp_path / "space.yaml", epochs=4, ranks=ranks, batches=(8,), base=base,
                        nodes=nodes)
    s = StudySettings(space=space, data_root=tmp_path,
                      storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=tracking,
                      workdir=tmp_path / "runs", hosts=hosts or [HostInfo("localhost", 2)],
                      target_accuracy=0.8, **{"pruner": "none", "seed": 0,
                                              "study": f"loop{next(_names)}", **settings})
    return StudyDriver(s, launcher, clock=clock, progress=ProgressLine(s.trials, io.StringIO()),
                       prepare=lambda base, settings, log: N_TRAIN, node_probe=node_probe,
                       log=log)


def _by_number(study: optuna.Study) -> dict[int, TrialRecord]:
    return {r.number: r for r in records(study)}


def test_trials_complete_miss_and_fail_with_their_reasons(tmp_path, tracking):
    clock = ManualClock(1_000_000.0)
    killed = ("mpirun noticed that process rank 1 with PID 77 on node h1 exited on signal 9 "
              "(Killed).")
    launcher = FakeLauncher(clock, [
        epochs([0.5, 0.7, 0.85], target=0.8),                       # reaches the target
        epochs([0.3, 0.4, 0.5, 0.6]),                               # misses it
        epochs([0.3], done=False, returncode=3),                    # NaN exit code, no event
        Script([(1.0, {"event": "start"})], exit_after_s=5.0, returncode=137, log=killed),
    ])
    study = _driver(tmp_path, tracking, launcher, clock, trials=4).run()
    r = _by_number(study)
    assert [r[i].state for i in range(4)] == [Outcome.COMPLETED, Outcome.COMPLETED,
                                              Outcome.FAILED, Outcome.FAILED]
    assert r[0].tta_s == pytest.approx(30.0) and r[0].reason == "target_reached"
    assert r[1].tta_s is None and r[1].best_val_accuracy == pytest.approx(0.6)
    assert study.trials[1].values[0] == pytest.approx(1e6 * (2 - 0.6))  # a miss ranks last
    assert r[2].reason == "nan_loss (exit code 3, no failed event)"
    assert r[3].reason == "rank 1 on h1 was killed by signal 9 (Killed); mpirun ended the job"
    assert r[3].log_tail and "exited on signal 9" in r[3].log_tail
    # wall seconds are the loop's clock, not the machine's: scripted time plus poll steps
    assert r[0].wall_s == pytest.approx(32.1, abs=1.0)
    assert r[0].median_images_per_sec == 100.0 and r[0].epochs == 3
    # the same record in MLflow: a child run per trial with its state, reason and metrics
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(study.study_name)
    assert exp is not None
    runs = {int(run.data.tags["optuna.trial"]): run
            for run in client.search_runs([exp.experiment_id], "tags.`mcnn.role` = 'trial'")}
    assert sorted(runs) == [0, 1, 2, 3]
    assert runs[0].info.status == "FINISHED" and runs[0].data.metrics["tta_s"] == 30.0
    assert runs[2].info.status == "FAILED" and runs[2].data.tags["reason"] == r[2].reason
    assert runs[0].info.run_id == r[0].mlflow_run_id
    history = client.get_metric_history(runs[1].info.run_id, "val_accuracy")
    assert [m.value for m in history] == [0.3, 0.4, 0.5, 0.6]


def test_a_pruned_trial_is_cancelled_at_the_epoch_the_pruner_says(tmp_path, tracking,
                                                                   monkeypatch):
    monkeypatch.setattr(study_mod, "make_pruner",
                        lambda name, max_epochs: optuna.pruners.ThresholdPruner(upper=0.75))
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [epochs([0.5, 0.9], target=0.8),
                                    epochs([0.2, 0.9, 0.95], target=0.8)])
    study = _driver(tmp_path, tracking, launcher, clock, trials=2).run()
    r = _by_number(study)
    assert r[1].state is Outcome.PRUNED and r[1].reason == "pruned after epoch 1"
    assert study.trials[1].state is optuna.trial.TrialState.PRUNED
    assert launcher.launched[1][1].state.value == "CANCELLED"  # the whole job was ended
    assert r[0].state is Outcome.COMPLETED


def test_a_silent_job_is_ended_as_stalled_and_a_slow_one_as_timed_out(tmp_path, tracking):
    clock = ManualClock(0.0)
    hung = Script([(1.0, {"event": "start"}), (11.0, {"event": "epoch", "epoch": 1,
                                                      "val_accuracy": 0.2})], hang=True)
    slow = epochs([0.1] * 20, epoch_s=25.0)  # an event every 25 s: never stalled, too slow
    launcher = FakeLauncher(clock, [hung, slow, epochs([0.9], target=0.8)])
    study = _driver(tmp_path, tracking, launcher, clock, trials=3, stall_timeout_s=30.0,
                    trial_timeout_s=300.0).run()
    r = _by_number(study)
    assert r[0].state is Outcome.FAILED
    assert r[0].reason.startswith("stalled: no progress for 3")
    assert "--stall-timeout 30s" in r[0].reason
    assert r[0].wall_s == pytest.approx(11.0 + 30.5, abs=1.0)  # last event + the timeout
    assert r[1].state is Outcome.FAILED and r[1].reason == "timeout"
    assert r[2].state is Outcome.COMPLETED


def test_a_pool_runs_trials_at_once_on_disjoint_slices_and_reuses_freed_ones(tmp_path,
                                                                            tracking):
    clock = ManualClock(0.0)
    pool = [HostInfo("h1", 2), HostInfo("h2", 2)]
    # trial 0 fails fast; 1 runs long; 2 must get trial 0's host while 1 still runs
    launcher = FakeLauncher(clock, [epochs([0.1], done=False, returncode=1),
                                    epochs([0.3, 0.5, 0.7, 0.85], target=0.8),
                                    epochs([0.9], target=0.8)])
    study = _driver(tmp_path, tracking, launcher, clock, trials=3, hosts=pool).run()
    slices = [res.hosts for res, _ in launcher.launched]
    assert slices[0] != slices[1] and {slices[0][0], slices[1][0]} == {"h1", "h2"}
    assert slices[2] == slices[0]  # the failed trial's host was given back
    starts = [job.started for _, job in launcher.launched]
    assert starts[1] - starts[0] < 1.0  # 0 and 1 ran at the same time
    r = _by_number(study)
    assert r[2].end is not None and r[1].end is not None
    assert r[2].hosts == list(slices[2])  # the record tells where it ran
    assert r[1].config["layout"]["hosts"] == list(slices[1])


def test_infeasible_samples_are_recorded_never_launched_and_end_a_hopeless_study(tmp_path,
                                                                                tracking):
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [])
    driver = _driver(tmp_path, tracking, launcher, clock, trials=2, ranks=(4,),
                     max_infeasible_in_a_row=3)
    with pytest.raises(ConfigError, match="3 samples in a row were infeasible"):
        driver.run()
    assert launcher.launched == []
    study = optuna.load_study(study_name=driver.s.study, storage=driver.s.storage)
    r = records(study)
    assert [t.state for t in r] == [Outcome.INFEASIBLE] * 3
    assert "ranks_per_node × threads_per_rank = 4×1 = 4 > 2 cores per node" in r[0].reason
    assert all(t.state is optuna.trial.TrialState.PRUNED for t in study.trials)


def test_the_compute_budget_and_the_study_timeout_stop_new_trials(tmp_path, tracking):
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [epochs([0.5, 0.6]) for _ in range(5)])
    study = _driver(tmp_path / "b", tracking, launcher, clock, trials=5,
                    budget_node_s=40.0).run()
    # each trial costs ~22 node-s: the second crosses the budget, no third starts
    assert len(study.trials) == 2 and all(r.state is Outcome.COMPLETED for r in records(study))
    clock2 = ManualClock(0.0)
    launcher2 = FakeLauncher(clock2, [epochs([0.5, 0.6]) for _ in range(5)])
    study2 = _driver(tmp_path / "t", tracking, launcher2, clock2, trials=5,
                     timeout_s=30.0).run()
    assert len(study2.trials) == 2  # the second started before 30 s, none after


def test_an_interrupted_loop_cancels_its_jobs_and_records_them_failed(tmp_path, tracking):
    clock = ManualClock(0.0)

    class Interrupt(FakeLauncher):
        def launch(self, config_path: Path, resources: Any, *, workdir: Path, **options: Any):
            if self.launched:
                raise KeyboardInterrupt
            return super().launch(config_path, resources, workdir=workdir)

    launcher = Interrupt(clock, [epochs([0.1] * 10)])
    pool = [HostInfo("h1", 2), HostInfo("h2", 2)]
    driver = _driver(tmp_path, tracking, launcher, clock, trials=3, hosts=pool)
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    assert launcher.launched[0][1].state.value == "CANCELLED"
    study = optuna.load_study(study_name=driver.s.study, storage=driver.s.storage)
    reasons = [r.reason for r in records(study)]
    assert reasons == ["interrupted: the driver was stopped"] * 2
    assert all(t.state is optuna.trial.TrialState.FAIL for t in study.trials)


def test_successive_halving_prunes_on_training_seconds(tmp_path, tracking):
    """The default pruner compares trials at equal training seconds, not equal epochs: a trial
    with short epochs is judged against the same seconds of the others."""
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [
        epochs([0.5, 0.7, 0.9], epoch_s=10.0, target=0.85),  # sets the rungs ("auto")
        epochs([0.5, 0.7, 0.9], epoch_s=10.0, target=0.85),  # climbs them
        epochs([0.2, 0.3, 0.4, 0.5, 0.9], epoch_s=4.0, target=0.85),  # worse at equal seconds
    ])
    study = _driver(tmp_path, tracking, launcher, clock, trials=3, pruner="sh").run()
    r = _by_number(study)
    assert r[0].state is r[1].state is Outcome.COMPLETED
    assert sorted(study.trials[0].intermediate_values) == [10, 20, 30]  # seconds, not epochs
    assert r[2].state is Outcome.PRUNED
    assert launcher.launched[2][1].state.value == "CANCELLED"
    assert max(study.trials[2].intermediate_values) <= 12  # pruned within its first seconds


def test_the_live_line_shows_the_study_clock_and_what_is_left(tmp_path, tracking):
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [epochs([0.5, 0.6]) for _ in range(3)])
    driver = _driver(tmp_path, tracking, launcher, clock, trials=3, budget_node_s=1000.0,
                     timeout_s=600.0)
    driver.run()
    stream = driver.progress.stream
    assert isinstance(stream, io.StringIO)
    lines = [ln for ln in stream.getvalue().splitlines() if "trial 2: epoch 2" in ln]
    assert lines, stream.getvalue()[-2000:]
    # e.g. "| 1m05s elapsed, 65 node-s, 8m55s left, 935 node-s left" (refreshed every 5 s)
    status = lines[-1].split(" | ")[-1]
    elapsed, spent, left, budget = status.split(", ")
    minutes, seconds = elapsed.removesuffix("s elapsed").split("m")
    assert 50 <= 60 * int(minutes) + int(seconds) <= 75
    assert 50 <= int(spent.removesuffix(" node-s")) <= 75
    assert left.endswith("s left") and left.startswith("8m")
    assert int(budget.removesuffix(" node-s left")) == 1000 - int(spent.removesuffix(" node-s"))


def test_confirm_reruns_the_top_configs_with_new_seeds_and_export_picks_by_median(tmp_path,
                                                                                  tracking):
    from explorer import export
    from explorer.confirm import best_group, repeat_attrs, top_trials
    from explorer.speedup import speedup

    clock = ManualClock(0.0)
    # the search: trial 0 (the baseline) 60 s, trial 1 lucky 20 s, trial 2 30 s, trial 3 missed
    launcher = FakeLauncher(clock, [
        epochs([0.5, 0.6, 0.7, 0.8, 0.85, 0.9], target=0.8),
        epochs([0.85], epoch_s=20.0, target=0.8),
        epochs([0.5, 0.85], epoch_s=15.0, target=0.8),
        epochs([0.3, 0.4]),
    ])
    driver = _driver(tmp_path, tracking, launcher, clock, trials=4, baseline="seed")
    study = driver.run()
    trials = records(study)
    single = speedup(trials, "tta_s")
    assert trials[0].baseline and single is not None and single.ratio == pytest.approx(2.0)
    assert "unconfirmed" in single.describe()
    top = top_trials(trials, "tta_s", 2)
    assert [r.number for r in top] == [1, 2]
    with pytest.raises(ConfigError, match="--top must be >= 1"):
        top_trials(trials, "tta_s", 0)
    # repeats: trial 1 was lucky (then 40, 45, 50 s); trial 2 holds (30, 31, 29 s); the
    # baseline repeats at 60 s
    for root in [*top, trials[0]]:
        for i in range(3):
            study.enqueue_trial({}, user_attrs=repeat_attrs(root, 100 + i))
    launcher.scripts = [epochs([0.85], epoch_s=s, target=0.8) for s in (40.0, 45.0, 50.0)]
    launcher.scripts += [epochs([0.85], epoch_s=s, target=0.8) for s in (30.0, 31.0, 29.0)]
    launcher.scripts += [epochs([0.5, 0.85], epoch_s=30.0, target=0.8) for _ in range(3)]
    confirm = _driver(tmp_path, tracking, launcher, clock, trials=9, only_queued=True)
    confirm.s.study = driver.s.study  # the same study, its queued repeats only
    study = confirm.run()
    trials = records(study)
    repeats = [r for r in trials if r.confirm_of is not None]
    assert len(repeats) == 9 and all(r.state is Outcome.COMPLETED for r in repeats)
    assert {r.config["seed"] for r in repeats if r.confirm_of == 1} == {100, 101, 102}
    assert len(trials) == 13  # nothing was sampled beyond the queue
    chosen = best_group(trials, "tta_s")
    assert chosen is not None and chosen.root.number == 2  # by median, not the lucky run
    assert chosen.median == pytest.approx(30.0) and "over 4 runs" in chosen.describe()
    found = speedup(trials, "tta_s")
    assert found is not None and found.confirmed and found.ratio == pytest.approx(2.0)
    assert "confirmed" in found.describe()
    best, _cfg = export.best_config(study)
    assert best.number == 2
    assert any(line.startswith("confirmed (tta_s): median 30.0 s over 4 runs")
               for line in export._header(study, best))


def test_layout_first_measures_layouts_then_launches_on_the_fastest(tmp_path, tracking):
    """Stage 1 measures every layout for each batch; stage 2 trials run on the fastest one
    for their batch, and the measurements do not use up --trials."""
    clock = ManualClock(0.0)
    # images/s by (ranks, threads, binding, per-node batch): 2x1/core wins at 32, 1x2/none at 16
    speed = {(2, 1, "core", 32): 300.0, (1, 2, "none", 16): 250.0}

    def pick(config: Path, resources: Any) -> Script:
        cfg = yaml.safe_load(config.read_text())
        key = (resources.ranks_per_node, resources.threads_per_rank, resources.binding,
               cfg["per_worker_batch"] * resources.ranks_per_node)
        if cfg.get("eval") is False:  # a stage-1 measurement: two epochs, no evaluation
            rate = speed.get(key, 100.0)
            return Script([(2.0, {"event": "start", "startup_s": 2.0}),
                           *((2.0 + 5 * i, {"event": "epoch", "epoch": i, "images_per_sec": rate,
                                            "val_accuracy": None, "elapsed_s": 5.0 * i})
                             for i in (1, 2)),
                           (12.0, {"event": "done", "reason": "max_epochs", "tta_s": None,
                                   "best_val_accuracy": 0.0})], exit_after_s=12.5)
        return epochs([0.5, 0.9], target=0.8)

    launcher = FakeLauncher(clock, pick=pick)
    path = write_space(tmp_path / "layouts.yaml", epochs=4, ranks=(1, 2), bindings=("none", "core"),
                       batches=(16, 32))
    doc = yaml.safe_load(path.read_text())
    doc["dimensions"]["per_node_batch"] = doc["dimensions"].pop("per_worker_batch")
    doc["dimensions"]["threads_per_rank"] = {"choices": [1, 2]}
    path.write_text(yaml.safe_dump(doc))
    driver = _driver(tmp_path, tracking, launcher, clock, trials=3, strategy="layout-first")
    driver.s.space = path
    driver.space = load_space(path)
    study = driver.run()
    r = records(study)
    stage1 = [t for t in r if t.stage == 1]
    # 2 batches × (1x1, 1x2, 2x1) × 2 bindings = 12 layouts (2x2 does not fit 2 cores)
    assert len(stage1) == 12 and all(t.state is Outcome.MEASURED for t in stage1)
    assert all(t.state.optuna_state is optuna.trial.TrialState.PRUNED for t in stage1)
    stage2 = [t for t in r if t.stage == 2]
    assert len(stage2) == 3 and all(t.state is Outcome.COMPLETED for t in stage2)
    for t in stage2:
        layout = t.config["layout"]
        per_node = t.config["per_worker_batch"] * layout["ranks_per_node"]
        want = (2, 1, "core") if per_node == 32 else (1, 2, "none")
        assert (layout["ranks_per_node"], layout["threads_per_rank"], layout["binding"]) == want
    assert {"ranks_per_node", "threads_per_rank", "binding"}.isdisjoint(stage2[0].params)
    assert spent_node_s(study) > sum(t.node_s for t in stage2)  # stage 1 counts as compute


def test_a_file_baseline_that_differs_from_the_spaces_base_is_said_before_it_runs(tmp_path,
                                                                                   tracking):
    mine = tmp_path / "mine.yaml"  # no max_epochs: the config's default (20), not the base's 4
    mine.write_text("data: {root: /x, image_size: [64, 80]}\nper_worker_batch: 8\n")
    said: list[str] = []
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [epochs([0.85], target=0.8)])
    _driver(tmp_path, tracking, launcher, clock, trials=1, baseline=str(mine),
            log=said.append).run()
    note = [m for m in said if m.startswith(f"note: baseline {mine} runs with its own values")]
    assert len(note) == 1 and "max_epochs 20.0 (base 4)" in note[0], said
    assert "image_size" not in note[0]  # the same as the base's


def test_an_interrupted_baseline_runs_again_on_the_next_launch(tmp_path, tracking):
    clock = ManualClock(0.0)

    class StopDuringFirst(FakeLauncher):
        def launch(self, config_path: Path, resources: Any, *, workdir: Path, **options: Any):
            job = super().launch(config_path, resources, workdir=workdir)
            if len(self.launched) == 1:
                raise KeyboardInterrupt  # Ctrl-C while the baseline starts
            return job

    first = StopDuringFirst(clock, [epochs([0.9], target=0.8) for _ in range(3)])
    driver = _driver(tmp_path, tracking, first, clock, trials=2, baseline="seed")
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    again = _driver(tmp_path, tracking, FakeLauncher(clock, [epochs([0.9], target=0.8)] * 2),
                    clock, trials=2, baseline="seed")
    again.s.study = driver.s.study
    study = again.run()
    r = records(study)
    baselines = [t for t in r if t.baseline]
    assert [t.state for t in baselines] == [Outcome.FAILED, Outcome.COMPLETED]
    assert baselines[0].lost and not baselines[1].lost


def test_a_multi_objective_study_runs_without_pruning(tmp_path, tracking):
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [epochs([0.5, 0.9], target=0.8), epochs([0.4, 0.6])])
    study = _driver(tmp_path, tracking, launcher, clock, trials=2, multi_objective=True,
                    pruner="sh").run()
    assert [t.state for t in records(study)] == [Outcome.COMPLETED, Outcome.COMPLETED]
    assert all(len(t.values) == 2 for t in study.trials)


def test_a_gp_study_without_torch_is_refused_in_one_line_before_anything_is_written(
        tmp_path, tracking, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    clock = ManualClock(0.0)
    with pytest.raises(ConfigError, match=r"--sampler gp needs torch .*pip install torch"):
        _driver(tmp_path, tracking, FakeLauncher(clock, []), clock, sampler="gp")
    assert not (tmp_path / "optuna.db").exists()


def test_bf16_trials_on_a_host_without_bf16_hardware_are_infeasible_unless_allowed(tmp_path,
                                                                                 tracking):
    hosts = [HostInfo("h1", 2, isa=("avx512f",))]  # an AVX-512F-only CPU: bf16 emulated
    bf16 = {"precision": "mixed_bfloat16"}
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [])
    driver = _driver(tmp_path / "a", tracking, launcher, clock, trials=2, hosts=hosts,
                     base=bf16, max_infeasible_in_a_row=2)
    with pytest.raises(ConfigError, match="2 samples in a row were infeasible"):
        driver.run()
    assert launcher.launched == []
    study = optuna.load_study(study_name=driver.s.study, storage=driver.s.storage)
    assert all(r.state is Outcome.INFEASIBLE and "mixed_bfloat16 on h1: no bf16 hardware"
               in r.reason for r in records(study))
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [epochs([0.9], target=0.8)])
    _driver(tmp_path / "b", tracking, launcher, clock, trials=1, hosts=hosts, base=bf16,
            allow_emulated_bf16=True).run()
    assert len(launcher.launched) == 1


def test_a_drained_host_gets_no_new_trial_until_it_is_back(tmp_path, tracking):
    clock = ManualClock(0.0)
    pool = [HostInfo("h1", 2), HostInfo("h2", 2)]
    launcher = FakeLauncher(clock, [epochs([0.3, 0.5, 0.6, 0.85], target=0.8)
                                    for _ in range(3)])
    seen: list[dict[str, str]] = []

    def probe(names: list[str]) -> dict[str, str]:  # drained until two trials have started
        states = {"h2": "drained"} if len(launcher.launched) < 2 else {}
        seen.append(states)
        return states

    study = _driver(tmp_path, tracking, launcher, clock, trials=3, hosts=pool,
                    node_probe=probe).run()
    hosts = [res.hosts for res, _ in launcher.launched]
    assert hosts[:2] == [("h1",), ("h1",)]  # while h2 was drained, one trial after another
    assert hosts[2] == ("h2",)  # back: the next trial took it while h1 was busy
    starts = [job.started for _, job in launcher.launched]
    assert starts[1] >= starts[0] + 40.0 and starts[2] - starts[1] < 15.0
    assert {"h2": "drained"} in seen and study.user_attrs["excluded_hosts"] == {}


def test_a_host_lost_under_a_failed_trial_is_quarantined_for_the_rest_of_the_study(tmp_path,
                                                                                   tracking):
    clock = ManualClock(0.0)
    pool = [HostInfo("h1", 2), HostInfo("h2", 2)]
    cut = Script([(1.0, {"event": "start"})], exit_after_s=30.0, returncode=1,
                 log="ORTE has lost communication with a remote daemon.")
    launcher = FakeLauncher(clock, [epochs([0.3, 0.5, 0.6, 0.85], target=0.8), cut,
                                    *[epochs([0.3, 0.5, 0.6, 0.85], target=0.8)] * 3],
                            dead_hosts={"h2"})
    study = _driver(tmp_path, tracking, launcher, clock, trials=4, hosts=pool).run()
    hosts = [res.hosts for res, _ in launcher.launched]
    assert hosts[:2] == [("h1",), ("h2",)] and all(h == ("h1",) for h in hosts[2:])
    r = _by_number(study)
    failed = [x for x in r.values() if x.state is Outcome.FAILED]
    assert len(failed) == 1
    assert failed[0].reason.startswith("host h2 unreachable (`true` there exited 1)")
    assert "quarantined" in failed[0].reason and "exit code 1" in failed[0].reason
    assert list(study.user_attrs["quarantined_hosts"]) == ["h2"]
    assert sum(x.state is Outcome.COMPLETED for x in r.values()) == 3  # h1 kept working
    # a resumed study keeps the quarantine
    again = FakeLauncher(clock, [epochs([0.9], target=0.8)] * 2)
    _driver(tmp_path, tracking, again, clock, trials=6, hosts=pool, study=study.study_name).run()
    assert len(again.launched) == 2 and all(res.hosts == ("h1",) for res, _ in again.launched)


def test_a_trial_at_its_target_or_last_evaluation_is_never_pruned(tmp_path, tracking,
                                                                   monkeypatch):
    # a pruner that prunes whenever it is asked: the loop must not ask at the target (the job
    # is ending with its TTA) nor at the last evaluation (it is ending with its result)
    monkeypatch.setattr(study_mod, "make_pruner",
                        lambda name, max_epochs: optuna.pruners.ThresholdPruner(upper=0.0))
    clock = ManualClock(0.0)
    last_only = Script([(2.0, {"event": "start", "startup_s": 2.0}),
                        (12.0, {"event": "epoch", "epoch": 4, "val_accuracy": 0.5,
                                "elapsed_s": 10.0, "images_per_sec": 100.0}),
                        (12.0, {"event": "done", "reason": "max_epochs", "tta_s": None,
                                "best_val_accuracy": 0.5, "startup_s": 2.0})],
                       exit_after_s=12.1)
    launcher = FakeLauncher(clock, [epochs([0.9], target=0.8), epochs([0.5, 0.6, 0.7, 0.75]),
                                    last_only])
    study = _driver(tmp_path, tracking, launcher, clock, trials=3).run()
    r = _by_number(study)
    assert r[0].state is Outcome.COMPLETED and r[0].tta_s is not None  # at its target
    assert r[1].state is Outcome.PRUNED and r[1].reason == "pruned after epoch 1"
    assert r[2].state is Outcome.COMPLETED and r[2].tta_s is None  # its last evaluation


def test_a_trial_waiting_for_nodes_that_never_come_ends_with_the_study(tmp_path, tracking):
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [])
    study = _driver(tmp_path, tracking, launcher, clock, trials=2, timeout_s=60.0,
                    hosts=[HostInfo("h1", 2)], node_probe=lambda names: {"h1": "drained"}).run()
    assert launcher.launched == []
    (only,) = records(study)
    assert only.state is Outcome.FAILED
    assert only.reason.startswith("no free node before the study ended (study timeout")


def _storage_down(monkeypatch: pytest.MonkeyPatch, clock: ManualClock,
                  window: tuple[float, float]) -> None:
    """Every Optuna storage call fails as a restarting database server's would, while the
    simulated clock is inside ``window``."""
    for name in ("set_trial_user_attr", "set_trial_state_values", "create_new_trial",
                 "get_all_trials", "set_trial_intermediate_value", "get_trial",
                 "set_study_user_attr"):
        real = getattr(RDBStorage, name)

        def broken(self: RDBStorage, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if window[0] <= clock.now() < window[1]:
                raise sqlalchemy.exc.OperationalError(
                    "SELECT 1", {}, Exception("server closed the connection unexpectedly"))
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(RDBStorage, name, broken)


def test_the_loop_rides_out_a_storage_outage_and_loses_no_trial(tmp_path, tracking,
                                                                monkeypatch):
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [epochs([0.3, 0.5, 0.6, 0.85], target=0.8)
                                    for _ in range(3)])
    said: list[str] = []
    driver = _driver(tmp_path, tracking, launcher, clock, trials=3, log=said.append)
    _storage_down(monkeypatch, clock, (30.0, 95.0))  # trial 0 ends (42 s) while it is down
    study = driver.run()
    monkeypatch.undo()
    r = _by_number(study)
    assert [x.state for x in r.values()] == [Outcome.COMPLETED] * 3, [
        (x.number, x.reason) for x in r.values()]
    assert r[0].tta_s == 40.0  # its outcome was kept until it could be recorded
    assert len(launcher.launched) == 3  # no trial run twice
    assert any("does not answer" in m for m in said) and any("answers again" in m for m in said)
    assert launcher.launched[1][1].started >= 95.0  # nothing new started while it was down


def test_a_baseline_caught_by_an_outage_as_it_starts_is_failed_ended_and_run_again(
        tmp_path, tracking, monkeypatch):
    clock = ManualClock(0.0)
    window = [float("inf"), float("inf")]

    class OutageAtFirstLaunch(FakeLauncher):
        def launch(self, config_path: Path, resources: Any, *, workdir: Path, **options: Any):
            job = super().launch(config_path, resources, workdir=workdir)
            if len(self.launched) == 1:  # the storage goes away as the baseline starts
                window[:] = [clock.now(), clock.now() + 20.0]
            return job

    launcher = OutageAtFirstLaunch(clock, [epochs([0.9], target=0.8) for _ in range(3)])
    said: list[str] = []
    driver = _driver(tmp_path, tracking, launcher, clock, trials=2, baseline="seed",
                     log=said.append)
    _storage_down(monkeypatch, clock, window)  # type: ignore[arg-type]
    study = driver.run()
    monkeypatch.undo()
    r = records(study)
    baselines = [t for t in r if t.baseline]
    assert [t.state for t in baselines] == [Outcome.FAILED, Outcome.COMPLETED], [
        (t.number, t.state, t.reason) for t in r]
    assert "storage went away" in (baselines[0].reason or "")
    assert baselines[1].retry_of == baselines[0].number
    assert launcher.launched[0][1].state is JobState.CANCELLED  # its job was stopped
    assert any(f"trial {baselines[0].number}: queued again" in m for m in said)
    run = MlflowClient(tracking).get_run(baselines[0].mlflow_run_id or "")
    assert run.info.status == "FAILED"


def test_a_storage_gone_for_good_stops_the_trials_in_one_line(tmp_path, tracking, monkeypatch):
    clock = ManualClock(0.0)
    launcher = FakeLauncher(clock, [Script([(2.0, {"event": "start"})], hang=True)])
    driver = _driver(tmp_path, tracking, launcher, clock, trials=1, stall_timeout_s=None)
    _storage_down(monkeypatch, clock, (20.0, 1e9))
    with pytest.raises(LaunchError, match="has not answered for 4m"):
        driver.run()
    assert launcher.launched[0][1].state is JobState.CANCELLED


def test_a_trial_needing_more_hosts_than_quarantine_left_fails_instead_of_waiting(tmp_path,
                                                                                  tracking):
    clock = ManualClock(0.0)
    pool = [HostInfo("h1", 2), HostInfo("h2", 2)]
    cut = Script([(1.0, {"event": "start"})], exit_after_s=30.0, returncode=1)
    launcher = FakeLauncher(clock, [cut], dead_hosts={"h2"})
    driver = _driver(tmp_path, tracking, launcher, clock, trials=2, hosts=pool, nodes=(2, 2))
    study = driver.run()  # (before the fix it waited for a second host forever)
    r = _by_number(study)
    assert r[0].state is Outcome.FAILED and r[0].reason.startswith("host h2 unreachable")
    assert r[1].state is Outcome.FAILED
    assert r[1].reason == "needs 2 node(s); 1 of the pool's 2 are left after quarantine"
    assert len(launcher.launched) == 1
