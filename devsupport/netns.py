"""Simulated hosts on one machine: Linux network namespaces joined by a bridge, for ``mpirun``.

:func:`netns_hosts` makes ``n`` "hosts", each a network namespace with its own ``lo`` and an
``eth0`` (one end of a veth pair whose other end is enslaved to a bridge in the root namespace),
all in one ``/24`` of the benchmarking range 198.18.0.0/15 (bridge ``.1``, hosts ``.11``,
``.12``, ...). Open MPI "ssh"es into a host through a small agent script
(``--mca plm_rsh_agent``): Open MPI runs ``<agent> <host> <command words...>`` and the agent runs
the words in that host's namespace (``ip netns exec NS unshare --uts sh -c "WORDS"``), with the
host name set to the namespace's name so every host also has its own name (and Open MPI session
directory). The hosts are named by IP address, so nothing has to be added to ``/etc/hosts``.

Use with :class:`~launchers.mpirun.MpirunLauncher` exactly like real SSH hosts::

    with netns_hosts(2) as net:
        resources = Resources(hosts=net.hosts, ranks_per_node=1, binding="none", mca=net.mca)
        job = MpirunLauncher().launch(config, resources, workdir=workdir)

With ``ssh=True`` each host instead runs a real OpenSSH server (``sshd``, in the host's
namespace and its own UTS namespace), with a host key, a client key and ``known_hosts`` made in
the temporary directory, and Open MPI starts its daemons through ``ssh``, the way a cluster
user's ``mpirun`` does (its agent is ``<tempdir>/ssh``: ``ssh -F <tempdir>/ssh_config``). Then a
host's processes are children of its ``sshd``, not of ``mpirun``'s session: a test of remote
orphans there can fail.

Everything is torn down on exit, even on failure: processes left inside the namespaces, veths,
bridge, namespaces and the temporary directory (agent, hostfile, agent log). Names hold the
creating pid (``mcnn<pid><letter>``: namespaces ``…h0``, veths ``…v0``, bridge ``…br``), so
parallel runs do not collide, and leftovers of a run whose process is gone are removed first.
Needs root, iproute2 (``ip``) and util-linux (``unshare``), and for ``ssh=True`` OpenSSH's
server and client; :func:`netns_available` and :func:`sshd_available` tell why not when they are
missing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "NETNS_PREFIX",
    "NetnsHosts",
    "destroy",
    "leftovers",
    "netns_available",
    "netns_hosts",
    "remove_stale",
    "sshd_available",
]

NETNS_PREFIX = "mcnn"
BENCH_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
MAX_HOSTS = 32
CMD_TIMEOUT_S = 15.0
_NAME = re.compile(rf"^({NETNS_PREFIX}(\d+)[a-z])(br|h\d+|v\d+)$")
_DIR = re.compile(rf"^({NETNS_PREFIX}(\d+)[a-z])-netns-")
_SEQ = itertools.count()

AGENT_TEMPLATE = """#!/bin/sh
# Open MPI rsh agent written by devsupport.netns: "ssh" into a network-namespace host.
# Called as: agent HOST WORD...; runs the words with a shell inside HOST's namespace, with the
# host name (a private UTS namespace) set to the namespace's name.
host=$1
shift
case "$host" in
{cases}
  *) echo "netns agent: unknown host '$host'" >&2; exit 255 ;;
esac
exec {ip} netns exec "$ns" {unshare} --uts -- /bin/sh -c \\
  'echo "$1" > /proc/sys/kernel/hostname || exit 255
   echo "$2 $1 $(readlink /proc/self/ns/net)" >> {log}
   shift 2
   exec /bin/sh -c "$*"' netns-agent "$ns" "$host" "$@"
