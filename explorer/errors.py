"""One shallow exception tree. User errors (``UserError`` subclasses) are printed by the CLI as one
clear line without a traceback; anything else is a bug and keeps its traceback."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "ExplorerError", "LaunchError", "UserError"]


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
