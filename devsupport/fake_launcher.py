"""A launcher that replays scripted job events on a simulated clock (no TensorFlow, no MPI).

Each launched trial gets the next :class:`Script` (or one chosen from its config by a function):
a list of ``(seconds after launch, event)`` pairs and how the job ends. As the loop polls, the
events that are due on its :class:`~explorer.clock.ManualClock` are appended to the trial's real
``events.jsonl`` (so the loop's :class:`~explorer.mcnn.events.EventTail` reads them as it reads a
real job's), and the job ends at its scripted time with its exit code; ``hang`` never ends by
itself. ``cancel`` and the resources' ``timeout_s`` behave as a real :class:`~launchers.base.Job`'s.

``epochs(...)`` builds the usual script of a training job: a ``start`` event, one ``epoch`` event
per accuracy, then ``done`` (or an exit code with no ``done``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer.clock import ManualClock
from explorer.rehearsal.sim import ScriptedJob
from launchers.base import Launcher, Resources

__all__ = ["FakeJob", "FakeLauncher", "Script", "epochs"]


@dataclass
class Script:
    """What one fake job does: timed events, then an exit (or a hang)."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    exit_after_s: float = 0.0
    returncode: int = 0
    hang: bool = False  # never exits by itself (a hung rank)
    log: str = ""  # what the job's log holds (e.g. Open MPI's report of a killed rank)


def epochs(accuracies: Sequence[float], *, epoch_s: float = 10.0, startup_s: float = 2.0,
           target: float | None = None, images_per_sec: float = 100.0, returncode: int = 0,
           done: bool = True) -> Script:
    """A training job: ``start``, an ``epoch`` every ``epoch_s``, ``done`` at the target or the
    last epoch (TTA = training seconds up to the first epoch at or over ``target``)."""
    script: list[tuple[float, dict[str, Any]]] = [(startup_s, {
        "event": "start", "startup_s": startup_s, "config": {"target_accuracy": target}})]
    tta = None
    t = startup_s
    for i, acc in enumerate(accuracies, start=1):
        t += epoch_s
        script.append((t, {"event": "epoch", "epoch": i, "val_accuracy": acc,
                           "images_per_sec": images_per_sec, "elapsed_s": t - startup_s,
                           "step": i * 10, "train_loss": 1.0 - acc, "lr": 0.01}))
        if target is not None and acc >= target:
            tta = t - startup_s
            break
    best = max(accuracies[: len(script) - 1], default=0.0)
    if done:
        script.append((t, {"event": "done", "reason": "target_reached" if tta else "max_epochs",
                           "tta_s": tta, "best_val_accuracy": best, "startup_s": startup_s}))
    return Script(script, exit_after_s=t + 0.1, returncode=returncode)


class FakeJob(ScriptedJob):
    """A job that follows its :class:`Script` on ``clock`` (see the module doc)."""

    def __init__(self, script: Script, *, clock: ManualClock, workdir: Path,
                 argv: list[str], timeout_s: float | None) -> None:
        super().__init__(script.events, exit_after_s=script.exit_after_s, clock=clock,
                         workdir=workdir, argv=argv, timeout_s=timeout_s,
                         returncode=script.returncode, hang=script.hang, log=script.log)
        self.script = script


class FakeLauncher(Launcher):
    """Hands each launch the next script (or ``pick(config_path, resources)``), and records every
    launch as ``(resources, job)`` in :attr:`launched`."""

    def __init__(self, clock: ManualClock, scripts: Iterable[Script] = (), *,
                 pick: Callable[[Path, Resources], Script] | None = None,
                 dead_hosts: Iterable[str] = ()) -> None:
        self.clock = clock
        self.scripts = list(scripts)
        self.pick = pick
        self.dead_hosts = set(dead_hosts)  # hosts where a probe fails (e.g. a cut network)
        self.launched: list[tuple[Resources, FakeJob]] = []

    def probe_argv(self, command: list[str], hosts: Sequence[str],
                   mca: Mapping[str, str]) -> list[str] | None:
        """A real command that fails on a dead host (``false``) and runs ``command`` on the
        others, so the driver's host checks run for real."""
        return ["false"] if set(hosts) & self.dead_hosts else list(command)

    def launch(self, config_path: Path, resources: Resources, *, workdir: Path,
               **options: Any) -> FakeJob:
        if self.pick is not None:
            script = self.pick(config_path, resources)
        elif self.scripts:
            script = self.scripts.pop(0)
        else:
            raise AssertionError("FakeLauncher ran out of scripts")
        job = FakeJob(script, clock=self.clock, workdir=workdir,
                      argv=["fake-mpirun", "-np", str(resources.world_size), str(config_path)],
                      timeout_s=resources.timeout_s)
        self.launched.append((resources, job))
        return job

    def running(self) -> list[FakeJob]:
        return [job for _, job in self.launched if not job.poll().finished]
