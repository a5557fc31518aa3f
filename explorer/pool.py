"""The host pool: disjoint node slices for trials that run at the same time.

A study on H hosts (a hostfile or a SLURM allocation) runs several trials at once, each on its
own slice of the hosts, so their timings never share a node. A slice is taken when a trial
launches and given back when it ends, for any reason (the driver releases it in a ``finally``).
A host can be excluded (a SLURM node drained or down): no new trial is placed on it until it is
back, and a trial already running there keeps it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence

from launchers.hosts import HostInfo
from launchers.slurm import unavailable_nodes

__all__ = ["NODE_CHECK_S", "NODE_RETRY_S", "HostPool", "NodeProbe", "slurm_probe"]

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

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def free(self) -> list[HostInfo]:
        return [h for h in self.hosts if h.name not in self._busy
                and h.name not in self.excluded]

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
