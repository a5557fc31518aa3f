"""Host descriptions: this machine's cores/sockets, Open MPI hostfiles, SLURM allocations.

Host names are checked by :func:`mcnn_base.hostnames.validate_hostname`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mcnn_base.cpu import has_bf16, isa_flags, memory_gib
from mcnn_base.errors import ConfigError
from mcnn_base.hostnames import validate_hostname

__all__ = [
    "HostInfo",
    "detect_local",
    "expand_nodelist",
    "hosts_from_slurm",
    "parse_cpus_per_node",
    "read_hostfile",
]

@dataclass(frozen=True)
class HostInfo:
    """One node: its name, cores (slots), sockets and NUMA nodes, and, where they were read, the
    ISA flags that decide its matmul speed (:data:`mcnn_base.cpu.ISA_FLAGS`) and its memory."""

    name: str
    cores: int
    sockets: int = 1
    numa_nodes: int = 1
    isa: tuple[str, ...] | None = None  # None: not read (a host of a hostfile or allocation)
    memory_gib: float | None = None

    @property
    def bf16_hardware(self) -> bool | None:
        """Native bf16 math (AVX512_BF16 or AMX); None when the flags were not read."""
        return None if self.isa is None else has_bf16(self.isa)

    @property
    def amx_hardware(self) -> bool | None:
        """AMX tiles with bf16 (where oneDNN runs float32 math in bf16); None when not read."""
        return None if self.isa is None else "amx_bf16" in self.isa


def detect_local() -> HostInfo:
    """Describe this machine from sysfs: usable cores (affinity), sockets and NUMA nodes."""
    cores = len(os.sched_getaffinity(0))
    sockets: set[str] = set()
    for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/physical_package_id"):
        try:
            sockets.add(cpu.read_text().strip())
        except OSError:
            continue
    numa = len(list(Path("/sys/devices/system/node").glob("node[0-9]*")))
    return HostInfo("localhost", cores, max(1, len(sockets)), max(1, numa), isa=isa_flags(),
                    memory_gib=memory_gib())


def read_hostfile(path: str | Path) -> list[HostInfo]:
    """Read an Open MPI hostfile (``name [slots=N] [max_slots=M]`` per line, ``#`` comments).

    Raises:
        ConfigError: a missing file, a bad host name or a bad ``slots`` value, with its line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"hostfile {str(path)!r} does not exist")
    hosts: list[HostInfo] = []
    local = detect_local()
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, *opts = line.split()
        try:
            validate_hostname(name)
        except ConfigError as exc:
            raise ConfigError(f"{path}:{lineno}: {exc}; the line reads {line!r}") from None
        slots = local.cores
        for opt in opts:
            key, _, value = opt.partition("=")
            if key in ("slots", "max_slots", "max-slots"):
                if not value.isdigit() or int(value) < 1:
                    raise ConfigError(f"{path}:{lineno}: {key} must be a positive integer, "
                                      f"got {value!r}")
                if key == "slots":
                    slots = int(value)
            else:
                raise ConfigError(f"{path}:{lineno}: unknown hostfile option {opt!r} "
                                  "(expected slots=N or max_slots=N)")
        hosts.append(HostInfo(name, slots, 1))
    if not hosts:
        raise ConfigError(f"hostfile {path} names no host")
    return hosts


# --------------------------------------------------------------------------------------------
# SLURM allocations: compressed node lists and per-node CPU counts
# --------------------------------------------------------------------------------------------

_RANGE_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")
_CPUS_ITEM = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")
MAX_EXPANDED_HOSTS = 65536