"""


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise FileNotFoundError(f"{name!r} not found (install iproute2 / util-linux)")
    return path


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a list, never a shell string) with a timeout; raise on failure if ``check``."""
    proc = subprocess.run(  # noqa: S603 - argv list, no shell
        argv, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, stdin=subprocess.DEVNULL,
        check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def netns_available() -> str | None:
    """Return why namespace hosts cannot be made here, or ``None`` when they can.

    Checks root, ``ip`` and ``unshare``, then makes a throwaway namespace (``unshare --net``) with
    a veth pair and a bridge in it, which tells a kernel or sandbox without them.
    """
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    try:
        ip, unshare = _tool("ip"), _tool("unshare")
    except FileNotFoundError as exc:
        return str(exc)
    for probe in (["link", "add", "pa", "type", "veth", "peer", "name", "pb"],
                  ["link", "add", "pc", "type", "bridge"]):
        try:
            proc = _run([unshare, "--net", "--uts", "--", ip, *probe], check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare --net failed: {exc}"
        if proc.returncode != 0:
            return (f"cannot make network namespaces here: unshare --net ip {' '.join(probe)}: "
                    f"{(proc.stderr or proc.stdout).strip() or proc.returncode}")
    if not Path("/proc/sys/kernel/hostname").exists():
        return "no /proc/sys/kernel/hostname (is /proc mounted?)"
    return None


@dataclass(frozen=True)
class NetnsHosts:
    """The simulated hosts of one :func:`netns_hosts` block.

    Attributes:
        tag: the name prefix of everything this block made (``mcnn<pid><letter>``).
        hosts: the host names for Open MPI (``-H``/hostfile/``Resources.hosts``): IP addresses.
        namespaces: the namespace of each host (also its host name inside), in ``hosts`` order.
        veths: the root-namespace end of each host's veth pair, in ``hosts`` order.
        bridge: the bridge joining the hosts (holds the ``.1`` address: mpirun's side).
        subnet: the hosts' ``/24`` (inside 198.18.0.0/15).
        workdir: the temporary directory with ``agent``, ``hostfile`` and ``agent.log``.
        mca: the ``--mca`` settings for :attr:`launchers.base.Resources.mca`.
    """

    tag: str
    hosts: tuple[str, ...]
    namespaces: tuple[str, ...]
    veths: tuple[str, ...]
    bridge: str
    subnet: str
    workdir: Path
    mca: Mapping[str, str] = field(default_factory=dict)

    @property
    def hostfile(self) -> Path:
        """An Open MPI hostfile naming every host with ``slots=1``."""
        return self.workdir / "hostfile"

    @property
    def agent(self) -> Path:
        """The ``plm_rsh_agent`` script."""
        return self.workdir / "agent"

    @property
    def agent_log(self) -> Path:
        """One line per agent call, written inside the namespace: ``host namespace net:[inode]``."""
        return self.workdir / "agent.log"

    def agent_calls(self) -> list[tuple[str, str, str]]:
        """The agent calls so far: ``(host, namespace, network-namespace id)`` each."""
        try:
            text = self.agent_log.read_text()
        except FileNotFoundError:
            return []
        rows = [line.split() for line in text.splitlines()]
        return [(r[0], r[1], r[2]) for r in rows if len(r) == 3]

    @property
    def net_ids(self) -> tuple[str, ...]:
        """Each host's network namespace as ``/proc/PID/ns/net`` names it (``net:[inode]``), in
        ``hosts`` order: how to tell which host a process runs on."""
        return tuple(f"net:[{os.stat(Path('/run/netns') / ns).st_ino}]" for ns in self.namespaces)

    def link_bytes(self) -> list[tuple[int, int]]:
        """``(bytes into the host, bytes out of the host)`` per host, counted on its veth."""
        out = []
        for veth in self.veths:
            stats = Path("/sys/class/net") / veth / "statistics"
            # the root-side end transmits what the host receives and vice versa
            out.append((int((stats / "tx_bytes").read_text()),
                        int((stats / "rx_bytes").read_text())))
        return out


SSHD_CONFIG = """# sshd of namespace host {host}, written by devsupport.netns
ListenAddress {host}
Port 22
HostKey {workdir}/ssh_host_ed25519_key
AuthorizedKeysFile {workdir}/authorized_keys
PidFile {workdir}/sshd-{ns}.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
LogLevel ERROR
"""

SSH_CONFIG = """# ssh client settings for the namespace hosts, written by devsupport.netns
Host {pattern}
  User root
  IdentityFile {workdir}/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile {workdir}/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
  ServerAliveInterval 5
  ServerAliveCountMax 3
  LogLevel ERROR
"""


def sshd_available() -> str | None:
    """Why namespace hosts cannot run a real ``sshd`` here, or ``None`` when they can."""
    reason = netns_available()
    if reason is not None:
        return reason
    for name in ("sshd", "ssh", "ssh-keygen", "ssh-keyscan"):
        try:
            _tool(name)
        except FileNotFoundError:
            return f"{name!r} not found (install openssh-server and openssh-client)"
    return None


def _start_sshd(workdir: Path, hosts: list[str], namespaces: list[str], ip: str,
                unshare: str) -> None:
    """Keys, one ``sshd`` per host (inside its namespace), ``known_hosts`` from a key scan and
    the client config, all in ``workdir``."""
    keygen, sshd = _tool("ssh-keygen"), _tool("sshd")
    _run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "netns-host",
          "-f", str(workdir / "ssh_host_ed25519_key")])
    _run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "netns-client",
          "-f", str(workdir / "id_ed25519")])
    (workdir / "authorized_keys").write_text((workdir / "id_ed25519.pub").read_text())
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation
    for host, ns in zip(hosts, namespaces, strict=True):
        config = workdir / f"sshd-{ns}.conf"
        config.write_text(SSHD_CONFIG.format(host=host, workdir=workdir, ns=ns))
        # sshd daemonizes once it listens (no -D): it is then a child of init, and of nothing
        # of ours; the teardown ends it with the namespace's other processes
        _run([ip, "netns", "exec", ns, unshare, "--uts", "--", "/bin/sh", "-c",
              'echo "$1" > /proc/sys/kernel/hostname && exec "$2" -f "$3" -E "$4"',
              "netns-sshd", ns, sshd, str(config), str(workdir / f"sshd-{ns}.log")])
    scanned = ""
    deadline = time.time() + 10.0
    while time.time() < deadline:
        proc = _run([_tool("ssh-keyscan"), "-T", "3", "-t", "ed25519", *hosts], check=False)
        scanned = proc.stdout
        if all(any(line.startswith(h + " ") for line in scanned.splitlines()) for h in hosts):
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"ssh-keyscan could not read every host's key: got {scanned!r}")
    (workdir / "known_hosts").write_text(scanned)
    pattern = ".".join(hosts[0].split(".")[:3]) + ".*"
    (workdir / "ssh_config").write_text(SSH_CONFIG.format(pattern=pattern, workdir=workdir))
    # Open MPI's rsh agent: ssh with that config (an --mca value cannot hold the space of
    # "ssh -F FILE", so a one-line wrapper carries it)
    agent = workdir / "ssh"
    agent.write_text(f'#!/bin/sh\nexec {_tool("ssh")} -F {workdir / "ssh_config"} "$@"\n')
    agent.chmod(0o700)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    proc = _run([_tool("ip"), "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _links() -> list[str]:
    proc = _run([_tool("ip"), "-o", "link", "show"], check=False)
    names = []
    for line in proc.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _dirs() -> list[Path]:
    return [p for p in Path(tempfile.gettempdir()).glob(f"{NETNS_PREFIX}*-netns-*")
            if _DIR.match(p.name)]


def leftovers(tag: str) -> list[str]:
    """Every namespace, link and temporary directory whose name starts with ``tag``."""
    found = [f"netns {n}" for n in _namespaces() if n.startswith(tag)]
    found += [f"link {n}" for n in _links() if n.startswith(tag)]
    found += [f"dir {p}" for p in _dirs() if p.name.startswith(tag)]
    return found


def _kill_namespace_pids(namespaces: list[str], grace_s: float = 3.0) -> None:
    """End every process still inside ``namespaces`` (our orteds and ranks): TERM, then KILL."""
    ip = _tool("ip")

    def pids() -> list[int]:
        found: list[int] = []
        for ns in namespaces:
            proc = _run([ip, "netns", "pids", ns], check=False)
            found += [int(p) for p in proc.stdout.split() if p.isdigit()]
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = pids()
        if not live:
            return
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + grace_s
        while pids() and time.time() < deadline:
            time.sleep(0.1)


def destroy(tag: str) -> list[str]:
    """Remove everything named ``tag…`` (processes inside its namespaces first); return what is left.

    Every step runs even when an earlier one fails. Deleting a namespace frees its veth end only
    lazily, so the veths are deleted explicitly (which removes both ends) and the links are waited
    for.
    """
    ip = _tool("ip")
    namespaces = [n for n in _namespaces() if n.startswith(tag)]
    with contextlib.suppress(Exception):
        _kill_namespace_pids(namespaces)
    links = [n for n in _links() if n.startswith(tag)]
    for link in sorted(links, key=lambda n: n.endswith("br")):  # veths first, then the bridge
        with contextlib.suppress(Exception):
            _run([ip, "link", "del", link], check=False)
    for ns in namespaces:
        with contextlib.suppress(Exception):
            _run([ip, "netns", "del", ns], check=False)
    for path in _dirs():
        if path.name.startswith(tag):
            shutil.rmtree(path, ignore_errors=True)
    deadline = time.time() + 5.0
    left = leftovers(tag)
    while left and time.time() < deadline:
        time.sleep(0.1)
        left = leftovers(tag)
    return left


def remove_stale() -> list[str]:
    """Destroy the leftovers of runs whose creating process no longer exists; return their tags."""
    tags = {m.group(1): int(m.group(2))
            for m in map(_NAME.match, [*_namespaces(), *_links()]) if m}
    tags.update({m.group(1): int(m.group(2)) for m in (_DIR.match(p.name) for p in _dirs()) if m})
    stale = sorted(tag for tag, pid in tags.items() if not _pid_alive(pid))
    for tag in stale:
        destroy(tag)
    return stale


def _free_subnet(start: int) -> ipaddress.IPv4Network:
    """The first ``/24`` of 198.18.0.0/15 (from index ``start``) that no root-namespace address
    or route touches."""
    ip = _tool("ip")
    used = _run([ip, "-o", "-4", "addr", "show"], check=False).stdout
    used += _run([ip, "-o", "-4", "route", "show", "table", "all"], check=False).stdout
    nets = [ipaddress.IPv4Interface(w).network
            for w in re.findall(r"(\d+\.\d+\.\d+\.\d+/\d+)", used)]
    nets += [ipaddress.IPv4Network(f"{w}/32")
             for w in re.findall(r"(?<![\d.])(\d+\.\d+\.\d+\.\d+)(?![\d./])", used)]
    subnets = list(BENCH_RANGE.subnets(new_prefix=24))
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(n) for n in nets if n.prefixlen > 0):
            return candidate
    raise RuntimeError("no free /24 left in 198.18.0.0/15")


def _write_files(workdir: Path, hosts: list[str], namespaces: list[str], ip: str,
                 unshare: str) -> None:
    cases = "\n".join(f"  {h}|{ns}) ns={ns} ;;" for h, ns in zip(hosts, namespaces, strict=True))
    agent = workdir / "agent"
    agent.write_text(AGENT_TEMPLATE.format(cases=cases, ip=ip, unshare=unshare,
                                           log=workdir / "agent.log"))
    agent.chmod(0o700)
    (workdir / "hostfile").write_text("".join(f"{h} slots=1\n" for h in hosts))


@contextlib.contextmanager
def netns_hosts(n: int, *, ssh: bool = False) -> Iterator[NetnsHosts]:
    """Make ``n`` namespace hosts joined by a bridge; yield them; tear everything down on exit.

    Args:
        n: the number of hosts (1 to 32).
        ssh: run a real ``sshd`` on each host and have Open MPI start its daemons through
            ``ssh`` (otherwise through the namespace agent script).

    Yields:
        A :class:`NetnsHosts` with the host names (IP addresses), the hostfile and the ``mca``
        settings (``plm_rsh_agent``, ``plm_rsh_no_tree_spawn``, ``btl``, ``btl_tcp_if_include``,
        ``oob_tcp_if_include``) to launch across them.

    Raises:
        ValueError: ``n`` out of range.
        RuntimeError: a setup command failed (what was made is removed first), or the teardown
            left something behind (only when no other exception is on its way out).
    """
    if not 1 <= n <= MAX_HOSTS:
        raise ValueError(f"n must be 1..{MAX_HOSTS}, got {n}")
    ip, unshare = _tool("ip"), _tool("unshare")
    remove_stale()
    pid = os.getpid()
    tag = f"{NETNS_PREFIX}{pid}{chr(ord('a') + next(_SEQ) % 26)}"
    destroy(tag)  # a same-pid leftover of an earlier block of this process
    subnet = _free_subnet(pid)
    base = subnet.network_address
    gateway = f"{base + 1}/24"
    hosts = [str(base + 11 + i) for i in range(n)]
    namespaces = [f"{tag}h{i}" for i in range(n)]
    veths = [f"{tag}v{i}" for i in range(n)]
    bridge = f"{tag}br"
    workdir = Path(tempfile.mkdtemp(prefix=f"{tag}-netns-"))
    failed = False
    try:
        _run([ip, "link", "add", bridge, "type", "bridge"])
        _run([ip, "addr", "add", gateway, "dev", bridge])
        _run([ip, "link", "set", bridge, "up"])
        for host, ns, veth in zip(hosts, namespaces, veths, strict=True):
            _run([ip, "netns", "add", ns])
            _run([ip, "-n", ns, "link", "set", "lo", "up"])
            _run([ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run([ip, "link", "set", veth, "master", bridge, "up"])
            _run([ip, "-n", ns, "addr", "add", f"{host}/24", "dev", "eth0"])
            _run([ip, "-n", ns, "link", "set", "eth0", "up"])
        _write_files(workdir, hosts, namespaces, ip, unshare)
        cidr = str(subnet)
        mca = {"plm_rsh_agent": str(workdir / "agent"), "plm_rsh_no_tree_spawn": "1",
               "btl": "self,tcp", "btl_tcp_if_include": cidr, "oob_tcp_if_include": cidr}
        if ssh:
            _start_sshd(workdir, hosts, namespaces, ip, unshare)
            mca["plm_rsh_agent"] = str(workdir / "ssh")
        yield NetnsHosts(tag=tag, hosts=tuple(hosts), namespaces=tuple(namespaces),
                         veths=tuple(veths), bridge=bridge, subnet=cidr, workdir=workdir,
                         mca=mca)
    except BaseException:
        failed = True
        raise
    finally:
        left = destroy(tag)
        if left:
            message = f"netns teardown of {tag} left {left}"
            if failed:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            else:
                raise RuntimeError(message)
