"""ISA flags, machine class and memory, read from /proc text of the three machine classes."""

from __future__ import annotations

import pytest

from launchers.hosts import HostInfo, detect_local
from mcnn_base.cpu import cpu_model, has_bf16, isa_flags, machine_class, memory_gib

# /proc/cpuinfo's first processor, trimmed to the fields read (flags cut to the relevant part)
AMX = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
       "flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512_vnni avx512_bf16 amx_bf16 amx_tile "
       "amx_int8\n\n")
AVX512_ONLY = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.80GHz\n"
               "flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512cd avx512bw avx512vl "
               "avx512_vnni\n\n")
EPYC = ("processor\t: 0\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 avx512vl\n\n")


@pytest.mark.parametrize(("text", "flags", "klass", "bf16"), [
    (AMX, ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni"), "amx", True),
    (AVX512_ONLY, ("avx512f", "avx512_vnni"), "avx512", False),
    (EPYC, ("avx512f", "avx512_bf16", "avx512_vnni"), "avx512-bf16", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2\n", (), "other", False),
])
def test_flags_class_and_bf16_hardware(text, flags, klass, bf16):
    assert isa_flags(text) == flags
    assert machine_class(isa_flags(text)) == klass
    assert has_bf16(flags) is bf16


def test_a_cpu_without_an_x86_flags_line_is_not_read_as_lacking_bf16():
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16 sve\n"  # aarch64 names them Features
    assert isa_flags(arm) is None and machine_class(None) == "unknown"
    assert HostInfo("arm1", 4, isa=isa_flags(arm)).bf16_hardware is None  # not refused


def test_model_and_memory():
    assert cpu_model(EPYC) == "AMD EPYC" and cpu_model("processor\t: 0\n") == "unknown"
    meminfo = "MemTotal:       25165824 kB\nMemFree: 1 kB\n"
    assert memory_gib(meminfo, limits=(None, None)) == 24.0
    assert memory_gib("nothing\n") is None
    # a cgroup limit below MemTotal wins (a container, a SLURM job's --mem); "max" is none
    assert memory_gib(meminfo, limits=(str(8 * 1024**3), None)) == 8.0
    assert memory_gib(meminfo, limits=("max\n", str(2**63 - 4096))) == 24.0


def test_this_host_is_read_with_its_flags_and_memory():
    host = detect_local()
    assert host.isa is not None and host.isa == isa_flags()
    assert host.memory_gib is not None and host.memory_gib > 0.5
    assert host.bf16_hardware is has_bf16(host.isa)
