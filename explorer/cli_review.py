"""``mcnn-explore dashboard`` (the HTML report) and ``mcnn-explore ui`` (MLflow UI)."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from explorer.errors import ConfigError

__all__ = ["add_commands", "experiment_url", "ui_argv"]


def _tracking_uri(args: argparse.Namespace, study: Any) -> str:
    from explorer.cli_study import DEFAULT_TRACKING, absolute_sqlite

    if args.tracking_uri:
        return absolute_sqlite(args.tracking_uri)
    stored = study.user_attrs.get("tracking_uri")
    if stored and "***" not in stored:
        return str(stored)
    return absolute_sqlite(DEFAULT_TRACKING)


def _dashboard(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from dashboards import write_report
    from explorer import export
    from explorer.cli_study import absolute_sqlite, quiet_libraries

    quiet_libraries()
    study = export.load_study(args.study, absolute_sqlite(args.storage))
    uri = _tracking_uri(args, study)
    client = MlflowClient(tracking_uri=uri)
    parent = None if args.no_log else study.user_attrs.get("mlflow_parent_run_id")
    out = write_report(study, Path(args.out), client, parent_run_id=parent)
    print(f"report: {out.resolve()}" + (" (logged on the study's MLflow run)" if parent else ""))
    return 0


def _venv_tool(name: str) -> str | None:
    """``name`` beside this interpreter (the project venv), else on PATH."""
    sibling = Path(sys.executable).with_name(name)
    return str(sibling) if sibling.is_file() else shutil.which(name)


def ui_argv(tracking_uri: str, host: str, port: int) -> list[str]:
    mlflow = _venv_tool("mlflow") or "mlflow"
    return [mlflow, "ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port)]


def experiment_url(tracking_uri: str, host: str, port: int, study: str | None) -> str:
    base = f"http://{host}:{port}"
    if not study:
        return base
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(study)
    if exp is None:
        raise ConfigError(f"no MLflow experiment named {study!r} in {tracking_uri}")
    return f"{base}/#/experiments/{exp.experiment_id}/runs"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _ui(args: argparse.Namespace) -> int:
    from explorer.cli_study import absolute_sqlite

    uri = absolute_sqlite(args.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {uri[len('sqlite:///'):]!r}; pass --tracking-uri")
    url = experiment_url(uri, args.host, args.port, args.study)
    argvs = [ui_argv(uri, args.host, args.port)]
    if args.optuna_dashboard:
        exe = _venv_tool("optuna-dashboard")
        if exe is None:
            raise ConfigError("--optuna-dashboard needs the optuna-dashboard package "
                              "(pip install optuna-dashboard)")
        argvs.append([exe, absolute_sqlite(args.storage), "--host", args.host,
                      "--port", str(args.port + 1)])
    signal.signal(signal.SIGTERM, _interrupt)  # a plain kill also stops the servers below
    procs = [subprocess.Popen(argv) for argv in argvs]  # noqa: S603 - argv lists
    print(f"MLflow UI: {url}", flush=True)
    if args.optuna_dashboard:
        print(f"optuna-dashboard: http://{args.host}:{args.port + 1}", flush=True)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    return 0


def add_commands(sub: Any) -> None:
    from explorer.cli_study import DEFAULT_STORAGE, DEFAULT_TRACKING

    d = sub.add_parser("dashboard", help="write a study's self-contained HTML report")
    d.add_argument("--study", required=True)
    d.add_argument("--storage", default=DEFAULT_STORAGE)
    d.add_argument("--tracking-uri", help="MLflow store (default: the one the study used)")
    d.add_argument("--out", default="report.html")
    d.add_argument("--no-log", action="store_true",
                   help="do not log the report on the study's MLflow parent run")
    d.set_defaults(func=_dashboard)
    u = sub.add_parser("ui", help="start the MLflow UI (127.0.0.1 by default)")
    u.add_argument("--tracking-uri", default=DEFAULT_TRACKING)
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--study", help="print the URL of this study's experiment")
    u.add_argument("--optuna-dashboard", action="store_true",
                   help="also start optuna-dashboard on --storage (port + 1)")
    u.add_argument("--storage", default=DEFAULT_STORAGE)
    u.set_defaults(func=_ui)
