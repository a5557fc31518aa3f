"""Outcome classification: a finished job's events, exit code and MPI log → a :class:`TrialOutcome`.

The order of the rules is the contract: a pruned trial is PRUNED; a job over its time limit is
FAILED ``timeout`` (the driver's ``--trial-timeout``, or SLURM's time limit, read from the job's
log); a job that exited 0 with a ``done`` event is COMPLETED; otherwise the job's own
``failed`` event names the reason, then Open MPI's report of a rank killed by a signal, then the
job's documented exit codes (2 bad input, 3 NaN loss, 4 cannot write its events), then the bare
exit code.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

from explorer.objective import TrialOutcome, interpolated_tta
from explorer.record import Outcome, median_images_per_sec
from launchers.base import JobHandle, JobState

__all__ = ["JOB_EXIT_REASONS", "classify", "io_reason", "killed_rank", "outcome_from_events",
           "slurm_time_limit"]

JOB_EXIT_REASONS = {2: "bad_input", 3: "nan_loss", 4: "io_error"}
_SLURM_LIMIT = re.compile(r"\*\*\* (JOB|STEP) (\S+) ON (\S+) CANCELLED AT (\S+) DUE TO TIME LIMIT")
_SIGNALLED = re.compile(r"process rank (\d+) with PID \d+ on node (\S+) exited on signal "
                        r"(\d+)(?: \(([^)]*)\))?")


def outcome_from_events(events: list[dict[str, Any]], state: JobState, returncode: int | None,
                        *, pruned: bool, nodes: int, wall_s: float) -> TrialOutcome:
    """Classify a finished job from its events and process state."""
    done = next((e for e in events if e.get("event") == "done"), None)
    failed = next((e for e in events if e.get("event") == "failed"), None)
    start = next((e for e in events if e.get("event") == "start"), None)
    epochs = [e for e in events if e.get("event") == "epoch"]
    accs = [e["val_accuracy"] for e in epochs if e.get("val_accuracy") is not None]
    rate = median_images_per_sec([float(e["images_per_sec"]) for e in epochs
                                  if "images_per_sec" in e])
    best = float(done["best_val_accuracy"]) if done else max(accs, default=0.0)
    startup = (done or start or {}).get("startup_s")
    target = ((start or {}).get("config") or {}).get("target_accuracy")
    curve = [(float(e["elapsed_s"]), float(e["val_accuracy"])) for e in epochs
             if e.get("val_accuracy") is not None and e.get("elapsed_s") is not None]

    trained = float(epochs[-1].get("epoch") or len(epochs)) if epochs else 0.0
    trained = int(trained) if trained.is_integer() else trained

    def outcome(kind: Outcome, reason: str, tta_s: float | None = None) -> TrialOutcome:
        interp = None
        if tta_s is not None:
            interp = interpolated_tta(curve, float(target)) if target is not None else tta_s
        return TrialOutcome(kind, reason, tta_s=tta_s, startup_s=startup,
                            best_val_accuracy=best, epochs=trained, wall_s=wall_s,
                            nodes=nodes, images_per_sec=rate,
                            tta_interp_s=tta_s if interp is None else interp)

    if pruned:
        return outcome(Outcome.PRUNED, f"pruned after epoch {trained:g}")
    if state is JobState.TIMEOUT:
        return outcome(Outcome.FAILED, "timeout")
    if state is JobState.COMPLETED and done is not None:
        return outcome(Outcome.COMPLETED, str(done.get("reason")), done.get("tta_s"))
    if failed is not None:
        detail = str(failed.get("detail", "")).strip().splitlines()
        why = f"{failed.get('reason')}: {detail[-1][:300]}" if detail else str(failed.get("reason"))
        return outcome(Outcome.FAILED, why)
    if state is JobState.COMPLETED:
        return outcome(Outcome.FAILED, "the job exited 0 without a done event")
    if returncode in JOB_EXIT_REASONS:  # the job's documented exit codes (explorer.mcnn.train)
        return outcome(Outcome.FAILED, f"{JOB_EXIT_REASONS[returncode]} (exit code "
                                       f"{returncode}, no failed event)")
    return outcome(Outcome.FAILED, f"{state.value.lower()} (exit code {returncode})")


def classify(events: list[dict[str, Any]], job: JobHandle, *, pruned: bool, nodes: int,
             wall_s: float) -> TrialOutcome:
    """:func:`outcome_from_events`, with a FAILED job's reason sharpened from its MPI log."""
    outcome = outcome_from_events(events, job.state, job.returncode, pruned=pruned, nodes=nodes,
                                  wall_s=wall_s)
    if outcome.state is not Outcome.FAILED or any(e.get("event") == "failed" for e in events):
        return outcome
    log = job.log_tail(200)
    limit = slurm_time_limit(log)
    if limit:
        return dataclasses.replace(outcome, reason=limit)
    killed = killed_rank(log)
    if killed:
        return dataclasses.replace(outcome, reason=killed)
    if job.returncode == 4:  # explorer.mcnn.train.EXIT_IO: it could not write its events
        return dataclasses.replace(outcome, reason=io_reason(job.log_path.parent))
    return outcome


def slurm_time_limit(log: str) -> str | None:
    """``timeout`` with SLURM's own words, when SLURM ended the job at its time limit."""
    found = _SLURM_LIMIT.search(log)
    if found is None:
        return None
    kind, ident, node, when = found.groups()
    return (f"timeout: SLURM's time limit ended {kind.lower()} {ident} on {node} at {when} "
            "(raise --trial-timeout, or the allocation's --time)")


def killed_rank(log: str) -> str | None:
    """A reason from Open MPI's report of a rank that died on a signal (e.g. SIGKILL)."""
    found = _SIGNALLED.search(log)
    if found is None:
        return None
    rank, node, sig, name = found.groups()
    return (f"rank {rank} on {node} was killed by signal {sig}"
            f"{f' ({name})' if name else ''}; mpirun ended the job")


def io_reason(folder: Path) -> str:
    """Why a job could not write its events in ``folder`` (its exit code 4)."""
    try:
        full = shutil.disk_usage(folder).free < 64 * 1024
    except OSError:
        full = False
    why = "No space left on device" if full else "the folder is not writable"
    return f"io_error: the job could not write its events in {folder}: {why}"
