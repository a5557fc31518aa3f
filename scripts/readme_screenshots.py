"""Regenerate the README's screenshots from the demo study with the project's own commands.

    .venv/bin/python scripts/readme_screenshots.py [--workdir demo]

Writes ``docs/img/report.png`` (``mcnn-explore dashboard``) and ``docs/img/mlflow-ui.png``
(``mcnn-explore ui``), both taken in headless Chromium.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.cli import main  # noqa: E402
from tests.browser import Browser  # noqa: E402


def run(workdir: Path, out: Path, port: int) -> None:
    storage, tracking = f"sqlite:///{workdir / 'optuna.db'}", f"sqlite:///{workdir / 'mlflow.db'}"
    report = workdir / "report.html"
    assert main(["dashboard", "--study", "demo", "--storage", storage, "--tracking-uri",
                 tracking, "--out", str(report), "--no-log"]) == 0
    with Browser(Path(tempfile.mkdtemp()) / "chrome", width=1400, height=2600) as browser:
        browser.goto(report.as_uri())
        browser.wait_for("document.body.getAttribute('data-rendered') !== null", timeout=60)
        browser.screenshot(out / "report.png", full_page=False)
    argv = [sys.executable, "-m", "explorer.cli", "ui", "--tracking-uri", tracking,
            "--port", str(port), "--study", "demo"]
    ui = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,  # noqa: S603 - fixed argv
                          start_new_session=True, cwd=ROOT)
    try:
        url = (ui.stdout.readline() if ui.stdout else "").split(": ", 1)[1].strip()
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        with Browser(Path(tempfile.mkdtemp()) / "chrome", width=1600, height=900) as browser:
            browser.goto(url)  # the study's trial runs, sorted by TTA (no parent to expand)
            browser.wait_for("document.body.innerText.includes('trial-000')", timeout=60)
            time.sleep(1)
            browser.screenshot(out / "mlflow-ui.png", full_page=False)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="demo")
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    parser.add_argument("--port", type=int, default=5123)
    a = parser.parse_args()
    run(Path(a.workdir).resolve(), Path(a.out), a.port)
    print(f"wrote {a.out}/report.png and {a.out}/mlflow-ui.png")
