"""``mcnn-explore dashboard`` (the HTML report) and ``mcnn-explore ui`` (MLflow UI).

The servers bind to 127.0.0.1 unless ``--host`` says otherwise, and any other address gets a
warning: neither the MLflow UI nor optuna-dashboard asks for a password. A store URL holding a
password never appears on a server's command line (``ps`` shows it to every user): the MLflow UI
reads it from ``MLFLOW_BACKEND_STORE_URI``, optuna-dashboard from a private (0600) TOML file.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna
from mlflow.tracking import MlflowClient

from dashboards import write_report
from explorer import export, preflight
from explorer.cli_study import DEFAULT_STORAGE, DEFAULT_TRACKING, absolute_sqlite, quiet_libraries
from explorer.tracking import trials_view_query
from mcnn_base.errors import ConfigError
from mcnn_base.urls import mask_url, scrub

__all__ = ["add_commands", "bind_warning", "dashboard_argv", "experiment_url", "is_loopback",
           "ui_argv", "ui_env"]

LOOPBACK = "127.0.0.1"


def _tracking_uri(args: argparse.Namespace, study: optuna.Study) -> str:
    if args.tracking_uri:
        return absolute_sqlite(args.tracking_uri)
    stored = study.user_attrs.get("tracking_uri")
    if stored and "***" not in stored:
        return str(stored)
    return absolute_sqlite(DEFAULT_TRACKING)


def _dashboard(args: argparse.Namespace) -> int:
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


def _has_password(url: str) -> bool:
    return urlsplit(url).password is not None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False


def bind_warning(host: str) -> str | None:
    """The warning for a server bound to ``host`` (None on a loopback address)."""
    if is_loopback(host):
        return None
    return (f"warning: binding to {host}: every machine that can reach it can read (and the "
            "MLflow UI can change) this study's records, without a password; use --host "
            f"{LOOPBACK} and an SSH tunnel unless that network is trusted")


def ui_argv(tracking_uri: str, host: str, port: int) -> list[str]:
    """The MLflow UI command; a store URL with a password is left to :func:`ui_env`."""
    mlflow = _venv_tool("mlflow") or "mlflow"
    store = [] if _has_password(tracking_uri) else ["--backend-store-uri", tracking_uri]
    return [mlflow, "ui", *store, "--host", host, "--port", str(port)]


def ui_env(tracking_uri: str) -> dict[str, str]:
    """Environment for :func:`ui_argv`: the store URL when it holds a password."""
    return {"MLFLOW_BACKEND_STORE_URI": tracking_uri} if _has_password(tracking_uri) else {}


def dashboard_argv(exe: str, storage: str, host: str, port: int, private_dir: Path) -> list[str]:
    """The optuna-dashboard command; a storage URL with a password goes in a 0600 TOML file in
    ``private_dir`` (which the caller deletes when the server ends)."""
    where = ["--host", host, "--port", str(port)]
    if not _has_password(storage):
        return [exe, storage, *where]
    config = private_dir / "optuna-dashboard.toml"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:  # a JSON string is a valid TOML basic string
        fh.write(f"[optuna_dashboard]\nstorage = {json.dumps(storage)}\n")
    return [exe, "--from-config", str(config), *where]


def experiment_url(tracking_uri: str, host: str, port: int, study: str | None) -> str:
    """The MLflow UI page of ``study``'s trial runs sorted by TTA (the server's root without
    a study)."""
    base = f"http://{host}:{port}"
    if not study:
        return base
    try:
        exp = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(study)
    except Exception as exc:  # any store failure: one line, password masked
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise ConfigError(f"cannot read the MLflow store {mask_url(tracking_uri)}: "
                          f"{scrub(lines[0], tracking_uri)}") from None
    if exp is None:
        raise ConfigError(f"no MLflow experiment named {study!r} in {mask_url(tracking_uri)}")
    return f"{base}/#/experiments/{exp.experiment_id}/runs{trials_view_query()}"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _ui(args: argparse.Namespace) -> int:
    uri = absolute_sqlite(args.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {uri[len('sqlite:///'):]!r}; pass --tracking-uri")
    preflight.check_tracking(uri, connect=True)
    if args.optuna_dashboard:
        preflight.check_storage(absolute_sqlite(args.storage))
    url = experiment_url(uri, args.host, args.port, args.study)
    warning = bind_warning(args.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="mcnn-ui-") as private:
        return _serve(args, uri, url, Path(private))


def _serve(args: argparse.Namespace, uri: str, url: str, private: Path) -> int:
    commands = [(ui_argv(uri, args.host, args.port), ui_env(uri))]
    if args.optuna_dashboard:
        exe = _venv_tool("optuna-dashboard")
        if exe is None:
            raise ConfigError("--optuna-dashboard needs the optuna-dashboard package "
                              "(pip install optuna-dashboard)")
        commands.append((dashboard_argv(exe, absolute_sqlite(args.storage), args.host,
                                        args.port + 1, private), {}))
    signal.signal(signal.SIGTERM, _interrupt)  # a plain kill also stops the servers below
    procs = [subprocess.Popen(argv, env={**os.environ, **env})  # noqa: S603 - argv lists
             for argv, env in commands]
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
    u.add_argument("--host", default=LOOPBACK,
                   help=f"address both servers bind to (default {LOOPBACK}: this machine only; "
                        "any other address prints a warning)")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--study", help="print the URL of this study's experiment")
    u.add_argument("--optuna-dashboard", action="store_true",
                   help="also start optuna-dashboard on --storage (port + 1)")
    u.add_argument("--storage", default=DEFAULT_STORAGE)
    u.set_defaults(func=_ui)
