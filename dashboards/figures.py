"""The study's figures: each a ``*_data`` function (plain records, tested) and a ``*_figure``.

| figure | what a user learns |
|---|---|
| history | how TTA improved over the study; which trials were pruned, failed or infeasible |
| curves | accuracy against wall-clock seconds of the top trials: the TTA picture itself |
| layout | which ranks × threads layout (per binding) trains fastest (median images/s) |
| schedules | the LR schedules of the top trials, as LR against epoch |
| parallel | how every sampled dimension relates to the objective |
| importances | which dimensions matter most for the objective |
| pareto | TTA against node-hours: the cheapest way to a given speed |
| scaling | images/s against world size, against ideal linear scaling |
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import defaultdict
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.records import StudyRecord, TrialRecord
from explorer.mcnn.schedule import learning_rate

__all__ = ["FIGURES", "build_all", "curves_data", "history_data", "importances_data",
           "layout_data", "parallel_data", "pareto_data", "scaling_data", "schedules_data"]

STATE_STYLE = {"COMPLETED": ("#1f77b4", "circle"), "MISSED": ("#ff7f0e", "diamond"),
               "PRUNED": ("#7f7f7f", "x"), "FAILED": ("#d62728", "x-thin-open"),
               "INFEASIBLE": ("#bcbd22", "square-open"), "RUNNING": ("#17becf", "triangle-up")}


def _kind(t: TrialRecord) -> str:
    if t.state == "COMPLETED" and not t.reached:
        return "MISSED"
    return t.state if t.state in STATE_STYLE else "FAILED"


def _label(t: TrialRecord) -> str:
    layout = t.config.get("layout") or {}
    return (f"trial {t.number}: {layout.get('ranks_per_node', '?')}x"
            f"{layout.get('threads_per_rank', '?')} bs={t.derived.get('global_batch', '?')}")


# -- history -----------------------------------------------------------------------------------
def history_data(rec: StudyRecord) -> dict[str, Any]:
    hits = [t.tta_s for t in rec.trials if t.tta_s is not None]
    ceiling = max(hits) * 1.15 if hits else 1.0
    points = []
    for t in rec.trials:
        kind = _kind(t)
        points.append({"number": t.number, "kind": kind, "tta_s": t.tta_s,
                       "y": t.tta_s if t.tta_s is not None else ceiling,
                       "text": f"trial {t.number} {kind}: {t.reason}"})
    best: list[tuple[int, float]] = []
    current = math.inf
    for t in sorted(rec.trials, key=lambda t: t.number):
        if t.tta_s is not None and t.tta_s < current:
            current = t.tta_s
        if current < math.inf:
            best.append((t.number, current))
    return {"points": points, "best": best, "ceiling": ceiling}


def history_figure(data: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for kind, (color, symbol) in STATE_STYLE.items():
        pts = [p for p in data["points"] if p["kind"] == kind]
        if pts:
            fig.add_trace(go.Scatter(
                x=[p["number"] for p in pts], y=[p["y"] for p in pts], mode="markers",
                name=kind.lower(), text=[p["text"] for p in pts], hoverinfo="text+y",
                marker={"color": color, "symbol": symbol, "size": 10}))
    if data["best"]:
        fig.add_trace(go.Scatter(x=[b[0] for b in data["best"]], y=[b[1] for b in data["best"]],
                                 mode="lines", line={"shape": "hv", "color": "#2ca02c"},
                                 name="best so far"))
    fig.add_hline(y=data["ceiling"], line={"dash": "dot", "color": "#aaa"},
                  annotation_text="no TTA (missed, pruned, failed, infeasible)")
    fig.update_layout(title="TTA per trial", xaxis_title="trial", yaxis_title="TTA (s)")
    return fig


# -- accuracy curves ---------------------------------------------------------------------------
def curves_data(rec: StudyRecord, k: int = 5) -> dict[str, Any]:
    series = []
    for t in [t for t in rec.ranked() if t.curve][:k]:
        rows = [r for r in t.curve if "val_accuracy" in r and "elapsed_s" in r]
        series.append({"label": _label(t), "number": t.number, "tta_s": t.tta_s,
                       "seconds": [r["elapsed_s"] for r in rows],
                       "accuracy": [r["val_accuracy"] for r in rows]})
    return {"series": series, "target": rec.target_accuracy}


def curves_figure(data: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for s in data["series"]:
        fig.add_trace(go.Scatter(x=s["seconds"], y=s["accuracy"], mode="lines+markers",
                                 name=s["label"]))
    if data["target"] is not None:
        fig.add_hline(y=data["target"], line={"dash": "dash", "color": "#d62728"},
                      annotation_text=f"target {data['target']:g}")
    fig.update_layout(title="Validation accuracy against wall-clock seconds (top trials)",
                      xaxis_title="seconds since the first training step", yaxis_title="val accuracy")
    return fig


# -- layout heatmap ----------------------------------------------------------------------------
def layout_data(rec: StudyRecord) -> dict[str, Any]:
    cells: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    for t in rec.trials:
        layout = t.config.get("layout") or {}
        rate = t.median_images_per_sec
        if rate is None or not layout:
            continue
        key = (str(layout.get("binding")), int(layout["ranks_per_node"]),
               int(layout["threads_per_rank"]))
        cells[key].append(rate)
    bindings = sorted({k[0] for k in cells})
    ranks = sorted({k[1] for k in cells})
    threads = sorted({k[2] for k in cells})
    z: dict[str, list[list[float | None]]] = {}
    for b in bindings:
        z[b] = [[statistics.median(cells[(b, r, th)]) if (b, r, th) in cells else None for th in threads]
                for r in ranks]
    return {"bindings": bindings, "ranks": ranks, "threads": threads, "z": z}


def layout_figure(data: dict[str, Any]) -> go.Figure:
    n = max(1, len(data["bindings"]))
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"binding: {b}" for b in data["bindings"]]
                        or ["no throughput data"])
    for i, b in enumerate(data["bindings"], start=1):
        fig.add_trace(go.Heatmap(z=data["z"][b], x=[str(t) for t in data["threads"]],
                                 y=[str(r) for r in data["ranks"]], coloraxis="coloraxis",
                                 texttemplate="%{z:.0f}", name=b), row=1, col=i)
        fig.update_xaxes(title_text="threads per rank", row=1, col=i)
    fig.update_yaxes(title_text="ranks per node", row=1, col=1)
    fig.update_layout(title="Median images/s by layout", coloraxis={"colorscale": "Viridis"})
    return fig


# -- LR schedules ------------------------------------------------------------------------------
def schedules_data(rec: StudyRecord, k: int = 5, points: int = 200) -> dict[str, Any]:
    series = []
    for t in rec.ranked()[:k]:
        sched = t.config.get("schedule") or {}
        piecewise = sched.get("piecewise") or t.derived.get("piecewise")
        if not piecewise:
            continue
        spe = max(1, int(t.derived.get("updates_per_epoch") or 1))
        epochs = float(t.config.get("max_epochs", 1.0))
        scale = float(t.derived.get("lr_scale", 1.0))
        xs = [epochs * i / points for i in range(points + 1)]
        ys = [learning_rate(piecewise, int(x * spe), spe,
                            warmup_epochs=float(sched.get("warmup_epochs", 0.0)), scale=scale)
              for x in xs]
        series.append({"label": f"{_label(t)} [{piecewise}]", "epochs": xs, "lr": ys})
    return {"series": series}


def schedules_figure(data: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for s in data["series"]:
        fig.add_trace(go.Scatter(x=s["epochs"], y=s["lr"], mode="lines", name=s["label"]))
    fig.update_layout(title="LR schedules of the top trials", xaxis_title="epoch",
                      yaxis_title="learning rate")
    return fig


# -- parallel coordinates and importances ------------------------------------------------------
def parallel_data(rec: StudyRecord) -> dict[str, Any]:
    done = rec.completed()
    names = sorted({k for t in done for k in t.params})
    dims = []
    for name in names:
        values = [t.params.get(name) for t in done]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            dims.append({"name": name, "values": [float(v) for v in values]})  # type: ignore[arg-type]
        else:
            cats = sorted({str(v) for v in values})
            dims.append({"name": name, "values": [float(cats.index(str(v))) for v in values],
                         "categories": cats})
    objective = [(t.values or [math.nan])[0] for t in done]
    return {"dimensions": dims, "objective": objective, "numbers": [t.number for t in done]}


def parallel_figure(data: dict[str, Any]) -> go.Figure:
    dims = []
    for d in data["dimensions"]:
        spec: dict[str, Any] = {"label": d["name"], "values": d["values"]}
        if "categories" in d:
            spec["tickvals"] = list(range(len(d["categories"])))
            spec["ticktext"] = d["categories"]
        dims.append(spec)
    dims.append({"label": "objective", "values": data["objective"]})
    fig = go.Figure(go.Parcoords(line={"color": data["objective"], "colorscale": "Viridis_r",
                                       "showscale": True}, dimensions=dims))
    fig.update_layout(title="Sampled dimensions against the objective (completed trials)")
    return fig


def importances_data(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances for the first objective ({} with too few trials)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA's "low target values" note: we minimise
            return dict(optuna.importance.get_param_importances(
                study, target=lambda t: t.values[0]))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def importances_figure(data: dict[str, float]) -> go.Figure:
    items = sorted(data.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h"))
    fig.update_layout(title="Parameter importances (first objective)" if data else
                      "Parameter importances: not enough completed trials yet",
                      xaxis_title="importance")
    return fig


# -- Pareto front ------------------------------------------------------------------------------
def pareto_data(rec: StudyRecord) -> dict[str, Any]:
    pts: list[dict[str, Any]] = [
        {"number": t.number, "tta_s": t.tta_s, "node_hours": t.node_hours, "label": _label(t)}
        for t in rec.trials if t.tta_s is not None and t.node_hours is not None]
    front = [p for p in pts if not any(
        q["tta_s"] <= p["tta_s"] and q["node_hours"] <= p["node_hours"]
        and (q["tta_s"] < p["tta_s"] or q["node_hours"] < p["node_hours"]) for q in pts)]
    front.sort(key=lambda p: p["tta_s"])
    return {"points": pts, "front": [p["number"] for p in front],
            "multi_objective": rec.multi_objective}


def pareto_figure(data: dict[str, Any]) -> go.Figure:
    front = set(data["front"])
    fig = go.Figure()
    for on_front in (False, True):
        pts = [p for p in data["points"] if (p["number"] in front) == on_front]
        if pts:
            fig.add_trace(go.Scatter(
                x=[p["tta_s"] for p in pts], y=[p["node_hours"] for p in pts], mode="markers",
                text=[p["label"] for p in pts], name="Pareto front" if on_front else "dominated",
                marker={"size": 11 if on_front else 8,
                        "color": "#d62728" if on_front else "#7f7f7f"}))
    kind = "(study objectives)" if data["multi_objective"] else "(trials that reached the target)"
    fig.update_layout(title=f"TTA against node-hours {kind}", xaxis_title="TTA (s)",
                      yaxis_title="node-hours")
    return fig


# -- scaling -----------------------------------------------------------------------------------
def scaling_data(rec: StudyRecord) -> dict[str, Any]:
    best: dict[int, float] = {}
    for t in rec.trials:
        rate = t.median_images_per_sec
        world = t.derived.get("world_size")
        if rate is not None and world:
            best[int(world)] = max(best.get(int(world), 0.0), rate)
    worlds = sorted(best)
    ideal = [best[worlds[0]] / worlds[0] * w for w in worlds] if worlds else []
    return {"world_sizes": worlds, "images_per_sec": [best[w] for w in worlds], "ideal": ideal}


def scaling_figure(data: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=data["world_sizes"], y=data["images_per_sec"],
                             mode="lines+markers", name="best measured"))
    fig.add_trace(go.Scatter(x=data["world_sizes"], y=data["ideal"], mode="lines",
                             line={"dash": "dash"}, name="ideal linear"))
    fig.update_layout(title="Throughput against world size", xaxis_title="ranks (world size)",
                      yaxis_title="images/s (median epoch)")
    return fig


def build_all(rec: StudyRecord, study: optuna.Study) -> list[tuple[str, Any, go.Figure]]:
    """Every figure of the report as (name, data, figure)."""
    made = []
    for name, data_fn, fig_fn in [
        ("history", history_data, history_figure), ("curves", curves_data, curves_figure),
        ("layout", layout_data, layout_figure), ("schedules", schedules_data, schedules_figure),
        ("parallel", parallel_data, parallel_figure), ("pareto", pareto_data, pareto_figure),
        ("scaling", scaling_data, scaling_figure),
    ]:
        data = data_fn(rec)
        made.append((name, data, fig_fn(data)))
    imp = importances_data(study)
    made.insert(5, ("importances", imp, importances_figure(imp)))
    return made


FIGURES = ("history", "curves", "layout", "schedules", "parallel", "importances", "pareto",
           "scaling")
