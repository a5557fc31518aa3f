"""A private, throw-away SLURM cluster: for the SLURM launcher's tests, and to try batch scripts.

Debian's ``slurm-wlm`` and ``munge`` packages (installed by ``scripts/setup.sh
--with-test-deps``) give SLURM 22.05 with the ``pmix`` and ``pmi2`` MPI plugins. This module
runs a cluster of its own in a temporary folder: a ``munged`` with a fresh key and its own
socket, a ``slurmctld`` on free ports, and one ``slurmd`` per node. With ``nodes > 1`` each node
is a network-namespace host of :func:`devsupport.netns.netns_hosts` (its ``slurmd -N NAME`` runs
inside the namespace, with its own host name; ``NodeAddr`` is its address on the bridge), so
``--nodelist`` slices and multi-node ``srun`` are real. Client commands find the cluster through
``SLURM_CONF`` (:attr:`SlurmCluster.env`). Everything is stopped and removed on exit, even on
failure: daemons, job processes, namespaces and files.

Try SLURM locally (as root; ``apt install slurm-wlm munge``)::

    .venv/bin/python -m devsupport.slurm_cluster --nodes 2
    # in another shell, with the SLURM_CONF it prints:
    SLURM_CONF=/tmp/mcnn-slurm-XXXX/slurm.conf sinfo
    SLURM_CONF=... sbatch best.sbatch        # e.g. a study's `study export --format sbatch`

It runs until Ctrl-C (or ``--seconds``), then stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devsupport.netns import netns_hosts

__all__ = ["SlurmCluster", "slurm_cluster", "slurm_missing"]

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("srun", "salloc", "sbatch", "scancel", "scontrol", "sinfo", "squeue")


def slurm_missing() -> str | None:
    """Why no private SLURM cluster can start here (None when it can)."""
    missing = [t for t in (*DAEMONS, *CLIENTS) if shutil.which(t) is None
               and not Path(f"/usr/sbin/{t}").is_file()]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): apt install slurm-wlm "
                "munge (scripts/setup.sh --with-test-deps does)")
    if os.geteuid() != 0:
        return "the private SLURM cluster runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass(frozen=True)
class SlurmCluster:
    """A running private cluster: its node names, folder and client environment."""

    nodes: tuple[str, ...]
    root: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        """The environment of a SLURM client command (``srun``, ``salloc``, ...)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a client command against this cluster (an argv list, bounded in time)."""
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True,  # noqa: S603 - argv list
                              timeout=timeout, check=False)

    def node_state(self, node: str) -> str:
        out = self.run("sinfo", "-h", "-N", "-n", node, "-o", "%T").stdout.strip()
        return out.splitlines()[0] if out else ""

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until every node is idle (no job left on it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.node_state(n) == "idle" for n in self.nodes):
                return
            time.sleep(0.5)
        raise TimeoutError(f"nodes not idle after {timeout:g}s: "
                           f"{[(n, self.node_state(n)) for n in self.nodes]}")


def _conf(root: Path, controller: str, nodes: list[tuple[str, str | None]], cores: int,
          memory_mb: int) -> str:
    lines = [
        "ClusterName=mcnntest",
        f"SlurmctldHost={controller}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={root / 'munge' / 'sock'}",
        "CredType=cred/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}/%n",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root}/slurmd-%n.pid",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root}/slurmd-%n.log",
        "MpiDefault=none",
        "ReturnToService=2",
        "KillWait=5",
        "InactiveLimit=0",
        "JobCompType=jobcomp/none",
        "AccountingStorageType=accounting_storage/none",
    ]
    for name, addr in nodes:
        where = f" NodeAddr={addr} NodeHostname={name}" if addr else ""
        lines.append(f"NodeName={name}{where} CPUs={cores} RealMemory={memory_mb} "
                     "State=UNKNOWN")
    lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(512, int(line.split()[1]) // 1024 // 2)
    return 1024


def _stop(pidfile: Path, grace_s: float = 10.0) -> None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def _end_jobs(cluster: SlurmCluster, timeout: float = 60.0) -> None:
    """Cancel every job and wait (bounded) until the queue is empty and no step is left."""
    cluster.run("scancel", "--user=root", timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = cluster.run("squeue", "-h", timeout=30)
        if queue.returncode == 0 and not queue.stdout.strip() and not _stepds():
            return
        time.sleep(0.5)


def _stepds() -> list[int]:
    """slurmstepd processes on this machine (a test machine runs no other SLURM)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"slurmstepd" in cmd:
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def slurm_cluster(nodes: int = 1, cores: int = 2) -> Iterator[SlurmCluster]:
    """Start a private cluster of ``nodes`` nodes with ``cores`` CPUs each; always stop it."""
    why = slurm_missing()
    if why:
        raise RuntimeError(why)
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="mcnn-slurm-"))
        stack.callback(shutil.rmtree, root, True)
        for sub in ("state", "spool", "munge"):
            (root / sub).mkdir()
        os.chmod(root / "munge", 0o700)
        key = root / "munge" / "key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        munge = root / "munge"
        subprocess.run([_sbin("munged"), "--force", f"--key-file={key}",  # noqa: S603 - argv list
                        f"--socket={munge / 'sock'}", f"--pid-file={munge / 'pid'}",
                        f"--log-file={munge / 'log'}", f"--seed-file={munge / 'seed'}"],
                       check=True, timeout=30, capture_output=True)
        stack.callback(_stop, munge / "pid")
        if nodes > 1:
            net = stack.enter_context(netns_hosts(nodes))
            bridge_ip = str(ipaddress.ip_network(net.subnet).network_address + 1)
            controller = f"{socket.gethostname()}({bridge_ip})"
            members: list[tuple[str, str | None]] = list(zip(net.namespaces, net.hosts,
                                                             strict=True))
        else:
            net = None
            controller = socket.gethostname()
            members = [(socket.gethostname(), None)]
        conf = root / "slurm.conf"
        conf.write_text(_conf(root, controller, members, cores, _memory_mb()))
        (root / "pmix").mkdir()
        (root / "mpi.conf").write_text(f"PMIxCliTmpDirBase={root / 'pmix'}\n")
        cluster = SlurmCluster(tuple(name for name, _ in members), root, conf)
        subprocess.run([_sbin("slurmctld"), "-f", str(conf)], check=True, timeout=30,  # noqa: S603 - argv list
                       capture_output=True, env=cluster.env)
        stack.callback(_stop, root / "slurmctld.pid")
        for i, (name, _) in enumerate(members):
            (root / "spool" / name).mkdir()  # each node's spool (PMIx puts its sockets there)
            argv = [_sbin("slurmd"), "-f", str(conf)]
            if net is not None:  # inside the node's namespace, with the node's host name
                # nsenter, not "ip netns exec": that one remounts /sys, hiding the cgroups. The
                # nodes share one file system, so each binds its own folder on the PMIx
                # client directory (mpi.conf), which PMIx names by job and step only
                own = root / f"pmix-{name}"
                own.mkdir()
                argv = ["nsenter", f"--net=/run/netns/{net.namespaces[i]}", "unshare", "--uts",
                        "--mount", "--propagation", "private", "sh", "-c",
                        'hostname "$0" && mount --bind "$1" "$2" && shift 2 && exec "$@"', name,
                        str(own), str(root / "pmix"), *argv, "-N", name]
            done = subprocess.run(argv, check=False, timeout=30, capture_output=True,  # noqa: S603 - argv list
                                  text=True, env=cluster.env)
            if done.returncode != 0:
                log = root / f"slurmd-{name}.log"
                raise RuntimeError(f"slurmd {name} did not start: {done.stderr.strip()} "
                                   f"{log.read_text()[-800:] if log.is_file() else ''}")
            stack.callback(_stop, root / f"slurmd-{name}.pid")
        stack.callback(_end_jobs, cluster)  # jobs end before the daemons stop
        cluster.wait_idle(60.0)
        yield cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a private SLURM cluster until Ctrl-C.")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (> 1: netns hosts)")
    parser.add_argument("--cores", type=int, default=2, help="CPUs per node")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    why = slurm_missing()
    if why:
        print(f"error: {why}")
        return 2
    with slurm_cluster(args.nodes, args.cores) as cluster:
        print(f"SLURM cluster up: nodes {', '.join(cluster.nodes)}\n"
              f"export SLURM_CONF={cluster.conf}\nsinfo; sbatch SCRIPT; salloc -N1 ...\n"
              "Ctrl-C stops it.", flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        with contextlib.suppress(KeyboardInterrupt):
            while deadline is None or time.monotonic() < deadline:
                time.sleep(1.0)
    print("SLURM cluster stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
