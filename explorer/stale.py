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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from explorer.record import Outcome, TrialRecord, enqueue, live_trial, set_attrs
from launchers.base import process_start_ticks, session_pids

__all__ = ["driver_identity", "kill_leftovers", "recover_stale", "requeue", "stale_reason"]


def driver_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start_ticks": process_start_ticks(pid)}


def stale_reason(trial: optuna.trial.FrozenTrial, *, now: float, stale_after_s: float,
                 host: str | None = None) -> str | None:
    """Why ``trial`` (RUNNING) is stale, or None if its driver may still be alive."""
    host = host or socket.gethostname()
    r = TrialRecord.from_frozen(trial)
    if r.driver.get("host") == host:
        pid = int(r.driver.get("pid", -1))
        if pid == os.getpid():
            return None
        ticks = process_start_ticks(pid) if pid > 0 else None
        if ticks is None or ticks != r.driver.get("start_ticks"):
            return f"stale: driver pid {pid} on {host} is gone"
        return None
    beat = r.heartbeat if r.heartbeat is not None else r.start
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


def recover_stale(study: optuna.Study, storage: optuna.storages.BaseStorage, *,
                  stale_after_s: float, retry: bool,
                  on_stale: Callable[[TrialRecord, str], None] | None = None) -> list[int]:
    """Mark every stale RUNNING trial of ``study`` FAILED; return their numbers.

    Args:
        study: the study to scan.
        storage: the study's storage (to write the stale trials' records).
        stale_after_s: heartbeat age after which a trial of another host's driver is stale.
        retry: enqueue the parameters of each stale trial once more.
        on_stale: called as ``on_stale(record, reason)`` before the trial is told FAILED.
    """
    now = time.time()
    host = socket.gethostname()
    recovered = []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        reason = stale_reason(frozen, now=now, stale_after_s=stale_after_s, host=host)
        if reason is None:
            continue
        r = TrialRecord.from_frozen(frozen)
        if r.job and r.driver.get("host") == host:
            kill_leftovers(r.job)
        set_attrs(live_trial(study, storage, frozen.number), stale=True, state=Outcome.FAILED,
                  reason=reason)
        if on_stale is not None:
            on_stale(r, reason)
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
        if retry:
            requeue(study, frozen, r, sampled=True)
        recovered.append(frozen.number)
    return recovered


def requeue(study: optuna.Study, frozen: optuna.trial.FrozenTrial, record: TrialRecord, *,
            sampled: bool) -> bool:
    """Queue a failed trial's configuration once more (a retry is never retried): a fixed trial
    (baseline, repeat, layout measurement) as it was; otherwise its parameters, the sampled ones
    only when ``sampled`` (else only those a user queued). True when it was queued."""
    if record.retry_of is not None:
        return False
    if record.fixed:
        enqueue(study, retry_of=frozen.number, fixed=record.fixed, baseline=record.baseline,
                confirm_of=record.confirm_of, stage=record.stage)
        return True
    params = frozen.params if sampled else dict(frozen.system_attrs.get("fixed_params") or {})
    if params:
        enqueue(study, params, retry_of=frozen.number)
        return True
    return False
