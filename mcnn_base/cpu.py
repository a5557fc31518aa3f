"""This host's CPU: model, ISA flags that decide the matmul speed, and its machine class.

Machines of the same kind differ: some have AMX (``amx_bf16``/``amx_tile``), some AVX512_BF16
without AMX, some only AVX-512F (where bf16 is emulated and slower than fp32). Every speed figure
names the class it was measured on, and node-seconds of different classes never mix.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

__all__ = ["ISA_FLAGS", "cpu_model", "describe", "has_bf16", "isa_flags", "machine_class",
           "memory_gib"]

# the flags that matter for the job's matmuls/convolutions, in /proc/cpuinfo's spelling
ISA_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")

CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # either one runs bf16 math natively


def _field(text: str, name: str) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def _text(given: str | None, path: Path) -> str | None:
    """``given``, or the text of ``path`` read now (None when it cannot be read)."""
    if given is not None:
        return given
    try:
        return path.read_text()
    except OSError:
        return None


def isa_flags(cpuinfo: str | None = None) -> tuple[str, ...] | None:
    """The :data:`ISA_FLAGS` this host has (``cpuinfo``: the text of /proc/cpuinfo, read when
    None); None when they cannot be read (no file, or no x86 ``flags`` line, e.g. on aarch64),
    so that nothing is refused for a CPU this module cannot read."""
    cpuinfo = _text(cpuinfo, CPUINFO)
    if cpuinfo is None:
        return None
    line = _field(cpuinfo, "flags")
    if line is None:
        return None
    flags = set(line.split())
    return tuple(f for f in ISA_FLAGS if f in flags)


def cpu_model(cpuinfo: str | None = None) -> str:
    cpuinfo = _text(cpuinfo, CPUINFO)
    return (_field(cpuinfo, "model name") if cpuinfo is not None else None) or "unknown"


def machine_class(flags: tuple[str, ...] | None) -> str:
    """``amx`` (AMX tiles with bf16), ``avx512-bf16`` (AVX512_BF16, no AMX), ``avx512`` (AVX-512F
    only: bf16 emulated), ``other`` or ``unknown`` (flags not read)."""
    if flags is None:
        return "unknown"
    if "amx_bf16" in flags and "amx_tile" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512f" in flags:
        return "avx512"
    return "other"


def has_bf16(flags: tuple[str, ...]) -> bool:
    """Native bf16 math: without it TensorFlow emulates bf16, slower than float32."""
    return any(f in flags for f in BF16_FLAGS)


CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
                 Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # cgroup v1


def memory_gib(meminfo: str | None = None, limits: tuple[str | None, ...] | None = None
               ) -> float | None:
    """The memory this process may use, GiB: MemTotal, or the cgroup's limit when smaller (a
    container, a SLURM job with ``--mem``). None when /proc/meminfo cannot be read.

    ``meminfo``/``limits``: the texts of /proc/meminfo and of :data:`CGROUP_LIMITS` (read now
    when not given)."""
    meminfo = _text(meminfo, MEMINFO)
    if meminfo is None:
        return None
    value = _field(meminfo, "MemTotal")
    if not value or not value.split()[0].isdigit():
        return None
    total = int(value.split()[0]) * 1024  # kB
    if limits is None:
        limits = tuple(_text(None, p) for p in CGROUP_LIMITS)
    for text in limits:
        word = (text or "").strip()
        if word.isdigit() and 0 < int(word) < total:  # "max" (v2) or a huge v1 number: none
            total = int(word)
    return round(total / 1024**3, 1)


def describe() -> dict[str, object]:
    """This host's hardware as one JSON-able record (what ``python -m mcnn_base.cpu`` prints),
    with the launcher's rank and node name so that a probe of many hosts can tell them apart."""
    flags = isa_flags()
    rank = os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("SLURM_PROCID")
    return {"rank": None if rank is None else int(rank), "node": os.environ.get("SLURMD_NODENAME"),
            "hostname": socket.gethostname(), "isa": None if flags is None else list(flags),
            "machine_class": machine_class(flags), "memory_gib": memory_gib(),
            "cores": len(os.sched_getaffinity(0)), "model": cpu_model()}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(describe()) + "\n")  # one write: ranks' records do not interleave
    sys.stdout.flush()