def _split_top_level(nodelist: str) -> list[str]:
    """Split ``nodelist`` at the commas that are outside ``[...]``; reject unbalanced brackets."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(nodelist):
        if ch == "[":
            if depth:
                raise ConfigError(f"invalid SLURM node list {nodelist!r}: nested '[' at "
                                  f"position {i}; expected name[1-3,5] groups")
            depth = 1
        elif ch == "]":
            if not depth:
                raise ConfigError(f"invalid SLURM node list {nodelist!r}: ']' without '[' at "
                                  f"position {i}")
            depth = 0
        elif ch == "," and not depth:
            items.append(nodelist[start:i])
            start = i + 1
    if depth:
        raise ConfigError(f"invalid SLURM node list {nodelist!r}: '[' is never closed; "
                          "expected name[1-3,5]")
    items.append(nodelist[start:])
    return items


def _expand_ranges(body: str, item: str) -> list[str]:
    """Expand the inside of one bracket group (``01-03,07``), keeping zero padding."""
    values: list[str] = []
    for part in body.split(","):
        m = _RANGE_ITEM.match(part)
        if m is None:
            raise ConfigError(f"invalid range {part!r} in SLURM host {item!r}: expected N or "
                              "N-M with digits only (e.g. node[01-03,7])")
        lo_text, hi_text = m.group(1), m.group(2)
        if hi_text is None:
            values.append(lo_text)
            continue
        lo, hi = int(lo_text), int(hi_text)
        if lo > hi:
            raise ConfigError(f"invalid range {part!r} in SLURM host {item!r}: start {lo} is "
                              f"greater than end {hi}")
        if hi - lo + 1 > MAX_EXPANDED_HOSTS:
            raise ConfigError(f"range {part!r} in SLURM host {item!r} names {hi - lo + 1} hosts; "
                              f"expected at most {MAX_EXPANDED_HOSTS}")
        width = len(lo_text)
        values += [str(v).zfill(width) for v in range(lo, hi + 1)]
    return values


def _expand_item(item: str) -> list[str]:
    """Expand one top-level entry (``a[1-2]-ib``, ``rack[1-2]n[01-02]``, ``gpu5``)."""
    names = [""]
    rest = item
    while rest:
        open_at = rest.find("[")
        if open_at < 0:
            names = [n + rest for n in names]
            break
        close_at = rest.find("]", open_at)
        if close_at < 0:  # _split_top_level already rejects this; kept for direct callers
            raise ConfigError(f"invalid SLURM host {item!r}: '[' is never closed")
        prefix, body = rest[:open_at], rest[open_at + 1 : close_at]
        values = _expand_ranges(body, item)
        names = [n + prefix + v for n in names for v in values]
        if len(names) > MAX_EXPANDED_HOSTS:
            raise ConfigError(f"SLURM host {item!r} expands to more than {MAX_EXPANDED_HOSTS} "
                              "hosts")
        rest = rest[close_at + 1 :]
    return names


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM compressed host list into host names, in order.

    ``node[01-03,07],gpu5`` → ``node01 node02 node03 node07 gpu5``; ``a[1-2]-ib,b`` →
    ``a1-ib a2-ib b``. Zero padding is kept (the width of a range's start), several bracket
    groups in one name expand as a product, and every resulting name must pass
    :func:`validate_hostname`.

    Args:
        nodelist: the value of ``SLURM_JOB_NODELIST`` (or any ``scontrol``-style host list).

    Returns:
        The host names, in the order the list gives them.

    Raises:
        ConfigError: an empty list or entry, unbalanced or nested brackets, a range that is not
            ``N``/``N-M`` or runs backwards, or a name with characters a shell would parse.
    """
    if not isinstance(nodelist, str) or not nodelist.strip():
        raise ConfigError(f"invalid SLURM node list {nodelist!r}: expected host names such as "
                          "'node[01-03],gpu5'")
    text = nodelist.strip()
    hosts: list[str] = []
    for item in _split_top_level(text):
        if not item:
            raise ConfigError(f"invalid SLURM node list {nodelist!r}: empty entry between commas")
        for name in _expand_item(item):
            try:
                validate_hostname(name)
            except ConfigError as exc:
                raise ConfigError(f"SLURM node list entry {item!r}: {exc}") from None
            hosts.append(name)
        if len(hosts) > MAX_EXPANDED_HOSTS:
            raise ConfigError(f"SLURM node list {nodelist!r} names more than "
                              f"{MAX_EXPANDED_HOSTS} hosts")
    return hosts


