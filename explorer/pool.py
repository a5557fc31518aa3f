"""The host pool: disjoint node slices for trials that run at the same time.

A study on H hosts (a hostfile or a SLURM allocation) runs several trials at once, each on its
own slice of the hosts, so their timings never share a node. A slice is taken when a trial
launches and given back when it ends, for any reason (the driver releases it in a ``finally``).
"""

from __future__ import annotations

from collections.abc import Sequence

from launchers.hosts import HostInfo

__all__ = ["HostPool"]


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

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def free(self) -> list[HostInfo]:
        return [h for h in self.hosts if h.name not in self._busy]

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
