"""The launcher seam: ``Launcher.launch(config, resources) -> Job``.

A :class:`Job` wraps one process session (``start_new_session=True``): ``mpirun`` and every rank it
starts share the session, so :meth:`Job.cancel` can end the whole tree — SIGTERM to every process of
the session, then SIGKILL after ``grace_s`` — and no rank or ``orted`` survives.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mcnn_base.hostnames import validate_hostname
from mcnn_base.native_logs import without_native_info

__all__ = ["Job", "JobHandle", "JobState", "Launcher", "Resources", "prepare_workdir",
           "process_start_ticks", "session_pids"]


class JobState(enum.Enum):
    """Shared by every backend and by the explorer's trial records."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class Resources:
    """Where and how a job runs: hosts, ranks and threads per node, binding, environment."""

    hosts: tuple[str, ...] = ("localhost",)
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    binding: str = "core"  # none | core | socket
    env: Mapping[str, str] = field(default_factory=dict)
    oversubscribe: bool = False
    mca: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ValueError("hosts must name at least one host")
        for h in self.hosts:
            validate_hostname(h)
        if self.ranks_per_node < 1 or self.threads_per_rank < 1:
            raise ValueError(
                f"ranks_per_node and threads_per_rank must be >= 1, got "
                f"{self.ranks_per_node=}, {self.threads_per_rank=}"
            )
        if self.binding not in ("none", "core", "socket"):
            raise ValueError(f"binding must be none, core or socket, got {self.binding=}")

    @property
    def nodes(self) -> int:
        return len(self.hosts)

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node


_PR_SET_PDEATHSIG = 1
_PRCTL: Any
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _term_with_parent() -> None:
    """In the child before exec: get SIGTERM when the launching thread dies (even by SIGKILL).

    ``mpirun`` answers SIGTERM by ending every rank, so a killed driver never leaves a job behind.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (tells a live pid from a reused one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[19])


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is ``sid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


class JobHandle(Protocol):
    """What the study loop needs of a running job (a :class:`Job`, or a simulated one)."""

    argv: list[str]
    pid: int
    started: float  # the clock's time at launch
    log_path: Path
    events_path: Path | None

    @property
    def state(self) -> JobState: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> JobState: ...

    def cancel(self) -> JobState: ...

    def log_tail(self, lines: int = 40) -> str: ...


class Job:
    """A running job: ``poll``/``wait``/``cancel`` and a :class:`JobState`."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path,
                 events_path: Path | None, timeout_s: float | None = None,
                 grace_s: float = 5.0, cwd: str | Path | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.events_path = events_path
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.started = time.time()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self._state = JobState.RUNNING
        self._proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env, "MCNN_LAUNCH_TIME": repr(self.started)},
            start_new_session=True, cwd=cwd, preexec_fn=_term_with_parent,
        )
        self.pid = self._proc.pid

    @property
    def state(self) -> JobState:
        self.poll()
        return self._state

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def poll(self) -> JobState:
        """Refresh and return the state; enforces ``timeout_s``."""
        if self._state.finished:
            return self._state
        code = self._proc.poll()
        if code is not None:
            self._finish(JobState.COMPLETED if code == 0 else JobState.FAILED)
        elif self.timeout_s is not None and time.time() - self.started > self.timeout_s:
            self._terminate()
            self._finish(JobState.TIMEOUT)
        return self._state

    def wait(self, timeout: float | None = None, interval: float = 0.2) -> JobState:
        """Block until the job ends (or ``timeout`` seconds pass); return the state."""
        deadline = None if timeout is None else time.time() + timeout
        while not self.poll().finished:
            if deadline is not None and time.time() > deadline:
                break
            time.sleep(interval)
        return self._state

    def cancel(self) -> JobState:
        """End the whole process tree: SIGTERM, then SIGKILL after the grace period."""
        if not self._state.finished:
            self._terminate()
            self._finish(JobState.CANCELLED)
        return self._state

    def _terminate(self) -> None:
        self._signal_session(signal.SIGTERM)
        deadline = time.time() + self.grace_s
        while time.time() < deadline:
            if self._proc.poll() is not None and not session_pids(self.pid):
                return
            time.sleep(0.1)
        self._signal_session(signal.SIGKILL)
        self._proc.wait()
        deadline = time.time() + self.grace_s
        while session_pids(self.pid) and time.time() < deadline:
            time.sleep(0.05)

    def _signal_session(self, sig: int) -> None:
        for pid in [self.pid, *session_pids(self.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _finish(self, state: JobState) -> None:
        self._state = state
        # ranks orphaned by a dead mpirun would otherwise outlive the job
        if session_pids(self.pid):
            self._signal_session(signal.SIGKILL)
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the job's log (TensorFlow's native INFO lines left out
        unless ``MCNN_VERBOSE=1``)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(without_native_info(text).splitlines()[-lines:])


def prepare_workdir(workdir: Path) -> tuple[Path, Path]:
    """Create ``workdir`` (absolute) and return it with a fresh events path inside it."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / "events.jsonl"
    events.unlink(missing_ok=True)  # events are appended: never mix two runs in one file
    return workdir, events


class Launcher(ABC):
    """Turns a training config plus resources into a running :class:`Job`."""

    grace_s: float = 5.0

    def _start(self, argv: Sequence[str], resources: Resources, workdir: Path,
               events: Path) -> Job:
        """Record ``argv`` in ``workdir/argv.txt`` and start it with the layout's thread env."""
        (workdir / "argv.txt").write_text(" ".join(argv) + "\n")
        env = {"OMP_NUM_THREADS": str(resources.threads_per_rank), **resources.env}
        return Job(argv, env=env, log_path=workdir / "job.log", events_path=events,
                   timeout_s=resources.timeout_s, grace_s=self.grace_s)

    @abstractmethod
    def launch(self, config_path: Path, resources: Resources, *, workdir: Path,
               **options: Any) -> JobHandle:
        """Start the training job of ``config_path`` and return its handle."""

    def probe_argv(self, command: list[str], hosts: Sequence[str],
                   mca: Mapping[str, str]) -> list[str] | None:
        """The argv that runs ``command`` once on each of ``hosts`` (one rank per host, in
        ``hosts`` order), the way this launcher starts trials; None when it cannot (e.g. batch
        jobs, which would queue)."""
        return None
