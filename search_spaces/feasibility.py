"""The feasibility rules of a trial, defined once.

Each rule returns a :class:`Verdict`: the constraint value, feasible when ``<= 0`` (Optuna's
convention), and the reason when it is not. :func:`~search_spaces.plan.build_plan` checks a
sampled trial with :func:`trial_verdicts`; :func:`explorer.preflight.layout_problem` checks the
smallest sample a space can draw with :func:`smallest_verdicts` (its reasons say "at least").

* ``cores``: ranks × threads per node − cores per node;
* ``hosts``: nodes − available hosts;
* ``updates_per_epoch``: minimum − ⌊train images / global batch⌋;
* ``global_batch``: per-worker batch × world size − cap;
* ``per_node_batch`` (only in spaces that sample it): the remainder of per-node batch ÷ ranks
  per node;
* ``bf16_hardware`` (spaces that sample or set bf16): hosts without bf16 hardware;
* ``memory``: ranks per node × predicted peak per rank − usable memory (90 %) of the pool's
  smallest known host, in GiB (:mod:`explorer.mcnn.memory`; 0 while uncalibrated or unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from explorer.mcnn.config import BF16_MATH

if TYPE_CHECKING:
    from explorer.mcnn.memory import MemoryEstimate
    from search_spaces.space import Constraints

__all__ = ["USABLE_MEMORY", "Verdict", "check_bf16", "check_cores", "check_global_batch",
           "check_hosts", "check_memory", "check_node_batch", "check_updates_per_epoch",
           "smallest_verdicts", "trial_verdicts"]

USABLE_MEMORY = 0.9  # share of a node's memory its ranks may use (the OS and page cache keep 10 %)


class Verdict(NamedTuple):
    value: float  # feasible when <= 0
    reason: str  # why not ("" when feasible)

    @property
    def feasible(self) -> bool:
        return self.value <= 0


def _verdict(value: int, reason: str) -> Verdict:
    return Verdict(float(value), reason if value > 0 else "")


def check_cores(ranks: int, threads: int, cores: int, *, smallest: bool = False) -> Verdict:
    """Ranks × threads per rank must fit the cores of a node (of the largest host, ``smallest``)."""
    used = ranks * threads
    if smallest:
        return _verdict(used - cores, f"ranks_per_node × threads_per_rank is at least "
                        f"{ranks}×{threads} = {used}, but the largest host has {cores} cores")
    return _verdict(used - cores, f"ranks_per_node × threads_per_rank = {ranks}×{threads} = "
                    f"{used} > {cores} cores per node")


def check_hosts(nodes: int, available: int, *, smallest: bool = False) -> Verdict:
    """A trial cannot use more nodes than the pool holds."""
    if smallest:
        return _verdict(nodes - available,
                        f"nodes is at least {nodes}, but {available} host(s) are available")
    return _verdict(nodes - available, f"nodes = {nodes} > {available} available hosts")


def check_updates_per_epoch(n_train: int, global_batch: int, minimum: int) -> Verdict:
    """An epoch must hold at least ``minimum`` updates (⌊train images / global batch⌋)."""
    updates = n_train // global_batch
    return _verdict(minimum - updates, f"updates per epoch = {n_train} images // global batch "
                    f"{global_batch} = {updates} < minimum {minimum}")


def check_global_batch(per_worker: int, world: int, cap: int, *, smallest: bool = False
                       ) -> Verdict:
    """Per-worker batch × world size must not exceed the space's cap."""
    batch = per_worker * world
    if smallest:
        return _verdict(batch - cap, f"the global batch is at least {per_worker}×{world} = "
                        f"{batch}, above the space's max_global_batch {cap}")
    return _verdict(batch - cap, f"global batch = {per_worker}×{world} = {batch} > cap {cap}")


def check_node_batch(per_node: int, ranks: int) -> Verdict:
    """A per-node batch must split evenly over the node's ranks (each rank a whole batch)."""
    rest = per_node % ranks if per_node >= ranks else ranks - per_node
    return _verdict(rest, f"per_node_batch {per_node} is not divisible by ranks_per_node "
                    f"{ranks} (every rank needs the same whole batch)")


