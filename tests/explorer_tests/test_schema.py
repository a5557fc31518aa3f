"""explorer.schema: the schema lock (SQLite flock, PostgreSQL advisory lock) and the race retry."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from explorer.schema import is_schema_race, retry_schema_race, schema_lock
from mcnn_base.errors import ConfigError


class _Orig(Exception):
    pass


class _DbError(Exception):
    """Shaped like a SQLAlchemy error: the driver's exception on ``.orig``."""

    def __init__(self, orig: Exception) -> None:
        super().__init__(str(orig))
        self.orig = orig


def test_a_lost_schema_race_is_recognised_and_other_errors_are_not():
    pg = _DbError(_Orig('duplicate key value violates unique constraint '
                        '"pg_type_typname_nsp_index"'))
    assert is_schema_race(pg)
    assert is_schema_race(_DbError(_Orig("table alembic_version already exists")))
    assert not is_schema_race(_DbError(_Orig("permission denied for schema public")))
    assert not is_schema_race(ConnectionError("connection refused"))


def test_retry_tries_again_after_a_race_and_fails_in_one_masked_line():
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _DbError(_Orig("relation \"alembic_version\" already exists"))
        return "opened"

    url = "postgresql://u:s3cret@db/x"
    assert retry_schema_race(flaky, what="--storage", url=url) == "opened"
    assert len(calls) == 3

    def denied() -> None:
        raise _DbError(_Orig("permission denied for schema public (user u:s3cret)\nLINE 2"))

    with pytest.raises(ConfigError) as err:
        retry_schema_race(denied, what="--storage", url=url)
    message = str(err.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith("--storage postgresql://u:***@db/x: cannot create or open")
    assert "permission denied" in message


def _holds(lock_urls: list[tuple[str, str]], log: list[str], name: str) -> None:
    with schema_lock(lock_urls):
        log.append(f"{name} in")
        time.sleep(0.3)
        log.append(f"{name} out")


def _assert_serialised(urls: list[tuple[str, str]], timeout: float) -> None:
    """Two threads hold the lock of ``urls`` for 0.3 s each: their holds never overlap."""
    log: list[str] = []
    threads = [threading.Thread(target=_holds, args=(urls, log, n)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert len(log) == 4
    assert log[0].split()[0] == log[1].split()[0], log  # in/out pairs never interleave
    assert log[2].split()[0] == log[3].split()[0], log


def test_sqlite_schema_lock_serialises_openers_of_one_database(tmp_path: Path):
    _assert_serialised([("--storage", f"sqlite:///{tmp_path}/o.db"),
                        ("--tracking-uri", f"sqlite:///{tmp_path}/m.db")], timeout=10)
    assert (tmp_path / "o.db.init-lock").exists()


def test_sqlite_schema_lock_waits_a_bounded_time(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/o.db"
    fd = os.open(tmp_path / "o.db.init-lock", os.O_RDWR | os.O_CREAT)
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(ConfigError, match=r"held its schema lock for over 0\.5s"), \
                schema_lock([("--storage", url)], timeout_s=0.5):
            pass
    finally:
        os.close(fd)


@pytest.mark.slow
def test_postgres_advisory_lock_serialises_drivers_and_names_an_unreachable_server():
    from tests.postgres import postgres_server, require_postgres

    require_postgres()
    with postgres_server() as pg:
        url = pg.createdb("locked")
        # the same database named twice, in two spellings, is locked once (no self-deadlock)
        other = url.replace("postgresql://", "postgresql+psycopg://")
        _assert_serialised([("--storage", url), ("--tracking-uri", other)], timeout=20)
        dead = url.replace(f":{pg.port}/", ":1/")
        with pytest.raises(ConfigError, match=r"cannot connect") as err, \
                schema_lock([("--storage", dead)], timeout_s=2):
            pass
        assert pg.password not in str(err.value)
