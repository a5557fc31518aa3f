from __future__ import annotations

import pytest

from explorer.objective import MISS_BASE, TrialOutcome, intermediate_value, objective_values
from explorer.outcome import outcome_from_events, slurm_time_limit
from explorer.record import Outcome
from launchers.base import JobState


def test_hits_rank_before_misses_and_misses_by_accuracy():
    fast = TrialOutcome(Outcome.COMPLETED, "target_reached", tta_s=30.0, best_val_accuracy=0.9)
    slow = TrialOutcome(Outcome.COMPLETED, "target_reached", tta_s=50_000.0, best_val_accuracy=0.91)
    good_miss = TrialOutcome(Outcome.COMPLETED, "max_epochs", best_val_accuracy=0.8)
    bad_miss = TrialOutcome(Outcome.COMPLETED, "max_epochs", best_val_accuracy=0.2)
    ranked = sorted([bad_miss, slow, good_miss, fast], key=lambda o: objective_values(o)[0])
    assert ranked == [fast, slow, good_miss, bad_miss]
    assert objective_values(fast) == [30.0]
    assert objective_values(good_miss)[0] == pytest.approx(MISS_BASE * 1.2)


def test_wall_objective_adds_startup_and_multi_objective_adds_node_hours():
    o = TrialOutcome(Outcome.COMPLETED, "target_reached", tta_s=30.0, startup_s=5.0, wall_s=7200.0,
                     nodes=2)
    assert objective_values(o, objective="tta_wall_s") == [35.0]
    assert objective_values(o, multi_objective=True) == [30.0, 4.0]
    with pytest.raises(ValueError, match="objective"):
        objective_values(o, objective="speed")


def test_intermediate_value_is_the_validation_error():
    assert intermediate_value(0.75) == pytest.approx(0.25)


def _events(*accs, done=None, failed=None):
    ev = [{"event": "start", "startup_s": 2.0}]
    ev += [{"event": "epoch", "epoch": i + 1, "val_accuracy": a} for i, a in enumerate(accs)]
    if done:
        ev.append({"event": "done", **done})
    if failed:
        ev.append({"event": "failed", **failed})
    return ev


def test_outcome_of_a_completed_job():
    ev = _events(0.3, 0.6, done={"reason": "target_reached", "tta_s": 12.5,
                                 "best_val_accuracy": 0.6, "startup_s": 2.0})
    o = outcome_from_events(ev, JobState.COMPLETED, 0, pruned=False, nodes=1, wall_s=20.0)
    assert (o.state, o.reason, o.tta_s, o.tta_wall_s, o.epochs) == (
        "COMPLETED", "target_reached", 12.5, 14.5, 2)


@pytest.mark.parametrize(("state", "code", "extra", "want"), [
    (JobState.TIMEOUT, None, {}, "timeout"),
    (JobState.FAILED, 3, {"failed": {"reason": "nan_loss", "detail": "loss is nan at step 4"}},
     "nan_loss: loss is nan at step 4"),
    (JobState.FAILED, 137, {}, "failed (exit code 137)"),
    (JobState.FAILED, 3, {}, "nan_loss (exit code 3, no failed event)"),
    (JobState.COMPLETED, 0, {}, "the job exited 0 without a done event"),
])
def test_outcome_of_a_failed_job_names_the_reason(state, code, extra, want):
    o = outcome_from_events(_events(0.3, 0.4, **extra), state, code, pruned=False, nodes=1,
                            wall_s=5.0)
    assert o.state == "FAILED" and o.reason == want
    assert o.best_val_accuracy == 0.4 and o.tta_s is None


def test_outcome_of_a_pruned_job():
    o = outcome_from_events(_events(0.1, 0.2), JobState.CANCELLED, -15, pruned=True, nodes=1,
                            wall_s=5.0)
    assert o.state == "PRUNED" and o.reason == "pruned after epoch 2"


def test_run_names_read_well_in_the_mlflow_ui(tmp_path):
    from pathlib import Path

    from explorer.recorder import run_name
    from launchers.hosts import HostInfo
    from search_spaces.plan import build_plan
    from search_spaces.space import load_space

    space = load_space(Path(__file__).resolve().parents[2] / "search_spaces" / "seed_bbbc021.yaml")
    plan = build_plan(space, {"peak_lr": 0.008, "first_decay_epoch": 2, "decay_phases": 4,
                              "ranks_per_node": 2, "per_worker_batch": 8},
                      data_root=tmp_path, n_train=1000, hosts=[HostInfo("localhost", 2)])
    assert run_name(7, plan) == "trial-007 np=2x1 bs=16 lr=0.008;2;0.0008;7;8e-05;…"


