"""Checks that run before a study writes anything, so a typo costs a second, not a study.

Each raises :class:`~mcnn_base.errors.ConfigError` naming the bad value and what was expected; a
URL is always shown with its password masked (:func:`mcnn_base.urls.mask_url`), and so is any
database error text quoted with it.

* :func:`check_storage` — an Optuna storage URL: a SQLite file whose folder exists (a SQLite
  database if the file exists), or a database server that accepts a connection;
* :func:`check_tracking` — an MLflow tracking URI: a SQLite file's folder must exist (a server that
  goes away later is the tracker's business, see :class:`explorer.tracking.Tracker`);
* :func:`writable_dir` — a run folder that can be created and written (not below a file, not
  read-only, not full);
* :func:`check_data_root` — a folder holding both BBBC021 CSVs;
* :func:`check_layout` — at least one sample of a space fits the hosts (otherwise every trial
  would be recorded infeasible until the driver gives up).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy
from sqlalchemy.engine import make_url

from explorer.mcnn.bbbc021 import IMAGE_CSV, MOA_CSV
from mcnn_base.errors import ConfigError, os_error_message
from mcnn_base.urls import mask_url, scrub
from search_spaces.baseline import file_baseline
from search_spaces.feasibility import smallest_verdicts

if TYPE_CHECKING:
    from explorer.study import StudySettings
    from launchers.hosts import HostInfo
    from search_spaces.space import SearchSpace

__all__ = ["check_data_root", "check_launch", "check_layout", "check_storage", "check_tracking",
           "layout_problem", "writable_dir"]

SQLITE_MAGIC = b"SQLite format 3\x00"
CONNECT_TIMEOUT_S = 10
DATABASE_SCHEMES = frozenset({"postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle"})


def _sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None: not SQLite, or in memory)."""
    if not url.startswith("sqlite:"):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def _check_sqlite(path: Path, what: str) -> None:
    if not path.parent.is_dir():
        raise ConfigError(f"{what}: folder {str(path.parent)!r} does not exist; expected an "
                          "existing folder (SQLite creates the database file, not its folder)")
    if path.is_dir():
        raise ConfigError(f"{what}: {str(path)!r} is a folder; expected a SQLite database file")
    if path.is_file():
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
        if head and head != SQLITE_MAGIC:
            raise ConfigError(f"{what}: {str(path)!r} is not a SQLite database")
    elif not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{what}: folder {str(path.parent)!r} is not writable; expected a "
                          "folder where the database file can be created")


