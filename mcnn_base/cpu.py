"""This host's CPU: model, ISA flags that decide the matmul speed, and its machine class.

Machines of the same kind differ: some have AMX (``amx_bf16``/``amx_tile``), some AVX512_BF16
without AMX, some only AVX-512F (where bf16 is emulated and slower than fp32). Every speed figure
names the class it was measured on, and node-seconds of different classes never mix.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ISA_FLAGS", "cpu_model", "isa_flags", "machine_class"]

# the flags that matter for the job's matmuls/convolutions, in /proc/cpuinfo's spelling
ISA_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")

CPUINFO = Path("/proc/cpuinfo")


def _field(text: str, name: str) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def isa_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The :data:`ISA_FLAGS` this host has (``cpuinfo``: the text of /proc/cpuinfo, read when
    None; an unreadable file gives no flags)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return ()
    flags = set((_field(cpuinfo, "flags") or "").split())
    return tuple(f for f in ISA_FLAGS if f in flags)


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return "unknown"
    return _field(cpuinfo, "model name") or "unknown"


def machine_class(flags: tuple[str, ...]) -> str:
    """``amx`` (AMX tiles with bf16), ``avx512-bf16`` (AVX512_BF16, no AMX), ``avx512`` (AVX-512F
    only: bf16 emulated) or ``other``."""
    if "amx_bf16" in flags and "amx_tile" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512f" in flags:
        return "avx512"
    return "other"