def check_bf16(precision: str, without_bf16: Sequence[str], *, allow_emulated: bool,
               without_amx: Sequence[str] = ()) -> Verdict:
    """bf16 math only where the CPU runs it natively, unless the user opts in.

    ``without_bf16``: the trial's hosts whose ISA flags were read and lack both AVX512_BF16 and
    AMX. On such a CPU TensorFlow emulates ``mixed_bfloat16``, which measured 2.7× slower than
    float32 on an AVX-512F-only Xeon. ``without_amx``: those whose flags lack AMX. oneDNN runs a
    float32 primitive's math in bf16 (``float32_bf16math``) on its AMX kernels only; elsewhere
    the mode is float32 with nothing to gain (BENCHMARKS §1b measures what it costs).
    """
    if precision not in BF16_MATH or allow_emulated:
        return _verdict(0, "")
    amx = precision == "float32_bf16math"
    bad = list(without_amx if amx else without_bf16)
    named = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more hosts" if len(bad) > 3 else "")
    if amx:
        return _verdict(len(bad), f"{precision} on {named}: no AMX (amx_bf16), where oneDNN "
                        "runs float32 math in bf16, so it is plain float32 there; pass "
                        "--allow-emulated-bf16 to try it anyway")
    return _verdict(len(bad), f"{precision} on {named}: no bf16 hardware (the CPU "
                    "has neither avx512_bf16 nor amx_bf16), so bf16 is emulated there and runs "
                    "slower than float32; pass --allow-emulated-bf16 to try it anyway")


def check_memory(ranks: int, per_rank: MemoryEstimate | None, host: str | None,
                 memory_gib: float | None, what: str) -> Verdict:
    """The ranks of a node must fit its memory: ranks × predicted peak per rank ≤ 90 % of it
    (the value in GiB).

    ``per_rank``: the prediction (None before the model is calibrated: nothing is refused).
    ``host``/``memory_gib``: the pool's host with the least memory (None when no host's memory
    is known: nothing is refused). ``what``: the trial's batch, size and precision, for the
    reason.
    """
    if per_rank is None or host is None or memory_gib is None:
        return Verdict(0.0, "")
    need = ranks * per_rank.peak_gib
    usable = USABLE_MEMORY * memory_gib
    if need <= usable:
        return Verdict(need - usable, "")
    return Verdict(need - usable,
                   f"memory: {ranks} rank(s) × {per_rank.peak_gib:.1f} GiB predicted peak per rank "
                   f"({what}; {per_rank.breakdown()}) = {need:.1f} GiB > {usable:.1f} GiB usable "
                   f"({USABLE_MEMORY:.0%} of {memory_gib:.1f} GiB) on {host}")


def trial_verdicts(*, nodes: int, ranks: int, threads: int, per_worker_batch: int,
                   cores_per_node: int, available_hosts: int, n_train: int,
                   limits: Constraints, per_node_batch: int | None = None,
                   bf16: Verdict | None = None, memory: Verdict | None = None
                   ) -> dict[str, Verdict]:
    """Every rule for one sampled trial, by constraint name (Optuna's constraint order); the
    per-node rule only when the space samples ``per_node_batch``, the bf16 and memory rules only
    when given (every trial of a study has the same constraints)."""
    world = nodes * ranks
    verdicts = {
        "cores": check_cores(ranks, threads, cores_per_node),
        "hosts": check_hosts(nodes, available_hosts),
        "updates_per_epoch": check_updates_per_epoch(n_train, per_worker_batch * world,
                                                     limits.min_updates_per_epoch),
        "global_batch": check_global_batch(per_worker_batch, world, limits.max_global_batch),
    }
    if per_node_batch is not None:
        verdicts["per_node_batch"] = check_node_batch(per_node_batch, ranks)
    if bf16 is not None:
        verdicts["bf16_hardware"] = bf16
    if memory is not None:
        verdicts["memory"] = memory
    return verdicts


def smallest_verdicts(*, nodes: int, ranks: int, threads: int, per_worker_batch: int,
                      largest_cores: int, available_hosts: int, cap: int) -> dict[str, Verdict]:
    """The rules a space's smallest sample must pass before a study starts (in checking order;
    updates per epoch need the split, so they are left to each trial)."""
    return {
        "hosts": check_hosts(nodes, available_hosts, smallest=True),
        "cores": check_cores(ranks, threads, largest_cores, smallest=True),
        "global_batch": check_global_batch(per_worker_batch, nodes * ranks, cap, smallest=True),
    }
