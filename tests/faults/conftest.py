"""Helpers of the fault-injection suite: the real CLI in a subprocess, tmpfs mounts, and a check
that a failed job leaves no MPI process behind.

Orphans: :func:`job_processes` lists the live processes of MPI training jobs — ``mpirun`` (and its
aliases), the Open MPI daemons ``orted``/``prted`` and the Python ranks running
``explorer.mcnn.train`` — from ``/proc/*/cmdline``. The machine is shared (other tests may run jobs
at the same time), so the :func:`no_orphans` fixture tags this test's processes: it sets
:data:`TAG_VAR` to a fresh value in the environment, which every process the test starts inherits
(``mpirun`` passes its environment to the daemons and ranks it forks), and after the test asserts
that no job process carrying the tag is still alive (waiting a grace period for them to exit)::

    def test_something(no_orphans):
        ...  # start studies / jobs in-process or through run_cli
    # the fixture fails the test if a tagged mpirun, orted/prted or rank survives

Without the fixture, diff two snapshots (this also sees other tests' jobs started meanwhile)::

    before = job_processes()
    ...
    assert not wait_for_no_new_processes(before)

Only processes forked on this machine inherit the tag; a daemon started through a remote agent
(ssh, a network namespace) may not, so multi-host tests should diff snapshots as well.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TAG_VAR = "MCNN_FAULT_TEST_TAG"
LAUNCHERS = frozenset({"mpirun", "mpirun.openmpi", "mpiexec", "orterun", "prterun"})
DAEMONS = frozenset({"orted", "prted"})
TRAIN_MODULE = "explorer.mcnn.train"


@dataclass(frozen=True)
class JobProcess:
    pid: int
    kind: str  # "mpirun" | "daemon" | "rank"
    cmdline: str


def _argv(pid: str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone, or not ours to read
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _tagged(pid: str, tag: str) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{TAG_VAR}={tag}".encode() in env.split(b"\0")


def job_processes(tag: str | None = None) -> list[JobProcess]:
    """Live MPI-job processes (a zombie has no command line and is not listed); with ``tag``,
    only those whose environment carries ``TAG_VAR=tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _argv(entry.name)
        if not argv:
            continue
        name = Path(argv[0]).name
        kind = ("mpirun" if name in LAUNCHERS else "daemon" if name in DAEMONS
                else "rank" if TRAIN_MODULE in argv else None)
        if kind is None or (tag is not None and not _tagged(entry.name, tag)):
            continue
        found.append(JobProcess(int(entry.name), kind, " ".join(argv)))
    return found


def count_job_processes(tag: str | None = None) -> Counter[str]:
    """How many ``mpirun``, ``daemon`` and ``rank`` processes are alive (see :func:`job_processes`)."""
    return Counter(p.kind for p in job_processes(tag))


def wait_for_no_new_processes(before: list[JobProcess], grace_s: float = 15.0,
                              tag: str | None = None) -> list[JobProcess]:
    """Wait up to ``grace_s`` seconds for every job process not in ``before`` (a
    :func:`job_processes` snapshot) to exit; return those still alive (empty: none left)::

        before = job_processes()
        ...  # run the study
        assert not wait_for_no_new_processes(before)

    Untagged, it also sees jobs other tests start meanwhile; pass ``tag`` (see
    :func:`no_orphans`) to look only at this test's processes.
    """
    known = {p.pid for p in before}
    deadline = time.time() + grace_s
    while True:
        left = [p for p in job_processes(tag) if p.pid not in known]
        if not left or time.time() > deadline:
            return left
        time.sleep(0.2)


def assert_no_job_processes(tag: str, grace_s: float = 15.0) -> None:
    """Fail unless every job process tagged ``tag`` has exited within ``grace_s`` seconds."""
    left = wait_for_no_new_processes([], grace_s, tag=tag)
    if left:
        listing = "\n  ".join(f"{p.pid} {p.kind}: {p.cmdline[:200]}" for p in left)
        raise AssertionError(f"{len(left)} job process(es) left behind:\n  {listing}")


@pytest.fixture
def no_orphans(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tag every process this test starts; after it, assert none of its job processes is alive.

    Yields the tag (already exported as ``TAG_VAR``; pass ``os.environ`` on to subprocesses).
    """
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG_VAR, tag)
    assert count_job_processes(tag) == Counter()
    yield tag
    assert_no_job_processes(tag)


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 120.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m explorer.cli ARGS`` in a subprocess (the real entry point, exit code and
    streams), with this checkout first on ``PYTHONPATH``."""
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [environ.get("PYTHONPATH")])])
    return subprocess.run(  # noqa: S603 - a fixed argv
        [sys.executable, "-m", "explorer.cli", *map(str, args)], cwd=cwd, env=environ,
        capture_output=True, text=True, timeout=timeout, check=False)


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str,
                      code: int = 2) -> str:
    """The process failed with ``code`` and exactly one ``error:`` line holding every needle, and
    no traceback; returns that line."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    return errors[0]


def can_mount() -> str | None:
    """Why tmpfs mounts are impossible here (None: they work)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = Path(f"/tmp/mcnn-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],  # noqa: S603
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
        subprocess.run(["umount", str(probe)], check=False)  # noqa: S603
        return None
    except OSError as exc:
        return f"cannot run mount: {exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """Mount a tmpfs at ``path`` (e.g. ``tmpfs(p, "size=64k")`` or ``"ro"``); always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options or ("size=1m",)),  # noqa: S603
                    "tmpfs", str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)  # noqa: S603


@pytest.fixture(scope="session")
def mountable() -> None:
    """Skip (with the reason) where tmpfs mounts are impossible: not root, or no mount rights."""
    reason = can_mount()
    if reason is not None:
        pytest.skip(reason)