def _reason(exc: BaseException, url: str) -> str:
    """The first line of a database error (its driver's own message), password removed."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return scrub(lines[0] if lines else type(orig).__name__, url)


def _connect(url: str, what: str) -> None:
    """Open (and close) one connection to the database server of ``url``."""
    try:
        parsed = make_url(url)
    except Exception:  # sqlalchemy.exc.ArgumentError and friends
        raise ConfigError(f"{what}: not a database URL; expected e.g. sqlite:///optuna.db or "
                          "postgresql://user:password@host/database") from None
    args: dict[str, Any] = {}
    if parsed.get_backend_name() in ("postgresql", "mysql"):
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=args)
    except ImportError as exc:
        raise ConfigError(f"{what}: the database driver of {parsed.drivername!r} is not "
                          f"installed ({exc}); install it, or name an installed driver in the "
                          "URL (dialect+driver://...)") from None
    except Exception as exc:
        raise ConfigError(f"{what}: not a usable database URL ({_reason(exc, url)})") from None
    try:
        with engine.connect():
            pass
    except Exception as exc:
        raise ConfigError(f"{what}: cannot connect ({_reason(exc, url)}); expected a running "
                          "database server that holds this database and accepts this user"
                          ) from None
    finally:
        engine.dispose()


def check_storage(url: str, flag: str = "--storage") -> None:
    """An Optuna storage URL that can be opened: its SQLite folder exists, or its server answers."""
    what = f"{flag} {mask_url(url)}"
    path = _sqlite_file(url)
    if path is not None:
        _check_sqlite(path, what)
    elif not url.startswith("sqlite:"):
        _connect(url, what)


def check_tracking(uri: str, flag: str = "--tracking-uri", *, connect: bool = False) -> None:
    """An MLflow tracking URI whose SQLite folder exists; with ``connect``, a database server
    (PostgreSQL, MySQL, ...) must also answer now (MLflow itself retries for minutes)."""
    what = f"{flag} {mask_url(uri)}"
    path = _sqlite_file(uri)
    if path is not None:
        _check_sqlite(path, what)
    elif connect and urlsplit(uri).scheme.split("+")[0] in DATABASE_SCHEMES:
        _connect(uri, what)


def writable_dir(path: Path, flag: str) -> None:
    """Create ``path`` if needed and write (then remove) one byte in it."""
    what = f"{flag} {str(path)!r}"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} is a file; expected a folder to write runs in")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as exc:
        raise ConfigError(f"{what} cannot be written: {os_error_message(exc) or exc}; "
                          "expected a writable folder with free space") from None


def check_data_root(data: Path, flag: str = "--data") -> None:
    """A folder holding both CSVs of a BBBC021 tree (the TIFFs are checked by ``data prepare``)."""
    for name in (IMAGE_CSV, MOA_CSV):
        if not (data / name).is_file():
            raise ConfigError(f"{flag} {str(data)!r}: no {name} there; expected a BBBC021 tree "
                              "(see 'mcnn-explore data synth')")


def _smallest(space: SearchSpace, name: str, default: object) -> int | None:
    """The smallest integer a dimension (or the base value) can take; None if not numeric."""
    dim = space.dimensions.get(name)
    if dim is None:
        values = [default]
    elif dim.kind == "categorical":
        values = list(dim.choices)
    else:
        values = [dim.low]
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return int(min(numbers)) if numbers else None


def layout_problem(space: SearchSpace, hosts: Sequence[HostInfo]) -> str | None:
    """Why no sample of ``space`` can run on ``hosts`` (None: some sample may fit)."""
    layout = space.base.get("layout") or {}
    ranks = _smallest(space, "ranks_per_node", layout.get("ranks_per_node", 1)) or 1
    per_worker = _smallest(space, "per_worker_batch", space.base.get("per_worker_batch", 8)) or 1
    if "per_node_batch" in space.dimensions:  # the smallest global batch: per node × nodes
        per_worker = max(1, (_smallest(space, "per_node_batch", 1) or 1) // ranks)
    verdicts = smallest_verdicts(
        nodes=_smallest(space, "nodes", 1) or 1,
        ranks=ranks,
        threads=_smallest(space, "threads_per_rank", layout.get("threads_per_rank", 1)) or 1,
        per_worker_batch=per_worker,
        largest_cores=max(h.cores for h in hosts), available_hosts=len(hosts),
        cap=space.constraints.max_global_batch)
    return next((v.reason for v in verdicts.values() if not v.feasible), None)


def check_layout(space: SearchSpace, hosts: Sequence[HostInfo]) -> None:
    problem = layout_problem(space, hosts)
    if problem is not None:
        names = ", ".join(f"{h.name} ({h.cores} cores)" for h in hosts[:4])
        more = f" and {len(hosts) - 4} more" if len(hosts) > 4 else ""
        raise ConfigError(f"search space {space.source or space.name}: no sample can run on "
                          f"{names}{more}: {problem}; lower the smallest values of those "
                          "dimensions or add hosts (--hosts)")


def check_launch(settings: StudySettings, space: SearchSpace) -> None:
    """Everything ``study launch`` can check before its first write."""
    check_storage(settings.storage)
    check_tracking(settings.tracking_uri)
    check_layout(space, settings.hosts)
    if settings.baseline not in (None, "seed"):  # the seed's mapping needs the split: later
        file_baseline(Path(str(settings.baseline)), settings.hosts)
    writable_dir(settings.workdir, "--workdir")
