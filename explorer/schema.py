"""Safe schema creation when several drivers open the same new Optuna or MLflow database at once.

Optuna's ``RDBStorage`` and MLflow's ``SqlAlchemyStore`` both create their tables through alembic
when first opened. Two drivers doing so on a fresh database at the same moment both run
``CREATE TABLE alembic_version`` and one dies with a ``UniqueViolation`` (PostgreSQL) or
"table ... already exists" (SQLite). :func:`schema_lock` serialises that moment:

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on each database, taken on
  a connection of its own and released when the block ends (or the connection drops);
* SQLite: an exclusive ``flock`` on ``<database file>.init-lock`` beside the database, which
  covers several drivers on one host (SQLite files are not for several hosts anyway);
* any other database (MySQL, ...): no lock; :func:`retry_schema_race` is the only guard there,
  and that path is untested here.

Locks are taken in a fixed order (sorted by URL) so two drivers never wait on each other. Waiting
is bounded (``timeout_s``); a lock that cannot be had, or a schema that cannot be created for
good, is a :class:`~mcnn_base.errors.ConfigError` naming the masked URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from mcnn_base.errors import ConfigError
from mcnn_base.urls import mask_url, scrub

__all__ = ["LOCK_KEY", "is_schema_race", "retry_schema_race", "schema_lock"]

T = TypeVar("T")

# one 32-bit key for "mcnn-explorer creates a schema here" (advisory locks are per database)
LOCK_KEY = zlib.crc32(b"mcnn-explorer schema init")
DEFAULT_TIMEOUT_S = 300.0
# what a lost schema race looks like, whatever the database and driver say it in
_RACE_MARKERS = ("already exists", "duplicate key value violates unique constraint",
                 "uniqueviolation", "database is locked", "duplicate table",
                 "pg_type_typname_nsp_index")


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:"):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def _backend(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    return scheme.split("+", 1)[0]


def _deadline_loop(timeout_s: float, what: str, url: str) -> Iterator[None]:
    """Yield until the deadline, sleeping a little (with jitter) between tries."""
    end = time.monotonic() + timeout_s
    while True:
        yield
        if time.monotonic() >= end:
            raise ConfigError(f"{what} {mask_url(url)}: another driver held its schema lock for "
                              f"over {timeout_s:g}s; expected its schema creation to finish "
                              "(is a driver hung?)")
        time.sleep(0.1 + random.random() * 0.2)


@contextlib.contextmanager
def _sqlite_lock(path: Path, url: str, timeout_s: float, what: str) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".init-lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"{what} {mask_url(url)}: cannot create the lock file "
                          f"{str(lock_path)!r} ({exc.strerror or exc}); expected a writable "
                          "folder") from None
    try:
        for _ in _deadline_loop(timeout_s, what, url):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                continue
        yield
    finally:
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def _postgres_lock(url: str, timeout_s: float, what: str) -> Iterator[None]:
    def failure(exc: BaseException, doing: str) -> ConfigError:
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        return ConfigError(f"{what} {mask_url(url)}: {doing} "
                           f"({scrub(lines[0] if lines else type(orig).__name__, url)})")

    try:  # a driver that is not installed, a bad URL: one line
        engine = sqlalchemy.create_engine(url, poolclass=NullPool,
                                          connect_args={"connect_timeout": 10})
    except Exception as exc:
        raise failure(exc, "cannot use this database URL") from None
    try:
        try:
            conn = engine.connect()
        except Exception as exc:  # unreachable server, bad password: say so in one line
            raise failure(exc, "cannot connect") from None
        with conn:
            query = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)")
            try:
                for _ in _deadline_loop(timeout_s, what, url):
                    if conn.execute(query, {"key": LOCK_KEY}).scalar():
                        conn.commit()
                        break
                    conn.rollback()
            except ConfigError:
                raise
            except Exception as exc:  # the connection dropped while waiting
                raise failure(exc, "lost the connection while waiting for the schema lock"
                              ) from None
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dropped connection released it already
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"),
                                 {"key": LOCK_KEY})
                    conn.commit()
    finally:
        engine.dispose()


@contextlib.contextmanager
def schema_lock(urls: Iterable[tuple[str, str]], *,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the schema lock of every ``(what, url)`` database for the block.

    ``what`` names the URL in errors (``--storage``, ``--tracking-uri``). The same database named
    twice is locked once; HTTP tracking servers and unknown databases are not locked.
    """
    locks: dict[str, tuple[str, str, Path | None]] = {}  # key -> (what, url, sqlite file)
    for what, url in urls:
        path = _sqlite_path(url)
        key = f"sqlite:{path.resolve()}" if path is not None else _database_key(url)
        locks.setdefault(key, (what, url, path))
    with contextlib.ExitStack() as stack:
        for key in sorted(locks):
            what, url, path = locks[key]
            if path is not None:
                stack.enter_context(_sqlite_lock(path, url, timeout_s, what))
            elif _backend(url) in ("postgresql", "postgres"):
                stack.enter_context(_postgres_lock(url, timeout_s, what))
        yield


def _database_key(url: str) -> str:
    """The database a URL names, whatever its driver or user spells (lock identity)."""
    try:
        u = make_url(url)
    except Exception:  # not a database URL: the schema code reports it
        return url
    return f"{u.get_backend_name()}://{u.host or ''}:{u.port or ''}/{u.database or ''}"


def is_schema_race(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost race to create a table that another process just created."""
    text = f"{type(exc).__name__} {exc} {getattr(exc, 'orig', '')}".lower()
    return any(marker in text for marker in _RACE_MARKERS)


def retry_schema_race(fn: Callable[[], T], *, what: str, url: str, attempts: int = 5,
                      on_error: Callable[[str], BaseException] | None = None) -> T:
    """Call ``fn`` (which opens a store and may create its schema), again after a lost race.

    Any other failure, or a race lost ``attempts`` times, raises a :class:`ConfigError` (or
    ``on_error(message)``) naming the masked URL and the database's one-line reason.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except ConfigError:
            raise
        except Exception as exc:  # a store failure: classified below
            if is_schema_race(exc) and attempt < attempts - 1:
                time.sleep(0.5 + random.random() * 1.5)
                continue
            orig = getattr(exc, "orig", None) or exc
            lines = str(orig).strip().splitlines()
            reason = scrub(lines[0][:300] if lines else type(orig).__name__, url)
            message = (f"{what} {mask_url(url)}: cannot create or open its schema "
                       f"({type(orig).__name__}: {reason})")
            raise (on_error or ConfigError)(message) from None
    raise AssertionError("unreachable")
