"""``mcnn-explore ui``: loopback by default, a warning otherwise, no password on a command line.

No server is started: the argv/env builders are tested directly, and ``ui`` runs with a fake
``subprocess.Popen``.
"""

from __future__ import annotations

import stat
import tomllib
from typing import Any, ClassVar

import pytest

from explorer import cli_review
from explorer.cli import build_parser, main

SECRET = "hunter2-secret"
PG = f"postgresql://explorer:{SECRET}@db.example:5432/studies"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.53", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.7", False),
    ("node01.cluster", False),
])
def test_loopback_hosts_get_no_warning(host, loopback):
    assert cli_review.is_loopback(host) is loopback
    warning = cli_review.bind_warning(host)
    assert (warning is None) is loopback
    if warning is not None:
        assert warning.startswith(f"warning: binding to {host}:") and "--host 127.0.0.1" in warning


def test_ui_binds_to_loopback_unless_told_otherwise():
    args = build_parser().parse_args(["ui", "--optuna-dashboard"])
    assert args.host == "127.0.0.1"
    argv = cli_review.ui_argv("sqlite:////x/mlflow.db", args.host, args.port)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_a_store_password_never_reaches_a_command_line(tmp_path):
    plain = "sqlite:////x/mlflow.db"
    assert cli_review.ui_argv(plain, "127.0.0.1", 5000)[2:4] == ["--backend-store-uri", plain]
    assert cli_review.ui_env(plain) == {}
    argv = cli_review.ui_argv(PG, "127.0.0.1", 5000)
    assert "--backend-store-uri" not in argv and SECRET not in " ".join(argv)
    assert cli_review.ui_env(PG) == {"MLFLOW_BACKEND_STORE_URI": PG}

    dash = cli_review.dashboard_argv("optuna-dashboard", PG, "127.0.0.1", 5001, tmp_path)
    assert SECRET not in " ".join(dash)
    config = tmp_path / "optuna-dashboard.toml"
    assert dash[1:3] == ["--from-config", str(config)]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert tomllib.loads(config.read_text()) == {"optuna_dashboard": {"storage": PG}}
    plain_dash = cli_review.dashboard_argv("optuna-dashboard", "sqlite:////x/o.db", "::1", 5001,
                                           tmp_path / "unused")
    assert plain_dash[:2] == ["optuna-dashboard", "sqlite:////x/o.db"]


class _EndedServer:
    """A stand-in for a server process that has already exited."""

    started: ClassVar[list[tuple[list[str], dict[str, str]]]] = []

    def __init__(self, argv: list[str], env: dict[str, str], **_: Any) -> None:
        self.started.append((argv, env))

    def poll(self) -> int:
        return 0


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_ui_warns_when_bound_beyond_this_machine(tmp_path, monkeypatch, capsys, host, warned):
    (tmp_path / "mlflow.db").touch()
    (tmp_path / "optuna.db").touch()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_review.subprocess, "Popen", _EndedServer)
    monkeypatch.setattr(cli_review, "_venv_tool", lambda name: name)
    monkeypatch.setattr(cli_review.signal, "signal", lambda *args: None)  # keep pytest's SIGTERM
    _EndedServer.started.clear()
    assert main(["ui", "--host", host, "--optuna-dashboard"]) == 0
    err = capsys.readouterr().err
    assert ("warning: binding to 0.0.0.0" in err) is warned
    (mlflow, _), (dashboard, _) = _EndedServer.started
    assert mlflow[mlflow.index("--host") + 1] == host == dashboard[dashboard.index("--host") + 1]
