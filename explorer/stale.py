"""Trials left RUNNING by a driver that died: detect them, end their jobs, mark them FAILED.

Each running trial carries user attributes written by its driver: ``driver`` (host, pid and the
pid's start time), ``heartbeat`` (refreshed while the job runs) and ``job`` (session id and trial
folder). A RUNNING trial is stale when

* its driver ran on this host and that process is gone (or the pid now belongs to another
  process, told apart by its start time), or
* its driver ran elsewhere and its heartbeat is older than ``stale_after_s``.

A stale trial's leftover processes (its job's session, identified by the session id *and* the trial
folder on a command line, so a reused pid is never killed) are SIGKILLed, the trial is marked FAILED
with ``reason = stale: ...``, its MLflow child run is ended FAILED, and — when asked — its
parameters are enqueued again so the config is retried.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import optuna

from launchers.base import process_start_ticks, session_pids

__all__ = ["driver_identity", "kill_leftovers", "recover_stale", "stale_reason"]


def driver_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start_ticks": process_start_ticks(pid)}


def stale_reason(trial: optuna.trial.FrozenTrial, *, now: float, stale_after_s: float,
                 host: str | None = None) -> str | None:
    """Why ``trial`` (RUNNING) is stale, or None if its driver may still be alive."""
    host = host or socket.gethostname()
    driver = trial.user_attrs.get("driver")
    if isinstance(driver, dict) and driver.get("host") == host:
        pid = int(driver.get("pid", -1))
        if pid == os.getpid():
            return None
        ticks = process_start_ticks(pid) if pid > 0 else None
        if ticks is None or ticks != driver.get("start_ticks"):
            return f"stale: driver pid {pid} on {host} is gone"
        return None
    beat = trial.user_attrs.get("heartbeat")
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    if beat is None or now - float(beat) > stale_after_s:
        age = "never" if beat is None else f"{now - float(beat):.0f}s ago"
        return f"stale: no heartbeat from its driver (last {age}, limit {stale_after_s:.0f}s)"
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_leftovers(job: dict[str, Any]) -> int:
    """SIGKILL what is left of a dead driver's job on this host; return how many were killed."""
    sid, workdir = int(job.get("pid", -1)), str(job.get("workdir", ""))
    if sid <= 0 or not workdir:
        return 0
    pids = session_pids(sid)
    if not any(workdir in _cmdline(pid) for pid in [sid, *pids]):
        return 0  # the session id was reused by something else: leave it alone
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def recover_stale(study: optuna.Study, *, stale_after_s: float, retry: bool,
                  on_stale: Any = None) -> list[int]:
    """Mark every stale RUNNING trial of ``study`` FAILED; return their numbers.

    Args:
        study: the study to scan.
        stale_after_s: heartbeat age after which a trial of another host's driver is stale.
        retry: enqueue the parameters of each stale trial once more.
        on_stale: called as ``on_stale(frozen_trial, reason)`` before the trial is told FAILED.
    """
    now = time.time()
    host = socket.gethostname()
    recovered = []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        reason = stale_reason(frozen, now=now, stale_after_s=stale_after_s, host=host)
        if reason is None:
            continue
        job = frozen.user_attrs.get("job")
        driver = frozen.user_attrs.get("driver") or {}
        if isinstance(job, dict) and driver.get("host") == host:
            kill_leftovers(job)
        live = optuna.trial.Trial(study, frozen._trial_id)
        live.set_user_attr("stale", True)
        live.set_user_attr("state", "FAILED")
        live.set_user_attr("reason", reason)
        if on_stale is not None:
            on_stale(frozen, reason)
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
        if retry and frozen.params and "retry_of" not in frozen.user_attrs:
            study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number},
                                skip_if_exists=False)
        recovered.append(frozen.number)
    return recovered
