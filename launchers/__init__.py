"""Turn a trial config into a running job: mpirun, local single process (SLURM: planned)."""

from __future__ import annotations

from launchers.base import Job, JobState, Launcher, Resources, session_pids
from launchers.hosts import HostInfo, detect_local, read_hostfile, validate_hostname
from launchers.local import LocalLauncher
from launchers.mpirun import MpirunLauncher, binding_args, build_mpirun_argv

__all__ = [
    "HostInfo",
    "Job",
    "JobState",
    "Launcher",
    "LocalLauncher",
    "MpirunLauncher",
    "Resources",
    "binding_args",
    "build_mpirun_argv",
    "detect_local",
    "read_hostfile",
    "session_pids",
    "validate_hostname",
]
