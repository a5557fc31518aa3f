"""``SlurmLauncher``: run the training job through SLURM — ``srun`` inside an allocation, or ``sbatch``.

Binding is explicit, as for ``mpirun`` (:mod:`launchers.mpirun`): every task gets
``--cpus-per-task=<threads>`` and

* ``none``   → ``--cpu-bind=none`` (tasks float over the node's CPUs);
* ``core``   → ``--cpu-bind=cores`` (each task owns ``threads`` cores);
* ``socket`` → ``--cpu-bind=sockets``.

Modes:

* ``srun``   — inside an existing allocation (``salloc``/an interactive job): ``srun ...`` is the
  :class:`~launchers.base.Job`, started through :meth:`Launcher._start`.
* ``sbatch`` — ``workdir/job.sbatch`` is written and ``sbatch --parsable --wait job.sbatch`` is the
  job (a :class:`SlurmBatchJob`). ``sbatch``'s own output (the job id) goes to
  ``workdir/sbatch.log``; the SLURM job writes ``workdir/job.log``. Cancelling or timing out the
  job ends the local ``sbatch`` session and then runs ``scancel <jobid>``.
* ``auto``   — ``srun`` when ``SLURM_JOB_ID`` is set, else ``sbatch``.

``Resources.mca`` (Open MPI specific) is not passed; ``oversubscribe`` maps to ``--overcommit``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launchers.base import Job, Launcher, Resources, prepare_workdir
from launchers.mpirun import train_command
from mcnn_base.errors import ConfigError, LaunchError

__all__ = [
    "SlurmBatchJob",
    "SlurmLauncher",
    "build_srun_argv",
    "cpu_bind_arg",
    "default_job_name",
    "format_time_limit",
    "render_sbatch",
    "unavailable_nodes",
]

MODES = ("auto", "srun", "sbatch")
_CPU_BIND = {"none": "none", "core": "cores", "socket": "sockets"}
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")
# characters SLURM's ``#SBATCH`` parsing or ``--output`` filename patterns would reinterpret
_BAD_PATH_CHARS = re.compile(r"[\s%\"'\\]")
# margin by which the SLURM-side limit trails ``Resources.timeout_s`` so the local timeout
# (reported as TIMEOUT) fires first and SLURM's limit is only a safety net
TIME_LIMIT_MARGIN_S = 60.0


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(f"invalid SLURM {kind} {value!r}: expected letters, digits, '.', '_' or "
                          "'-' only")
    return value


def cpu_bind_arg(resources: Resources) -> str:
    """Return the ``--cpu-bind=...`` option for ``resources.binding``."""
    return f"--cpu-bind={_CPU_BIND[resources.binding]}"


def format_time_limit(seconds: float) -> str:
    """Format a limit for ``--time``: ``HH:MM:SS``, or ``D-HH:MM:SS`` from one day; rounded up.

    Raises:
        ConfigError: ``seconds`` is not a positive finite number.
    """
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"invalid SLURM time limit {seconds!r}: expected a positive number of "
                          "seconds")
    total = math.ceil(seconds)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


def build_srun_argv(command: list[str], resources: Resources, *, srun: str = "srun",
                    mpi: str = "pmix") -> list[str]:
    """Return the full ``srun`` argv for ``command`` (a list: never a shell string).

    Args:
        command: the per-rank command.
        resources: nodes, tasks per node, threads per task, binding; ``hosts`` becomes
            ``--nodelist`` unless it is the default ``("localhost",)``.
        srun: the ``srun`` executable.
        mpi: the ``--mpi`` plugin (``pmix``, ``pmi2``, ``none``, ...).

    Returns:
        ``[srun, --nodes=N, --ntasks-per-node=R, --cpus-per-task=T, --cpu-bind=..., --mpi=...,
        [--nodelist=a,b], [--overcommit], --export=ALL, --kill-on-bad-exit=1, *command]``.

    Raises:
        ConfigError: ``mpi`` is not a plain plugin name.
    """
    _check_name("MPI plugin", mpi)
    argv = [srun, f"--nodes={resources.nodes}", f"--ntasks-per-node={resources.ranks_per_node}",
            f"--cpus-per-task={resources.threads_per_rank}", cpu_bind_arg(resources),
            f"--mpi={mpi}"]
    if resources.hosts != ("localhost",):
        argv.append(f"--nodelist={','.join(resources.hosts)}")
    if resources.oversubscribe:
        argv.append("--overcommit")
    argv += ["--export=ALL", "--kill-on-bad-exit=1"]
    return argv + list(command)


def render_sbatch(command: list[str], resources: Resources, *, job_name: str, workdir: Path,
                  time_limit_s: float | None = None, partition: str | None = None,
                  account: str | None = None, srun: str = "srun", mpi: str = "pmix") -> str:
    """Return a batch script that runs ``command`` under ``srun`` with the layout of ``resources``.

    The script sets ``OMP_NUM_THREADS`` and every ``resources.env`` item (sorted, values
    shell-quoted), changes to ``workdir`` and runs the line of :func:`build_srun_argv`.

    Args:
        command: the per-rank command.
        resources: the layout; explicit ``hosts`` become ``#SBATCH --nodelist``.
        job_name: ``--job-name``.
        workdir: the run directory; SLURM output goes to ``workdir/job.log``.
        time_limit_s: ``--time`` (rounded up to whole seconds); none when ``None``.
        partition: ``--partition``, when given.
        account: ``--account``, when given.
        srun: the ``srun`` executable named in the script (resolved on the batch node).
        mpi: the ``--mpi`` plugin.

    Returns:
        The script text, ending in a newline.

    Raises:
        ConfigError: a job name, partition, account or MPI plugin outside ``[A-Za-z0-9._-]``, an
            environment name that is not a shell identifier, a ``workdir`` with whitespace,
            quotes, ``\\`` or ``%``, or a non-positive time limit.
    """
    _check_name("job name", job_name)
    if _BAD_PATH_CHARS.search(str(workdir)):
        raise ConfigError(f"invalid SLURM workdir {str(workdir)!r}: expected a path without "
                          "whitespace, quotes, '\\' or '%'")
    env = {"OMP_NUM_THREADS": str(resources.threads_per_rank), **resources.env}
    for key in env:
        if not _ENV_NAME.match(key):
            raise ConfigError(f"invalid environment variable name {key!r}: expected letters, "
                              "digits and '_' (not starting with a digit)")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={resources.nodes}",
        f"#SBATCH --ntasks-per-node={resources.ranks_per_node}",
        f"#SBATCH --cpus-per-task={resources.threads_per_rank}",
    ]
    if time_limit_s is not None:
        lines.append(f"#SBATCH --time={format_time_limit(time_limit_s)}")
    lines.append(f"#SBATCH --output={workdir / 'job.log'}")
    if partition is not None:
        lines.append(f"#SBATCH --partition={_check_name('partition', partition)}")
    if account is not None:
        lines.append(f"#SBATCH --account={_check_name('account', account)}")
    if resources.hosts != ("localhost",):
        lines.append(f"#SBATCH --nodelist={','.join(resources.hosts)}")
    lines += ["", "set -euo pipefail", ""]
    lines += [f"export {key}={shlex.quote(str(value))}" for key, value in sorted(env.items())]
    lines += ["", f"cd {shlex.quote(str(workdir))}",
              shlex.join(build_srun_argv(command, resources, srun=srun, mpi=mpi))]
    return "\n".join(lines) + "\n"


class SlurmBatchJob(Job):
    """The local ``sbatch --parsable --wait`` process of one batch job.

    ``cancel()`` and a ``timeout_s`` expiry end the local session like any :class:`Job`, then run
    ``scancel <jobid>`` (job id = the first line ``sbatch --parsable`` printed to ``submit_log``)
    so the job also leaves the SLURM queue or its nodes. ``log_path`` is the SLURM job's output.
    """

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], submit_log: Path,
                 log_path: Path, events_path: Path | None, scancel: str,
                 timeout_s: float | None = None, grace_s: float = 5.0,
                 cwd: str | Path | None = None, scancel_timeout_s: float = 30.0) -> None:
        super().__init__(argv, env=env, log_path=submit_log, events_path=events_path,
                         timeout_s=timeout_s, grace_s=grace_s, cwd=cwd)
        self.submit_log = submit_log
        self.log_path = log_path
        self.scancel = scancel
        self.scancel_timeout_s = scancel_timeout_s
        self.scancel_argv: list[str] | None = None
        self.scancel_error: str | None = None

    def _submit_lines(self) -> list[str]:
        try:
            return self.submit_log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    @property
    def slurm_job_id(self) -> str | None:
        """The SLURM job id ``sbatch --parsable`` printed, or ``None`` before (or without) one."""
        lines = self._submit_lines()
        if not lines:
            return None
        job_id = lines[0].split(";", 1)[0].strip()
        return job_id if _JOB_ID.match(job_id) else None

    def _scancel_argv(self) -> list[str] | None:
        lines = self._submit_lines()
        job_id = self.slurm_job_id
        if job_id is None:
            return None
        _, _, cluster = lines[0].partition(";")
        cluster = cluster.strip()
        if cluster and _NAME.match(cluster):
            return [self.scancel, f"--clusters={cluster}", job_id]
        return [self.scancel, job_id]

    def _terminate(self) -> None:
        super()._terminate()
        self._cancel_slurm_job()

    def _cancel_slurm_job(self) -> None:
        argv = self._scancel_argv()
        if argv is None:
            self.scancel_error = (f"no SLURM job id in {self.submit_log} (sbatch ended before "
                                  "printing one); nothing to scancel")
            return
        self.scancel_argv = argv
        with self.submit_log.open("ab") as out:
            try:
                done = subprocess.run(  # noqa: S603 - argv list, no shell
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    timeout=self.scancel_timeout_s, check=False,
                )
            except subprocess.TimeoutExpired:
                self.scancel_error = (f"{' '.join(argv)} did not finish within "
                                      f"{self.scancel_timeout_s:g} s")
            except OSError as exc:
                self.scancel_error = f"{' '.join(argv)} could not run: {exc}"
            else:
                if done.returncode != 0:
                    self.scancel_error = f"{' '.join(argv)} exited with {done.returncode}"
            if self.scancel_error is not None:
                with contextlib.suppress(OSError):
                    out.write(f"mcnn-explorer: {self.scancel_error}\n".encode())

    def log_tail(self, lines: int = 40) -> str:
        """The tail of the SLURM job's output, after any ``sbatch``/``scancel`` messages."""
        job_id = self.slurm_job_id
        submit = self._submit_lines()
        if job_id is not None and submit:
            submit = submit[1:]
        try:
            output = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            output = []
        return "\n".join([*submit, *output][-lines:])


