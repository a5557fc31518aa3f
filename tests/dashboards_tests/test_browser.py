"""Checked as a person would: the report and the MLflow UI in headless Chromium.

Screenshots go to ``artifacts/screenshots/`` (or ``$MCNN_ARTIFACTS/screenshots``), which CI keeps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from dashboards.figures import FIGURES
from explorer.cli import main
from tests.browser import Browser, chromium_path
from tests.conftest import requires_mpi

pytestmark = [pytest.mark.browser, pytest.mark.slow, requires_mpi,
              pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed")]

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("MCNN_ARTIFACTS", REPO / "artifacts")) / "screenshots"
SPACE = """
name: browser
base: {max_epochs: 3, data: {image_size: [64, 80], normalize: standardize}}
dimensions:
  peak_lr: {float: [0.01, 0.03], log: true}
  per_worker_batch: {choices: [8]}
  ranks_per_node: {choices: [1, 2]}
  threads_per_rank: {choices: [1]}
  binding: {choices: [none, core]}
constraints: {min_updates_per_epoch: 2, max_global_batch: 64}
"""


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, synth_tree):
    tmp = tmp_path_factory.mktemp("browser")
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    storage, tracking = f"sqlite:///{tmp / 'optuna.db'}", f"sqlite:///{tmp / 'mlflow.db'}"
    old = os.environ.get("MCNN_CACHE_DIR")
    os.environ["MCNN_CACHE_DIR"] = str(tmp / "cache")
    try:
        assert main(["study", "launch", "--space", str(space), "--data", str(synth_tree),
                     "--study", "tiny", "--storage", storage, "--tracking-uri", tracking,
                     "--trials", "3", "--target-accuracy", "0.22", "--seed", "1",
                     "--pruner", "none", "--workdir", str(tmp / "runs")]) == 0
    finally:
        if old is None:
            os.environ.pop("MCNN_CACHE_DIR", None)
        else:
            os.environ["MCNN_CACHE_DIR"] = old
    return tmp, storage, tracking


def test_report_renders_every_figure_without_js_errors(finished_study, capsys):
    tmp, storage, tracking = finished_study
    report = tmp / "report.html"
    assert main(["dashboard", "--study", "tiny", "--storage", storage, "--tracking-uri",
                 tracking, "--out", str(report)]) == 0
    assert "logged on the study's MLflow run" in capsys.readouterr().out
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    parent = next(r for r in client.search_runs([exp.experiment_id])
                  if r.data.tags.get("mcnn.role") == "study")
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    with Browser(tmp / "chrome-report") as browser:
        browser.goto(report.as_uri())
        browser.wait_for("document.body.getAttribute('data-rendered') !== null", timeout=60)
        figures = browser.eval("Number(document.body.getAttribute('data-figures'))")
        rendered = browser.eval("Number(document.body.getAttribute('data-rendered'))")
        assert figures == rendered == len(FIGURES)
        points = {name: browser.eval(
            f"document.getElementById('fig-{name}').data"
            ".map(t => (t.x || t.values || t.dimensions || []).length)"
            ".reduce((a, b) => a + b, 0)") for name in FIGURES}
        # every figure of the real study carries data (Pareto needs a trial that hit the target)
        assert all(points[n] > 0 for n in FIGURES if n not in ("pareto", "importances")), points
        assert points["curves"] >= 3
        study = optuna.load_study(study_name="tiny", storage=storage)
        hits = sum(t.user_attrs.get("tta_s") is not None for t in study.trials)
        assert points["pareto"] == hits
        assert browser.eval("document.getElementById('js-errors').textContent") == ""
        assert browser.errors == []
        shot = browser.screenshot(SHOTS / "report.png")
    assert shot.stat().st_size > 50_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, deadline: float) -> bytes:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return bytes(r.read())
        except OSError:
            assert time.time() < deadline, f"{url} did not come up"
            time.sleep(0.5)


def test_mlflow_ui_lists_the_child_runs(finished_study):
    tmp, storage, tracking = finished_study
    port = _free_port()
    while _free_port() == port + 1:
        pass
    ui = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "explorer.cli", "ui", "--tracking-uri", tracking, "--port",
         str(port), "--study", "tiny", "--optuna-dashboard", "--storage", storage],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        cwd=REPO)
    try:
        line = ui.stdout.readline() if ui.stdout else ""
        assert line.startswith(f"MLflow UI: http://127.0.0.1:{port}/#/experiments/")
        url = line.split(": ", 1)[1].strip()
        _get(f"http://127.0.0.1:{port}/health", time.time() + 90)
        # optuna-dashboard on the same Optuna storage, one port up
        studies = _get(f"http://127.0.0.1:{port + 1}/api/studies", time.time() + 60)
        assert b'"study_name": "tiny"' in studies
        client = MlflowClient(tracking)
        exp = client.get_experiment_by_name("tiny")
        assert exp is not None
        children = [r for r in client.search_runs([exp.experiment_id])
                    if r.data.tags.get("mlflow.parentRunId")]
        names = sorted(r.info.run_name for r in children)
        assert len(names) == 3
        # the printed link opens the trial runs, flat, fastest first (MLflow 3.17 honours the
        # URL's filter and sort; runs without a TTA come after those with one)
        assert "orderByKey=metrics.%60tta_s%60&orderByAsc=true" in url
        by_tta = [r.info.run_name for r in sorted(
            (r for r in children if "tta_s" in r.data.metrics),
            key=lambda r: r.data.metrics["tta_s"])]
        with Browser(tmp / "chrome-ui", width=1600, height=1000) as browser:
            browser.goto(url)
            browser.wait_for("document.body.innerText.includes('tiny')", timeout=60)
            for name in names:  # no parent to expand: the filter lists the trials themselves
                browser.wait_for(f"document.body.innerText.includes({name!r})", timeout=60)
            text = str(browser.eval("document.body.innerText"))
            assert "Sort: tta_s" in text and "3 matching runs" in text
            shown = sorted(names, key=text.index)  # the order the rows appear in
            assert shown[:len(by_tta)] == by_tta
            browser.screenshot(SHOTS / "mlflow-ui.png", full_page=False)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait(5)
