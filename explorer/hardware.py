"""Each host's hardware (ISA flags, memory), read once per pool and cached in the study.

The local host is read from ``/proc`` (:func:`launchers.hosts.detect_local`). Hosts of a
hostfile or a SLURM allocation are read where they are: the study's launcher runs
``python -m mcnn_base.cpu`` once on each of them, the way it starts trials (``mpirun`` with the
study's ``--mca`` settings, or ``srun`` inside an allocation), and each prints one JSON record.
What was read is kept on the study (user attribute ``host_hardware``), so a resumed study or a
second driver does not read it again. A host that cannot be read keeps unknown flags: nothing is
refused on it (a warning says so).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from launchers.base import Launcher
from launchers.hosts import HostInfo

__all__ = ["HARDWARE_ATTR", "read_hosts", "with_hardware"]

HARDWARE_ATTR = "host_hardware"  # study user attribute: host -> {"isa": [...], "memory_gib": x}
PROBE = [sys.executable, "-m", "mcnn_base.cpu"]


def read_hosts(hosts: Sequence[str], launcher: Launcher, mca: Mapping[str, str], *,
               timeout_s: float = 120.0, attempts: int = 2) -> dict[str, dict[str, Any]] | str:
    """Read the hardware of ``hosts`` through ``launcher``: host -> record, or why not.

    A probe that exits 0 yet prints no record is tried again (``attempts`` in all): under load,
    ``mpirun`` inside a SLURM allocation has been seen to do that once in a few runs.
    """
    argv = launcher.probe_argv(PROBE, hosts, mca)
    if argv is None:
        return "the launcher cannot run a command on the hosts (batch jobs would queue)"
    for attempt in range(1, max(1, attempts) + 1):
        read, silent = _probe(argv, hosts, timeout_s)
        if not (silent and attempt < attempts):
            break
    return read


def _probe(argv: list[str], hosts: Sequence[str],
           timeout_s: float) -> tuple[dict[str, dict[str, Any]] | str, bool]:
    """Run one probe: (host -> record, or why nothing was read; whether it exited 0 yet
    printed no record)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,  # noqa: S603 - argv list
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"{argv[0]} did not finish within {timeout_s:g} s", False
    except OSError as exc:
        return f"{argv[0]} could not run: {exc.strerror or exc}", False
    found: dict[str, dict[str, Any]] = {}
    for record in _records(done.stdout):
        rank = record.get("rank")
        name = record.get("node") if record.get("node") in hosts else (
            hosts[rank] if isinstance(rank, int) and 0 <= rank < len(hosts) else None)
        if name is not None:
            found[str(name)] = {"isa": record.get("isa"), "memory_gib": record.get("memory_gib")}
    if not found:
        if done.returncode == 0:
            head = done.stdout.strip().splitlines()[:1] or ["nothing"]
            return (f"{argv[0]} printed no hardware record for them "
                    f"(stdout: {head[0][:200]!r})"), True
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"{argv[0]} exited with {done.returncode}: {tail[0][:200]}", False
    return found, False


def _records(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text``, wherever it starts: ``mpirun`` forwards each rank's output
    as it comes, so one rank's record can run on into the next one's without a newline."""
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    start = text.find("{")
    while start >= 0:
        try:
            record, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(record, dict):
            out.append(record)
        start = text.find("{", end)
    return out


def with_hardware(study: optuna.Study, hosts: list[HostInfo], launcher: Launcher,
                  mca: Mapping[str, str], log: Callable[[str], None]) -> list[HostInfo]:
    """``hosts`` with their ISA flags and memory: from the host itself (local), from the
    study's cache, or read now through ``launcher`` (then cached)."""
    cached: dict[str, dict[str, Any]] = dict(study.user_attrs.get(HARDWARE_ATTR) or {})
    unknown = [h.name for h in hosts if h.isa is None and h.name not in cached]
    if unknown:
        read = read_hosts(unknown, launcher, mca)
        if isinstance(read, str):
            log(f"could not read the hardware of {', '.join(unknown)} ({read}); their bf16 "
                "support is unknown, so bf16 trials run there as sampled")
        else:
            cached.update(read)
            missing = [n for n in unknown if n not in read]
            if missing:
                log(f"no hardware record from {', '.join(missing)}; bf16 runs there as sampled")
            study.set_user_attr(HARDWARE_ATTR, cached)
    out = []
    for h in hosts:
        known = cached.get(h.name)
        if h.isa is None and known and known.get("isa") is not None:
            h = dataclasses.replace(h, isa=tuple(known["isa"]),
                                    memory_gib=known.get("memory_gib"))
        out.append(h)
    return out
