"""The host pool: disjoint node slices for trials that run at the same time.

A study on H hosts (a hostfile or a SLURM allocation) runs several trials at once, each on its
own slice of the hosts, so their timings never share a node. A slice is taken when a trial
launches and given back when it ends, for any reason (the driver releases it in a ``finally``).
A host can be excluded (a SLURM node drained or down): no new trial is placed on it until it is
back, and a trial already running there keeps it. A host found unreachable after a trial failed
on it (:func:`unreachable`: the launcher cannot start a process there) is quarantined: no new
trial for the rest of the study (the study keeps the list, so a resumed study keeps it too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from launchers.base import Launcher
from launchers.hosts import HostInfo
from launchers.slurm import unavailable_nodes

__all__ = ["HOST_CHECK_S", "NODE_CHECK_S", "NODE_RETRY_S", "HostPool", "NodeProbe",
           "slurm_probe", "unreachable"]

HOST_CHECK_S = 30.0  # how long a host may take to run `true` after a trial failed on it

NODE_CHECK_S = 10.0  # how often a SLURM pool's node states are read (drained, down, ...)
NODE_RETRY_S = 60.0  # ... and after the probe could not tell (an unresponsive slurmctld)
NodeProbe = Callable[[list[str]], "dict[str, str] | None"]  # host -> why it is unavailable


def slurm_probe() -> NodeProbe | None:
    """Inside a SLURM allocation with ``sinfo``: read its nodes' states; else nothing."""
    if os.environ.get("SLURM_JOB_ID") and shutil.which("sinfo"):
        return unavailable_nodes
    return None


class HostPool:
    """Hands out disjoint slices of ``hosts``, first free hosts first."""

    def __init__(self, hosts: Sequence[HostInfo]) -> None:
        if not hosts:
            raise ValueError("a host pool needs at least one host")
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"the host pool names a host twice: {names}")
        self.hosts = list(hosts)
        self._busy: set[str] = set()
        self.excluded: dict[str, str] = {}  # host -> why no new trial is placed on it
        self.quarantined: dict[str, str] = {}  # host -> why: for the rest of the study

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def usable(self) -> int:
        """Hosts a trial may still get in this study (not quarantined)."""
        return sum(h.name not in self.quarantined for h in self.hosts)

    @property
    def free(self) -> list[HostInfo]:
        return [h for h in self.hosts if h.name not in self._busy
                and h.name not in self.excluded and h.name not in self.quarantined]

    def quarantine(self, reasons: Mapping[str, str]) -> dict[str, str]:
        """Place no new trial on these hosts (host -> why) for the rest of the study; returns
        the newly quarantined ones."""
        known = {h.name for h in self.hosts}
        new = {n: r for n, r in reasons.items() if n in known and n not in self.quarantined}
        self.quarantined.update(new)
        return new

    def refresh(self, probe: NodeProbe, log: Callable[[str], None]) -> bool | None:
        """Exclude the hosts ``probe`` says are unavailable (and take back the others), logging
        each change; whether anything changed, or None when the probe could not tell."""
        states = probe([h.name for h in self.hosts])
        if states is None:  # keep what we know
            return None
        new, back = self.exclude({n: f"SLURM node state {st}" for n, st in states.items()})
        for name, why in new.items():
            log(f"host {name} excluded ({why}): no new trial is placed on it; a trial running "
                "there goes on")
        for name in back:
            log(f"host {name} is back in the pool")
        return bool(new or back)

    def exclude(self, reasons: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """Place no new trial on the hosts of ``reasons`` (host -> why), and again on the others
        (a running trial keeps its host). Returns (newly excluded, newly back)."""
        known = {h.name for h in self.hosts}
        reasons = {n: r for n, r in reasons.items() if n in known}
        new = {n: r for n, r in reasons.items() if self.excluded.get(n) != r}
        back = [n for n in self.excluded if n not in reasons]
        self.excluded = reasons
        return new, back

    def acquire(self, nodes: int) -> list[HostInfo] | None:
        """Take ``nodes`` free hosts, or None while fewer are free.

        Raises:
            ValueError: ``nodes`` can never fit (more than the pool holds, or < 1): such a
                trial is infeasible and must not wait forever.
        """
        if not 1 <= nodes <= len(self.hosts):
            raise ValueError(f"a trial needs {nodes} node(s); the pool holds {len(self.hosts)}")
        free = self.free
        if len(free) < nodes:
            return None
        taken = free[:nodes]
        self._busy.update(h.name for h in taken)
        return taken

    def release(self, hosts: Sequence[HostInfo]) -> None:
        for h in hosts:
            self._busy.discard(h.name)


def unreachable(hosts: Sequence[str], launcher: Launcher, mca: Mapping[str, str], *,
                timeout_s: float = HOST_CHECK_S) -> dict[str, str]:
    """The hosts the launcher cannot start a process on now (host -> why), each checked on its
    own with ``true`` the way trials start (``mpirun -H host``, ``srun --nodelist``), all at
    once, for at most ``timeout_s``; empty when the launcher cannot run such a check."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for host in hosts:
        argv = launcher.probe_argv(["true"], [host], mca)
        if argv is None:
            break
        procs[host] = subprocess.Popen(argv, stdin=subprocess.DEVNULL,  # noqa: S603 - argv list
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       start_new_session=True)
    deadline = time.monotonic() + timeout_s
    lost: dict[str, str] = {}
    for host, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # mpirun and any daemon it started
            proc.communicate()
            lost[host] = f"it did not run `true` within {timeout_s:g} s"
            continue
        if proc.returncode != 0:
            tail = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            lost[host] = (f"`true` there exited {proc.returncode}"
                          + (f": {tail[-1][:160]}" if tail else ""))
    return lost
