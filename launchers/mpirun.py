"""``MpirunLauncher``: Open MPI ``mpirun`` with an explicit mapping/binding for the layout.

Binding is never left to Open MPI's defaults (with ``-np <= 2`` it binds each rank to one core,
which starves a rank meant to run several threads):

* ``none``   → ``--bind-to none`` (ranks float over all cores);
* ``core``   → ``--map-by slot:PE=<threads> --bind-to core`` (each rank owns ``threads`` cores);
* ``socket`` → ``--map-by socket --bind-to socket``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launchers.base import Job, Launcher, Resources, prepare_workdir
from mcnn_base.errors import LaunchError

__all__ = ["MpirunLauncher", "binding_args", "build_mpirun_argv"]

# exported to every rank when set here (-x): threading, the launch clock, the code's path and
# the shard cache (ranks started through ssh get nothing else of the driver's environment)
THREAD_ENV = ("OMP_NUM_THREADS", "KMP_BLOCKTIME", "KMP_AFFINITY", "MCNN_LAUNCH_TIME",
              "TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH", "MCNN_CACHE_DIR")


def binding_args(resources: Resources) -> list[str]:
    if resources.binding == "none":
        return ["--bind-to", "none", "--map-by", "slot"]
    if resources.binding == "core":
        return ["--map-by", f"slot:PE={resources.threads_per_rank}", "--bind-to", "core"]
    return ["--map-by", "socket", "--bind-to", "socket"]


def build_mpirun_argv(command: list[str], resources: Resources, *, mpirun: str = "mpirun",
                      hostfile: Path | None = None, is_root: bool | None = None) -> list[str]:
    """Return the full ``mpirun`` argv for ``command`` (a list: never a shell string)."""
    argv = [mpirun, "-np", str(resources.world_size)]
    if hostfile is not None:
        argv += ["--hostfile", str(hostfile)]
    elif resources.hosts != ("localhost",):
        argv += ["-H", ",".join(f"{h}:{resources.ranks_per_node}" for h in resources.hosts)]
    argv += binding_args(resources)
    if resources.oversubscribe:
        argv.append("--oversubscribe")
    if is_root if is_root is not None else os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    for key, value in sorted(resources.mca.items()):
        argv += ["--mca", key, value]
    names = sorted(set(resources.env) | {k for k in THREAD_ENV if k in os.environ}
                   | {"MCNN_LAUNCH_TIME"})
    for name in names:
        argv += ["-x", name]
    return argv + command


def train_command(config_path: Path, events_path: Path) -> list[str]:
    return [sys.executable, "-m", "explorer.mcnn.train", "--config", str(config_path),
            "--events", str(events_path)]


class MpirunLauncher(Launcher):
    """Run the training job under ``mpirun`` in its own session."""

    def __init__(self, mpirun: str = "mpirun", grace_s: float = 5.0) -> None:
        self.mpirun = mpirun
        self.grace_s = grace_s

    def probe_argv(self, command: list[str], hosts: Sequence[str],
                   mca: Mapping[str, str]) -> list[str] | None:
        exe = shutil.which(self.mpirun)
        if exe is None:
            return None
        resources = Resources(hosts=tuple(hosts), ranks_per_node=1, threads_per_rank=1,
                              binding="none", mca=dict(mca))
        return build_mpirun_argv(command, resources, mpirun=exe)

    def launch(self, config_path: Path, resources: Resources, *, workdir: Path,
               **options: Any) -> Job:
        exe = shutil.which(self.mpirun)
        if exe is None:
            raise LaunchError(f"{self.mpirun!r} not found on PATH; install openmpi-bin")
        workdir, events = prepare_workdir(workdir)
        argv = build_mpirun_argv(train_command(config_path, events), resources, mpirun=exe,
                                 hostfile=options.get("hostfile"))
        return self._start(argv, resources, workdir, events)
