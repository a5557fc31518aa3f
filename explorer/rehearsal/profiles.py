"""Simulated hardware: host profiles (cores, ISA flags, matmul speed) and fabric profiles.

A host profile's ``fp32_gflops_per_core`` is what the compute model scales by: the calibration
machine's measured matmul bound per core against the simulated host's. For this machine it is
measured (the calibration file holds it); for a named preset it is an assumption written here
(peak FLOP/cycle × the all-core AVX-512 clock × a sustained fraction), stated in every rehearsal.
"""

from __future__ import annotations

from dataclasses import dataclass

from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError

__all__ = ["FABRICS", "HOSTS", "Fabric", "HostProfile", "fabric", "host_profile", "ring_allreduce_s"]


@dataclass(frozen=True)
class HostProfile:
    """One simulated node."""

    name: str
    cores: int
    sockets: int
    isa: tuple[str, ...]
    memory_gib: float
    fp32_gflops_per_core: float  # sustained fp32 matmul, per core
    bf16_gflops_per_core: float | None  # None: no bf16 hardware
    note: str

    def host(self, index: int) -> HostInfo:
        return HostInfo(f"sim{index:04d}", self.cores, self.sockets, self.sockets, isa=self.isa,
                        memory_gib=self.memory_gib)


@dataclass(frozen=True)
class Fabric:
    """A network between nodes: per-message latency and per-link bandwidth."""

    name: str
    alpha_s: float
    bandwidth_Bps: float  # bytes per second
    note: str


HOSTS: dict[str, HostProfile] = {
    # Intel Xeon Gold 6148 (Skylake-SP), the seed's node: 2 × 20 cores, AVX-512F, 2 FMA units
    # (64 fp32 FLOP/cycle), ~1.9 GHz all-core AVX-512, 85 % sustained: 103 GFLOP/s per core
    "xeon6148": HostProfile("xeon6148", 40, 2, ("avx512f",), 192.0, 64 * 1.9 * 0.85, None,
                            "2 × Xeon Gold 6148, AVX-512F, no bf16; fp32 matmul assumed 103 "
                            "GFLOP/s per core (64 FLOP/cycle × 1.9 GHz × 0.85)"),
    # a Sapphire Rapids node with AMX: 2 × 56 cores; AMX bf16 ≈ 8 × fp32 peak, 50 % sustained
    "spr8480": HostProfile("spr8480", 112, 2, ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile"),
                           512.0, 64 * 2.0 * 0.85, 64 * 2.0 * 8 * 0.5,
                           "2 × Xeon Platinum 8480+, AMX; fp32 matmul assumed 109 GFLOP/s per "
                           "core, bf16 512"),
}

FABRICS: dict[str, Fabric] = {
    "opa100": Fabric("opa100", 2.0e-6, 100e9 / 8 * 0.9,
                     "100 Gb/s Omni-Path (the seed's): α 2 µs, 90 % of line rate"),
    "ib200": Fabric("ib200", 1.5e-6, 200e9 / 8 * 0.9, "200 Gb/s InfiniBand HDR: α 1.5 µs"),
    "eth25": Fabric("eth25", 25e-6, 25e9 / 8 * 0.9, "25 GbE with TCP: α 25 µs"),
    "eth10": Fabric("eth10", 40e-6, 10e9 / 8 * 0.9, "10 GbE with TCP: α 40 µs"),
}


def host_profile(name: str) -> HostProfile:
    try:
        return HOSTS[name]
    except KeyError:
        raise ConfigError(f"unknown host profile {name!r}; expected one of "
                          f"{', '.join(sorted(HOSTS))}") from None


def fabric(name: str) -> Fabric:
    try:
        return FABRICS[name]
    except KeyError:
        raise ConfigError(f"unknown fabric {name!r}; expected one of "
                          f"{', '.join(sorted(FABRICS))}") from None


def ring_allreduce_s(ranks: int, nbytes: float, net: Fabric, *,
                     fusion_bytes: float = 128 * 2**20) -> float:
    """Seconds of one ring allreduce of ``nbytes`` over ``ranks``: 2(p−1)α per fused buffer
    (Horovod sends the gradients in fusion buffers of ``fusion_bytes``, its default 128 MiB)
    plus 2(p−1)/p · bytes ÷ bandwidth."""
    if ranks <= 1:
        return 0.0
    buffers = max(1, -(-int(nbytes) // int(fusion_bytes)))
    return (2 * (ranks - 1) * net.alpha_s * buffers
            + 2 * (ranks - 1) / ranks * nbytes / net.bandwidth_Bps)
