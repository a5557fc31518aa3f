"""The allreduce seam: everything the job needs from Horovod, in one file.

Keras 3 breaks Horovod 0.28.1's high-level helpers (``DistributedGradientTape``,
``DistributedOptimizer``, ``broadcast_variables`` and the Keras callbacks; horovod#4290). What works,
and what this module uses:

* gradients: ``hvd.grouped_allreduce(grads, op=hvd.Average)``, one fused collective per step;
* broadcast: ``v.assign(hvd.broadcast(tf.convert_to_tensor(v), root_rank=0))`` per variable.

A move to another allreduce engine (tf.distribute, a newer Horovod) touches only this file.
:class:`LocalComm` is the same interface for a single process without MPI.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Comm", "HorovodComm", "LocalComm", "make_comm", "under_mpi"]


def under_mpi() -> bool:
    """True when this process was started by mpirun/srun with more than zero peers known."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))


class Comm(ABC):
    """Collective operations over the job's ranks."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @abstractmethod
    def allreduce_mean(self, tensors: Sequence[Any]) -> list[Any]:
        """Average a list of tensors over ranks (inside or outside ``tf.function``)."""

    @abstractmethod
    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum a float64 numpy vector over ranks."""

    @abstractmethod
    def broadcast_variables(self, variables: Sequence[Any]) -> None:
        """Overwrite every variable with rank 0's value."""

    @abstractmethod
    def allgather(self, values: np.ndarray) -> np.ndarray:
        """Stack a float64 vector from every rank: shape ``(size, len(values))``."""

    def hostname_list(self) -> list[str]:
        return [socket.gethostname()]

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release the engine."""


class LocalComm(Comm):
    """One process, no MPI: every collective is the identity."""

    def allreduce_mean(self, tensors: Sequence[Any]) -> list[Any]:
        return list(tensors)

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float64)

    def broadcast_variables(self, variables: Sequence[Any]) -> None:
        return None

    def allgather(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float64)[None, :]


class HorovodComm(Comm):
    """Horovod over MPI, with the Keras-3-safe calls only."""

    def __init__(self) -> None:
        import horovod.tensorflow as hvd

        hvd.init()
        self._hvd = hvd
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()

    def allreduce_mean(self, tensors: Sequence[Any]) -> list[Any]:
        if self.size == 1:
            return list(tensors)
        return list(self._hvd.grouped_allreduce(list(tensors), op=self._hvd.Average))

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        t = tf.constant(np.asarray(values, np.float64))
        return np.asarray(self._hvd.allreduce(t, op=self._hvd.Sum, name="sum_f64"))

    def broadcast_variables(self, variables: Sequence[Any]) -> None:
        import tensorflow as tf

        for i, v in enumerate(variables):
            v.assign(self._hvd.broadcast(tf.convert_to_tensor(v), root_rank=0, name=f"bcast_{i}"))

    def allgather(self, values: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        t = tf.constant(np.asarray(values, np.float64)[None, :])
        return np.asarray(self._hvd.allgather(t, name="gather_f64"))

    def hostname_list(self) -> list[str]:
        name = np.frombuffer(socket.gethostname().encode()[:64].ljust(64, b"\0"), np.uint8)
        rows = self.allgather(name.astype(np.float64))
        return [bytes(r.astype(np.uint8)).rstrip(b"\0").decode() for r in rows]

    def shutdown(self) -> None:
        self._hvd.shutdown()


def make_comm(kind: str = "auto") -> Comm:
    """Return the engine for ``kind``: ``horovod``, ``local``, or ``auto`` (Horovod under MPI)."""
    engines = {"horovod": HorovodComm, "local": LocalComm}
    if kind == "auto":
        kind = "horovod" if under_mpi() else "local"
    if kind not in engines:
        raise ValueError(f"comm must be one of {sorted(engines)} or 'auto', got {kind=}")
    return engines[kind]()