def test_throughput_objective_is_the_steady_median_and_maximised():
    from explorer.objective import direction
    from explorer.record import median_images_per_sec as steady_images_per_sec

    assert steady_images_per_sec([50.0, 200.0, 220.0, 210.0]) == 210.0  # first epoch skipped
    assert steady_images_per_sec([80.0]) == 80.0 and steady_images_per_sec([]) is None
    o = TrialOutcome(Outcome.COMPLETED, "max_epochs", images_per_sec=210.0)
    assert objective_values(o, objective="images_per_sec") == [210.0]
    assert direction("images_per_sec") == "maximize" and direction("tta_s") == "minimize"
    ev = _events(0.1, 0.1)
    for e, rate in zip(ev[1:], (50.0, 300.0), strict=True):
        e["images_per_sec"] = rate
    out = outcome_from_events(ev, JobState.COMPLETED, 0, pruned=False, nodes=1, wall_s=3.0)
    assert out.images_per_sec == 300.0


def test_layout_study_needs_no_target_and_turns_evaluation_off(tmp_path):
    from pathlib import Path

    from explorer.driver import StudyDriver
    from explorer.study import StudySettings
    from launchers import MpirunLauncher
    from launchers.hosts import HostInfo
    from mcnn_base.errors import ConfigError

    space = Path(__file__).resolve().parents[2] / "search_spaces" / "layout_demo.yaml"
    common = dict(space=space, data_root=tmp_path, study="l", storage="sqlite://",
                  tracking_uri="sqlite://", workdir=tmp_path, hosts=[HostInfo("localhost", 2)])
    driver = StudyDriver(StudySettings(**common, objective="images_per_sec"), MpirunLauncher())
    assert driver.overrides["eval"] is False and driver.base["target_accuracy"] is None
    with pytest.raises(ConfigError, match="needs a target accuracy"):
        StudyDriver(StudySettings(**common), MpirunLauncher())
    with pytest.raises(ConfigError, match="single-objective"):
        StudyDriver(StudySettings(**common, objective="images_per_sec", multi_objective=True),
                    MpirunLauncher())


def test_interpolated_tta_on_hand_made_curves():
    from explorer.objective import interpolated_tta

    # an exact hit needs no interpolation
    assert interpolated_tta([(10.0, 0.5), (20.0, 0.8)], 0.8) == 20.0
    # crossing between evaluations: 0.6 → 0.9 over 10..20 s crosses 0.8 at 2/3 of the way
    assert interpolated_tta([(10.0, 0.6), (20.0, 0.9)], 0.8) == pytest.approx(16.6667, abs=1e-3)
    # the last evaluation below counts, not the first
    assert interpolated_tta([(5.0, 0.7), (10.0, 0.4), (20.0, 0.9)], 0.8) == pytest.approx(18.0)
    # never reached
    assert interpolated_tta([(10.0, 0.5), (20.0, 0.7)], 0.8) is None
    # fractional evaluation periods (every half epoch): the same rule on their clock times
    assert interpolated_tta([(4.5, 0.3), (9.0, 0.7), (13.5, 0.85)], 0.8) == pytest.approx(12.0)
    # reached at the first evaluation: nothing earlier to interpolate from
    assert interpolated_tta([(10.0, 0.9)], 0.8) == 10.0


def test_the_interpolated_objective_is_recorded_beside_the_measured_one():
    ev = [{"event": "start", "startup_s": 2.0, "config": {"target_accuracy": 0.8}},
          {"event": "epoch", "epoch": 1, "val_accuracy": 0.6, "elapsed_s": 10.0},
          {"event": "epoch", "epoch": 2, "val_accuracy": 0.9, "elapsed_s": 20.0},
          {"event": "done", "reason": "target_reached", "tta_s": 20.0, "best_val_accuracy": 0.9}]
    o = outcome_from_events(ev, JobState.COMPLETED, 0, pruned=False, nodes=1, wall_s=25.0)
    assert o.tta_s == 20.0 and o.tta_interp_s == pytest.approx(16.6667, abs=1e-3)
    assert objective_values(o, objective="tta_interp_s") == [o.tta_interp_s]
    assert o.final_metrics()["tta_interp_s"] == o.tta_interp_s


def test_slurms_time_limit_is_a_timeout_with_slurms_words():
    log = ("epoch 3 ...\nslurmstepd: error: *** JOB 17 ON node7 CANCELLED AT "
           "2026-11-30T01:30:02 DUE TO TIME LIMIT ***\nsrun: error: node7: task 0: Terminated\n")
    assert slurm_time_limit(log) == (
        "timeout: SLURM's time limit ended job 17 on node7 at 2026-11-30T01:30:02 (raise "
        "--trial-timeout, or the allocation's --time)")
    assert slurm_time_limit("slurmstepd: error: *** STEP 9.0 ON n1 CANCELLED AT 2026-11-30T01:"
                            "00:00 ***\n") is None  # cancelled, not over time
