"""One shallow exception tree. User errors (``UserError`` subclasses) are printed by the CLI as one
clear line without a traceback (exit 2), and so are failures of the environment — a
``LaunchError`` or an OSError :func:`os_error_message` recognises, such as a full or read-only disk
(exit 1); anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno

__all__ = ["ConfigError", "DataError", "ExplorerError", "LaunchError", "UserError",
           "os_error_message"]


class ExplorerError(Exception):
    """Base of every error mcnn-explorer raises on purpose."""


class UserError(ExplorerError):
    """Bad input from the user: the message names the bad value and what was expected."""


class ConfigError(UserError, ValueError):
    """An invalid training config, search space, LR schedule, layout or CLI argument."""


class DataError(UserError):
    """A dataset tree that cannot be read: missing CSV, column, TIFF, or a bad image."""


class LaunchError(ExplorerError):
    """A job could not be started (mpirun missing, bad host, ...)."""


# OSErrors the environment causes (a full, read-only or forbidden place), never a bug
_HINTS = {
    errno.ENOSPC: "the disk is full: free space or choose another folder",
    errno.EDQUOT: "the disk quota is used up: free space or choose another folder",
    errno.EROFS: "a read-only file system: choose a writable folder",
    errno.EACCES: "check the permissions of that path",
    errno.EPERM: "check the permissions of that path",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
}


def os_error_message(exc: OSError) -> str | None:
    """One line for an OSError of the environment (disk full, read-only, ...), else None.

    It names the system's reason and the path, e.g. ``No space left on device:
    '/x/events.jsonl' (the disk is full: free space or choose another folder)``.
    """
    hint = _HINTS.get(exc.errno) if exc.errno is not None else None
    if hint is None:
        return None
    where = f": {str(exc.filename)!r}" if exc.filename is not None else ""
    return f"{exc.strerror or errno.errorcode[exc.errno or 0]}{where} ({hint})"