def parse_cpus_per_node(value: str, n: int) -> list[int]:
    """Expand ``SLURM_JOB_CPUS_PER_NODE`` (``36(x2),18`` → ``[36, 36, 18]``) for ``n`` nodes.

    Args:
        value: comma-separated ``C`` or ``C(xK)`` items (``K`` nodes with ``C`` CPUs each).
        n: the number of nodes in the allocation; the expansion must have exactly ``n`` entries.

    Returns:
        One CPU count per node, in node-list order.

    Raises:
        ConfigError: a malformed item, a count below 1, or a total that is not ``n`` nodes.
    """
    counts: list[int] = []
    for part in value.strip().split(","):
        m = _CPUS_ITEM.match(part.strip())
        if m is None:
            raise ConfigError(f"invalid CPUs-per-node item {part!r} in {value!r}: expected C or "
                              "C(xK), e.g. '36(x2),18'")
        cpus, repeat = int(m.group(1)), int(m.group(2) or 1)
        if cpus < 1 or repeat < 1:
            raise ConfigError(f"invalid CPUs-per-node item {part!r} in {value!r}: counts must "
                              "be >= 1")
        if len(counts) + repeat > max(n, 0):
            raise ConfigError(f"CPUs-per-node {value!r} describes more than the {n} node(s) of "
                              "the node list")
        counts += [cpus] * repeat
    if len(counts) != n:
        raise ConfigError(f"CPUs-per-node {value!r} describes {len(counts)} node(s), but the "
                          f"node list has {n}")
    return counts


def hosts_from_slurm(environ: Mapping[str, str] | None = None) -> list[HostInfo]:
    """Describe the nodes of the current SLURM allocation.

    Host names come from ``SLURM_JOB_NODELIST`` (or ``SLURM_NODELIST``); cores per node from
    ``SLURM_JOB_CPUS_PER_NODE``, else ``SLURM_CPUS_ON_NODE`` (the same on every node), else
    this machine's core count.

    Args:
        environ: the environment to read; ``os.environ`` when ``None``.

    Returns:
        One :class:`HostInfo` per allocated node (``sockets`` is 1: SLURM does not say).

    Raises:
        ConfigError: not inside an allocation (no node list), a malformed node list or CPU
            count, or a CPU count that does not match the number of nodes.
    """
    env = os.environ if environ is None else environ
    key = "SLURM_JOB_NODELIST" if env.get("SLURM_JOB_NODELIST") else "SLURM_NODELIST"
    nodelist = env.get(key)
    if not nodelist:
        raise ConfigError("not inside a SLURM allocation: neither SLURM_JOB_NODELIST nor "
                          "SLURM_NODELIST is set (run under salloc/sbatch, or pass hosts)")
    try:
        names = expand_nodelist(nodelist)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if env.get("SLURM_JOB_CPUS_PER_NODE"):
        try:
            counts = parse_cpus_per_node(env["SLURM_JOB_CPUS_PER_NODE"], len(names))
        except ConfigError as exc:
            raise ConfigError(f"SLURM_JOB_CPUS_PER_NODE with {key}={nodelist!r}: {exc}") from None
    elif env.get("SLURM_CPUS_ON_NODE"):
        raw = env["SLURM_CPUS_ON_NODE"].strip()
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"SLURM_CPUS_ON_NODE must be a positive integer, got {raw!r}")
        counts = [int(raw)] * len(names)
    else:
        counts = [detect_local().cores] * len(names)
    return [HostInfo(name, cores, 1) for name, cores in zip(names, counts, strict=True)]
