from __future__ import annotations

import optuna
import pytest

from dashboards import figures
from dashboards.records import StudyRecord, TrialRecord, study_record
from dashboards.report import render_report, summary
from explorer.record import Outcome, median_images_per_sec


def _trial(number, state="COMPLETED", tta=None, value=None, ranks=1, threads=1, binding="core",
           rates=(100.0, 200.0, 210.0), accs=(0.2, 0.4, 0.6), node_hours=0.01, world=None,
           piecewise="0.02;2;0.002"):
    curve = [{"epoch": float(i + 1), "elapsed_s": 10.0 * (i + 1), "val_accuracy": a,
              "images_per_sec": r} for i, (a, r) in enumerate(zip(accs, rates, strict=True))]
    return TrialRecord(
        number=number, state=Outcome(state), reason="r", values=None if value is None else [value],
        params={"peak_lr": 0.01 * (number + 1), "binding": binding, "ranks_per_node": ranks},
        derived={"global_batch": 16, "world_size": world or ranks, "updates_per_epoch": 10,
                 "piecewise": piecewise, "lr_scale": 1.0},
        config={"layout": {"ranks_per_node": ranks, "threads_per_rank": threads,
                           "binding": binding},
                "schedule": {"piecewise": piecewise, "warmup_epochs": 0.5}, "max_epochs": 3},
        tta_s=tta, best_val_accuracy=max(accs, default=0.0), node_hours=node_hours, curve=curve,
        median_images_per_sec=median_images_per_sec(list(rates)))


@pytest.fixture
def rec():
    return StudyRecord(name="s", directions=["minimize"], target_accuracy=0.5, trials=[
        _trial(0, tta=30.0, value=30.0, ranks=1, threads=2, node_hours=0.02),
        _trial(1, value=1.4e6, ranks=2, threads=1, accs=(0.2, 0.3, 0.4)),
        _trial(2, tta=20.0, value=20.0, ranks=2, threads=1, rates=(100, 300, 320),
               node_hours=0.03),
        _trial(3, state="PRUNED", ranks=2, threads=1, binding="none", rates=(50, 60),
               accs=(0.1, 0.1)),
        _trial(4, state="INFEASIBLE", rates=(), accs=()),
        _trial(5, state="FAILED", rates=(), accs=()),
    ])


def test_history_marks_states_and_tracks_the_best(rec):
    data = figures.history_data(rec)
    kinds = {p["number"]: p["kind"] for p in data["points"]}
    assert kinds == {0: "COMPLETED", 1: "MISSED", 2: "COMPLETED", 3: "PRUNED", 4: "INFEASIBLE",
                     5: "FAILED"}
    assert data["best"] == [(0, 30.0), (1, 30.0), (2, 20.0), (3, 20.0), (4, 20.0), (5, 20.0)]
    assert data["ceiling"] == pytest.approx(34.5)
    assert {p["y"] for p in data["points"] if p["kind"] != "COMPLETED"} == {data["ceiling"]}


def test_curves_are_the_top_trials_against_seconds(rec):
    data = figures.curves_data(rec, k=2)
    assert [s["number"] for s in data["series"]] == [2, 0]
    assert data["series"][0]["seconds"] == [10.0, 20.0, 30.0]
    assert data["target"] == 0.5


def test_layout_heatmap_takes_medians_per_binding(rec):
    data = figures.layout_data(rec)
    assert data["bindings"] == ["core", "none"]
    assert data["ranks"] == [1, 2] and data["threads"] == [1, 2]
    # trial 0 (1x2): median of epochs 2.. = 205; trials 1 and 2 (2x1): median(205, 310) = 257.5
    assert data["z"]["core"] == [[None, 205.0], [257.5, None]]
    assert data["z"]["none"] == [[None, None], [60.0, None]]


def test_schedules_follow_warmup_and_piecewise(rec):
    data = figures.schedules_data(rec, k=1, points=6)
    (s,) = data["series"]
    assert s["epochs"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert s["lr"][0] == pytest.approx(0.02 / 5) and s["lr"][2] == pytest.approx(0.02)
    assert s["lr"][4] == pytest.approx(0.002)


def test_parallel_pareto_and_scaling(rec):
    par = figures.parallel_data(rec)
    assert par["numbers"] == [0, 1, 2]
    binding = next(d for d in par["dimensions"] if d["name"] == "binding")
    assert binding["categories"] == ["core"] and binding["values"] == [0.0, 0.0, 0.0]
    pareto = figures.pareto_data(rec)
    assert sorted(p["number"] for p in pareto["points"]) == [0, 2]
    assert pareto["front"] == [2, 0]  # faster but costlier, slower but cheaper
    scaling = figures.scaling_data(rec)
    assert scaling["world_sizes"] == [1, 2]
    assert scaling["images_per_sec"] == [205.0, 310.0] and scaling["ideal"] == [205.0, 410.0]


def test_report_has_every_figure_and_the_summary(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="rep")
    study.set_user_attr("target_accuracy", 0.5)
    study.set_user_attr("split", "random")
    for i, lr in enumerate([0.01, 0.02, 0.04]):
        t = _trial(i, tta=10.0 + i, value=10.0 + i)
        study.add_trial(optuna.trial.create_trial(
            params={"peak_lr": lr}, value=10.0 + i,
            distributions={"peak_lr": optuna.distributions.FloatDistribution(0.001, 0.1)},
            user_attrs={"state": "COMPLETED", "tta_s": t.tta_s, "config": t.config,
                        "derived": t.derived, "best_val_accuracy": 0.6, "node_hours": 0.01}))
    rec = study_record(study)
    facts = summary(rec)
    assert facts["best_trial"] == 0 and facts["best_tta_s"] == 10.0
    assert facts["trials_by_state"] == {"COMPLETED": 3} and facts["split"] == "random"
    page = render_report(study)
    for name in figures.FIGURES:
        assert f"id=\"fig-{name}\"" in page
    assert page.count("Plotly.newPlot") == len(figures.FIGURES)
    assert "cdn.plot.ly" not in page.split("</head>")[1]  # plotly.js embedded, no CDN


def test_empty_panels_say_why(rec):
    from dashboards.report import empty_reason

    assert empty_reason("history", rec, True) is None  # trials 0 and 2 reached the target
    missed = StudyRecord(name="m", directions=["minimize"], target_accuracy=0.7, trials=[
        _trial(0, value=1.4e6, accs=(0.2, 0.5), rates=(100.0, 200.0)),
        _trial(1, state="PRUNED", accs=(0.1,), rates=(100.0,))])
    assert empty_reason("history", missed, True) == (
        "no trial has reached the target 0.7 yet: the best accuracy is 0.500 (trial 0)")
    assert str(empty_reason("pareto", missed, False)).startswith("no trial has reached the")
    assert empty_reason("layout", missed, True) is None
    nothing = StudyRecord(name="n", directions=["minimize"], target_accuracy=0.7, trials=[])
    assert empty_reason("history", nothing, False) == "no trial has finished yet"
    assert "two completed trials" in str(empty_reason("importances", nothing, False))
