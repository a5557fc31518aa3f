"""``LocalLauncher``: one process, no MPI (``comm: local``), for debugging a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launchers.base import Job, Launcher, Resources, prepare_workdir
from launchers.mpirun import train_command

__all__ = ["LocalLauncher"]


class LocalLauncher(Launcher):
    def __init__(self, grace_s: float = 5.0) -> None:
        self.grace_s = grace_s

    def launch(self, config_path: Path, resources: Resources, *, workdir: Path,
               **options: Any) -> Job:
        if resources.world_size != 1:
            raise ValueError(f"LocalLauncher runs exactly one process, got {resources.world_size=}")
        workdir, events = prepare_workdir(workdir)
        argv = train_command(config_path, events)
        return self._start(argv, resources, workdir, events)
