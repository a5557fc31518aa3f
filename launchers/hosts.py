"""Host descriptions: this machine's cores/sockets, Open MPI hostfiles, host-name validation."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import ConfigError

__all__ = ["HostInfo", "detect_local", "read_hostfile", "validate_hostname"]

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$")


def validate_hostname(name: str) -> str:
    """Return ``name`` if it is a plain host name or address; reject anything a shell would parse.

    Raises:
        ConfigError: the name holds characters outside ``[A-Za-z0-9._-]`` (e.g. ``;``, ``$``,
            spaces, quotes) or is empty or too long.
    """
    if not isinstance(name, str) or not _HOSTNAME.match(name):
        raise ConfigError(
            f"invalid host name {name!r}: expected letters, digits, '.', '-' or '_' only "
            "(no spaces or shell metacharacters)"
        )
    return name


@dataclass(frozen=True)
class HostInfo:
    """One node: its name, cores (slots) and sockets."""

    name: str
    cores: int
    sockets: int = 1


def detect_local() -> HostInfo:
    """Describe this machine from /proc/cpuinfo and sysfs (cores, sockets)."""
    cores = len(os.sched_getaffinity(0))
    sockets: set[str] = set()
    for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/physical_package_id"):
        try:
            sockets.add(cpu.read_text().strip())
        except OSError:
            continue
    return HostInfo("localhost", cores, max(1, len(sockets)))


def read_hostfile(path: str | Path) -> list[HostInfo]:
    """Read an Open MPI hostfile (``name [slots=N] [max_slots=M]`` per line, ``#`` comments).

    Raises:
        ConfigError: a missing file, a bad host name or a bad ``slots`` value, with its line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"hostfile {str(path)!r} does not exist")
    hosts: list[HostInfo] = []
    local = detect_local()
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, *opts = line.split()
        try:
            validate_hostname(name)
        except ConfigError as exc:
            raise ConfigError(f"{path}:{lineno}: {exc}") from None
        slots = local.cores
        for opt in opts:
            key, _, value = opt.partition("=")
            if key in ("slots", "max_slots", "max-slots"):
                if not value.isdigit() or int(value) < 1:
                    raise ConfigError(f"{path}:{lineno}: {key} must be a positive integer, "
                                      f"got {value!r}")
                if key == "slots":
                    slots = int(value)
            else:
                raise ConfigError(f"{path}:{lineno}: unknown hostfile option {opt!r} "
                                  "(expected slots=N or max_slots=N)")
        hosts.append(HostInfo(name, slots, 1))
    if not hosts:
        raise ConfigError(f"hostfile {path} names no host")
    return hosts