class SlurmLauncher(Launcher):
    """Run the training job under SLURM: ``srun`` in an allocation, or a ``sbatch`` batch job."""

    def __init__(self, mode: str = "auto", *, srun: str = "srun", sbatch: str = "sbatch",
                 scancel: str = "scancel", mpi: str = "pmix", partition: str | None = None,
                 account: str | None = None, grace_s: float = 5.0) -> None:
        """Configure the launcher.

        Args:
            mode: ``srun``, ``sbatch`` or ``auto`` (``srun`` when ``SLURM_JOB_ID`` is set).
            srun: the ``srun`` executable (in ``sbatch`` mode, resolved on the batch node).
            sbatch: the ``sbatch`` executable.
            scancel: the ``scancel`` executable, run when a batch job is cancelled.
            mpi: the ``srun --mpi`` plugin.
            partition: ``--partition`` of batch jobs.
            account: ``--account`` of batch jobs.
            grace_s: seconds between SIGTERM and SIGKILL when a job is cancelled.

        Raises:
            ConfigError: an unknown mode, or a partition, account or MPI plugin outside
                ``[A-Za-z0-9._-]``.
        """
        if mode not in MODES:
            raise ConfigError(f"invalid SLURM launcher mode {mode!r}: expected one of "
                              f"{', '.join(MODES)}")
        self.mode = mode
        self.srun = srun
        self.sbatch = sbatch
        self.scancel = scancel
        self.mpi = _check_name("MPI plugin", mpi)
        self.partition = None if partition is None else _check_name("partition", partition)
        self.account = None if account is None else _check_name("account", account)
        self.grace_s = grace_s

    def probe_argv(self, command: list[str], hosts: Sequence[str],
                   mca: Mapping[str, str]) -> list[str] | None:
        """``srun`` one task per host inside an allocation (a batch job would queue: None)."""
        exe = shutil.which(self.srun)
        if self.resolved_mode() != "srun" or exe is None:
            return None
        resources = Resources(hosts=tuple(hosts), ranks_per_node=1, threads_per_rank=1,
                              binding="none")
        return build_srun_argv(command, resources, srun=exe, mpi="none")

    def resolved_mode(self, environ: Mapping[str, str] | None = None) -> str:
        """``srun`` or ``sbatch``: ``auto`` picks ``srun`` inside an allocation (``SLURM_JOB_ID``)."""
        if self.mode != "auto":
            return self.mode
        env = os.environ if environ is None else environ
        return "srun" if env.get("SLURM_JOB_ID") else "sbatch"

    @staticmethod
    def _which(name: str) -> str:
        exe = shutil.which(name)
        if exe is None:
            raise LaunchError(f"{name!r} not found on PATH; run on a SLURM login or compute node "
                              "(or pass its path)")
        return exe

    def launch(self, config_path: Path, resources: Resources, *, workdir: Path,
               **options: Any) -> Job:
        """Start the training job of ``config_path``.

        Options (``sbatch`` mode): ``job_name`` (default ``mcnn-<workdir name>``) and
        ``time_limit_s`` (default ``resources.timeout_s`` plus one minute, or none).

        Raises:
            LaunchError: ``srun`` (``srun`` mode) or ``sbatch``/``scancel`` (``sbatch`` mode) is
                not on PATH.
            ConfigError: a bad job name, environment name, workdir or time limit.
        """
        mode = self.resolved_mode()
        if mode == "srun":
            exe = self._which(self.srun)
            workdir, events = prepare_workdir(workdir)
            argv = build_srun_argv(train_command(config_path, events), resources, srun=exe,
                                   mpi=self.mpi)
            return self._start(argv, resources, workdir, events)

        sbatch = self._which(self.sbatch)
        scancel = self._which(self.scancel)
        job_name = options.get("job_name") or default_job_name(Path(workdir))
        time_limit = options.get("time_limit_s")
        if time_limit is None and resources.timeout_s is not None:
            time_limit = resources.timeout_s + TIME_LIMIT_MARGIN_S
        workdir, events = prepare_workdir(workdir)
        script = render_sbatch(train_command(config_path, events), resources, job_name=job_name,
                               workdir=workdir, time_limit_s=time_limit,
                               partition=self.partition, account=self.account, srun=self.srun,
                               mpi=self.mpi)
        script_path = workdir / "job.sbatch"
        script_path.write_text(script)
        (workdir / "job.log").unlink(missing_ok=True)  # never show a previous run's output
        argv = [sbatch, "--parsable", "--wait", str(script_path)]
        (workdir / "argv.txt").write_text(" ".join(argv) + "\n")
        env = {"OMP_NUM_THREADS": str(resources.threads_per_rank), **resources.env}
        return SlurmBatchJob(argv, env=env, submit_log=workdir / "sbatch.log",
                             log_path=workdir / "job.log", events_path=events, scancel=scancel,
                             timeout_s=resources.timeout_s, grace_s=self.grace_s, cwd=workdir)


