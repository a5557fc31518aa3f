"""Host-name rules: the names the training config, the launchers and host lists accept."""

from __future__ import annotations

import re

from mcnn_base.errors import ConfigError

__all__ = ["validate_hostname"]

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
