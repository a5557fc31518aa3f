"""One self-contained HTML report per study (plotly.js embedded: it works offline).

The page records JavaScript errors in ``#js-errors`` and, once every figure is drawn, the number
of rendered plots in ``body[data-rendered]`` — what the headless-browser test reads.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from dashboards.figures import build_all
from dashboards.records import StudyRecord, study_record
from explorer.speedup import speedup

__all__ = ["render_report", "summary", "write_report"]

_ERRORS_JS = """
window.__errors = [];
function __record(msg) {
  window.__errors.push(String(msg));
  var el = document.getElementById('js-errors');
  if (el) { el.textContent = window.__errors.join('\\n'); }
}
window.addEventListener('error', function (e) { __record(e.message || e); });
window.addEventListener('unhandledrejection', function (e) { __record(e.reason); });
"""
_DONE_JS = """
window.addEventListener('load', function () {
  var plots = document.querySelectorAll('.js-plotly-plot');
  var drawn = 0;
  plots.forEach(function (p) {
    if (p.querySelector('.main-svg') && p.data && p.data.length) { drawn++; }
  });
  document.body.setAttribute('data-rendered', String(drawn));
  document.body.setAttribute('data-figures', String(plots.length));
});
"""
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
.figure { margin: 1.5em 0; }
.figure p { color: #555; margin: 0.2em 0; }
#js-errors { color: #b00; white-space: pre; }
"""
_CAPTIONS = {
    "history": "How TTA improved over the study; pruned, failed, missed and infeasible trials are "
               "drawn at the top band.",
    "curves": "Validation accuracy against wall-clock seconds for the best trials: where each "
              "crosses the target line is its TTA.",
    "layout": "Median training images/s for each ranks-per-node × threads-per-rank layout, one "
              "panel per binding policy.",
    "schedules": "The learning-rate schedules of the best trials (warm-up, peak, decays).",
    "parallel": "Every sampled dimension of the completed trials against the objective.",
    "importances": "Which dimensions explain most of the objective's variation (Optuna).",
    "pareto": "TTA against node-hours: the trials on the front are the cheapest for their speed.",
    "scaling": "Best measured images/s per world size against ideal linear scaling.",
}


def summary(rec: StudyRecord) -> dict[str, Any]:
    """The header's facts (a plain record, checked by tests)."""
    best = rec.best()
    found = speedup(rec.trials, str(rec.attrs.get("objective", "tta_s")))
    return {
        "study": rec.name,
        "trials_by_state": rec.by_state(),
        "target_accuracy": rec.target_accuracy,
        "dataset": rec.attrs.get("data_root"),
        "split": rec.attrs.get("split"),
        "space": rec.attrs.get("space_name"),
        "best_trial": None if best is None else best.number,
        "best_tta_s": None if best is None else best.tta_s,
        "best_val_accuracy": None if best is None else best.best_val_accuracy,
        "best_params": {} if best is None else best.params,
        "best_schedule": None if best is None else best.derived.get("piecewise"),
        "best_layout": None if best is None else best.layout_text,
        "speedup_vs_baseline": (None if found is None else found.describe()),
    }


_EMPTY = {
    "curves": "no trial has reported an evaluation yet",
    "layout": "no trial has reported its throughput yet",
    "scaling": "no trial has reported its throughput yet",
    "schedules": "no trial has completed yet",
    "parallel": "no completed trial with sampled values yet",
    "importances": "parameter importances need at least two completed trials with sampled "
                   "values",
    "pareto": "no trial has reached the target yet (the front is TTA against node-hours)",
}


def empty_reason(name: str, rec: StudyRecord, has_data: bool) -> str | None:
    """Why figure ``name`` shows nothing (or, for the TTA history, no TTA); None if it does."""
    if name == "history":
        finished = [t for t in rec.trials if t.state not in ("WAITING", "RUNNING")]
        if not finished:
            return "no trial has finished yet"
        if any(t.reached for t in rec.trials):
            return None
        accs = [(t.best_val_accuracy or 0.0, t.number) for t in finished]
        acc, number = max(accs)
        target = rec.target_accuracy
        return (f"no trial has reached the target{f' {target:g}' if target else ''} yet: the "
                f"best accuracy is {acc:.3f} (trial {number})")
    return None if has_data else _EMPTY.get(name, "nothing to show yet")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def render_report(study: optuna.Study, client: Any = None) -> str:
    rec = study_record(study, client)
    facts = summary(rec)
    tta = facts["best_tta_s"]
    best_rows = [
        *([("speedup vs baseline", facts["speedup_vs_baseline"])]
          if facts["speedup_vs_baseline"] else []),
        ("best trial", facts["best_trial"] if facts["best_trial"] is not None else "none yet"),
        ("best TTA", f"{tta:.1f} s" if tta is not None else "target not reached"),
        ("best val accuracy", facts["best_val_accuracy"]),
        ("LR schedule", facts["best_schedule"]),
        ("layout", facts["best_layout"] or "-"),
        *((f"  {k}", v) for k, v in sorted(facts["best_params"].items())),
    ]
    study_rows = [
        ("study", rec.name), ("search space", facts["space"]),
        ("trials by state", ", ".join(f"{n} {s.lower()}" for s, n in
                                      sorted(facts["trials_by_state"].items()))),
        ("target accuracy", facts["target_accuracy"]), ("dataset", facts["dataset"]),
        ("split protocol", facts["split"]),
        ("objectives", " + ".join(["TTA", "node-hours"][:len(rec.directions)])),
        ("generated", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
             f"<title>mcnn-explorer: {html.escape(rec.name)}</title><style>{_CSS}</style>"
             f"<script>{_ERRORS_JS}</script><script>{get_plotlyjs()}</script></head><body>",
             f"<h1>Study {html.escape(rec.name)}</h1><div id='js-errors'></div>",
             "<h2>Summary</h2>", _table(study_rows), "<h2>Best trial</h2>", _table(best_rows)]
    for name, _data, fig in build_all(rec, study):
        why = empty_reason(name, rec, bool(fig.data))
        if why is not None:  # say why instead of a blank or misleading plot
            if not fig.data:
                fig.add_trace(go.Scatter(x=[], y=[], showlegend=False))
            fig.add_annotation(text=html.escape(why), showarrow=False, x=0.5, y=0.5,
                               xref="paper", yref="paper", font={"size": 15})
        fig.update_layout(height=460, template="plotly_white")
        div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"fig-{name}")
        parts.append(f"<div class='figure' data-figure='{name}'><p>{_CAPTIONS[name]}</p>"
                     f"{div}</div>")
    parts.append(f"<script>{_DONE_JS}</script></body></html>")
    return "".join(parts)


def write_report(study: optuna.Study, out: Path, client: Any = None,
                 parent_run_id: str | None = None) -> Path:
    """Write the report; log it on the study's parent MLflow run when ``parent_run_id`` is set."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(study, client), encoding="utf-8")
    if client is not None and parent_run_id:
        client.log_artifact(parent_run_id, str(out))
    return out