def default_job_name(workdir: Path) -> str:
    """``mcnn-<workdir name>`` with characters outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", workdir.resolve().name) or "run"
    return f"mcnn-{name}"


# sinfo states (``%T``, long form) in which a node takes no new job
UNAVAILABLE = ("drained", "draining", "down", "fail", "failing", "maint", "reboot", "power_down",
               "powering_down", "future", "inval", "unknown")


def unavailable_nodes(names: Sequence[str], *, sinfo: str = "sinfo",
                      env: Mapping[str, str] | None = None,
                      timeout_s: float = 15.0) -> dict[str, str] | None:
    """The nodes among ``names`` that SLURM will not give a new job, with their state
    (``drained``, ``down``, ...); None when ``sinfo`` cannot tell (not installed, failed, timed
    out)."""
    exe = shutil.which(sinfo)
    if exe is None or not names:
        return None
    try:
        done = subprocess.run([exe, "-h", "-N", "-n", ",".join(names), "-o", "%N|%T"],  # noqa: S603 - argv list
                              capture_output=True, text=True, timeout=timeout_s, check=False,
                              env=None if env is None else dict(env))
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        node, _, raw = line.strip().partition("|")
        state = raw.rstrip("*~#!%$@^-+").lower()  # sinfo's flag suffixes
        if node not in names:
            continue
        if raw.endswith("*"):  # the controller cannot reach the node's slurmd
            out[node] = f"{state} (not responding)"
        elif state in UNAVAILABLE or state.startswith(("drain", "down", "fail", "maint",
                                                        "reboot", "power")):
            out[node] = state
    return out
