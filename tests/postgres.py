"""A private, throw-away PostgreSQL server for the shared-study tests.

Debian's ``postgresql`` package (installed by ``scripts/setup.sh --with-test-deps``) gives the
server binaries; this module runs its own cluster in a temporary folder on a free localhost port
with password authentication, creates databases, and stops it afterwards. As root the server runs
as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

__all__ = ["PostgresServer", "assert_all_exited_0", "bin_dir", "launch_argv", "one_parent",
           "postgres_server", "require_postgres"]


def bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<N>/bin`` with ``initdb`` and ``pg_ctl``, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def require_postgres() -> None:
    """Skip the calling test where no PostgreSQL server can start (fail in CI, which must
    have installed it)."""
    import pytest

    if bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install PostgreSQL (scripts/setup.sh --with-test-deps)")
        pytest.skip("PostgreSQL server binaries are not installed (apt install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    user: str
    password: str
    bindir: Path
    socket_dir: Path
    data: Path | None = None
    options: str = ""

    def restart(self, down_s: float = 5.0) -> None:
        """Stop the server (``-m fast``: every connection is closed), stay down ``down_s``
        seconds, start it again on the same port and data."""
        assert self.data is not None
        pg_ctl = str(self.bindir / "pg_ctl")
        subprocess.run(_as_server_user([pg_ctl, "-D", str(self.data), "-m", "fast", "-w",  # noqa: S603 - argv list
                                        "-t", "60", "stop"]), check=True, timeout=90,
                       capture_output=True)
        time.sleep(down_s)
        subprocess.run(_as_server_user([pg_ctl, "-D", str(self.data), "-l",  # noqa: S603 - argv list
                                        str(self.data.parent / "server.log"), "-o",
                                        self.options, "-w", "-t", "60", "start"]),
                       check=True, timeout=90, capture_output=True)

    def url(self, database: str) -> str:
        return (f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}")

    def createdb(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),  # noqa: S603 - argv list
                        "-U", self.user, name], check=True, timeout=60, capture_output=True,
                       env={**os.environ, "PGPASSWORD": self.password})
        return self.url(name)


def _as_server_user(argv: Sequence[str]) -> list[str]:
    if os.geteuid() != 0:
        return list(argv)
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a private PostgreSQL cluster; always stop it and delete its files afterwards."""
    bindir = bin_dir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql; "
                           "install Debian's postgresql package (scripts/setup.sh "
                           "--with-test-deps does)")
    root = Path(tempfile.mkdtemp(prefix="mcnn-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    password = secrets.token_hex(12)
    (root / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        for path in (root, sock, root / "pw"):
            os.chown(path, pg.pw_uid, pg.pw_gid)
    port = _free_port()
    options = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c max_connections=200")
    server = PostgresServer(port, "mcnn", password, bindir, sock, data, options)
    started = False
    try:
        subprocess.run(_as_server_user([  # noqa: S603 - argv list
            str(bindir / "initdb"), "-D", str(data), "-U", "mcnn", "--pwfile", str(root / "pw"),
            "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
            "--no-sync"]), check=True, timeout=120, capture_output=True)
        subprocess.run(_as_server_user([  # noqa: S603 - argv list
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o",
            options, "-w", "-t", "60", "start"]), check=True, timeout=90, capture_output=True)
        started = True
        yield server
    finally:
        if started:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m",  # noqa: S603 - argv list
                                            "immediate", "-w", "-t", "30", "stop"]),
                           check=False, timeout=60, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# -- what the tests of drivers sharing a study on this server need ---------------------------
def launch_argv(space: Path, tree: Path, study: str, storage: str, tracking: str,
                workdir: Path, *extra: str) -> list[str]:
    """``study launch`` on the server's stores (a target no trial reaches, no pruning)."""
    return [sys.executable, "-m", "explorer.cli", "study", "launch", "--space", str(space),
            "--data", str(tree), "--study", study, "--storage", storage, "--tracking-uri",
            tracking, "--target-accuracy", "0.99", "--trial-timeout", "240", "--pruner", "none",
            "--workdir", str(workdir), *extra]


def one_parent(tracking: str, study: str) -> list[Run]:
    """The study's MLflow runs, asserting that there is exactly one parent (study) run."""
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(study)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mcnn.role") == "study"]
    assert len(parents) == 1, [p.info.run_id for p in parents]
    return runs


def assert_all_exited_0(results: list[tuple[subprocess.Popen[str], str]],
                        pg: PostgresServer) -> None:
    """Every driver exited 0, without a traceback, and never printed the password."""
    for d, out in results:
        assert d.returncode == 0, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert pg.password not in out  # storage URLs are printed masked
