"""Turn a trial config into a running job: mpirun, one local process, or SLURM (srun/sbatch)."""

from __future__ import annotations

from launchers.base import Job, JobState, Launcher, Resources, session_pids
from launchers.hosts import (
    HostInfo,
    detect_local,
    expand_nodelist,
    hosts_from_slurm,
    parse_cpus_per_node,
    read_hostfile,
)
from launchers.local import LocalLauncher
from launchers.mpirun import MpirunLauncher, binding_args, build_mpirun_argv
from launchers.slurm import SlurmBatchJob, SlurmLauncher, build_srun_argv, render_sbatch
from mcnn_base.hostnames import validate_hostname

__all__ = [
    "HostInfo",
    "Job",
    "JobState",
    "Launcher",
    "LocalLauncher",
    "MpirunLauncher",
    "Resources",
    "SlurmBatchJob",
    "SlurmLauncher",
    "binding_args",
    "build_mpirun_argv",
    "build_srun_argv",
    "detect_local",
    "expand_nodelist",
    "hosts_from_slurm",
    "parse_cpus_per_node",
    "read_hostfile",
    "render_sbatch",
    "session_pids",
    "validate_hostname",
]
