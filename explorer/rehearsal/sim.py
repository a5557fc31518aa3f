"""The simulated launcher and clock that let the real study loop rehearse a sweep.

:class:`SimLauncher` reads each trial's ``config.yaml`` as a real launch would, asks the
:class:`~explorer.rehearsal.model.TrialModel` what it would do, and returns a
:class:`ScriptedJob`
that appends the job's events (``start``, one ``epoch`` per evaluation, ``done``) to the trial's
real ``events.jsonl`` as simulated time passes, so the driver follows, prunes and records it
exactly as a real one. :class:`EventClock` is a simulated clock that, asked to sleep, jumps to
the next moment something happens (an event is due or a job ends), so a 128-node sweep of
simulated hours runs in seconds.

Seed noise: each trial's epochs-to-target are drawn around the model's prediction with the
calibration's leave-one-out spread (log-normal, seeded by the config's seed and content), so
repeats of one config differ as real repeats do.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import yaml

from explorer.clock import Clock
from explorer.rehearsal.model import Prediction, TrialModel
from launchers.base import JobState, Launcher, Resources

__all__ = ["EventClock", "ScriptedJob", "SimLauncher", "accuracy_curve"]

CHANCE_MARGIN = 0.2  # the curve's plateau: the target plus this share of what is left above it


def accuracy_curve(epoch: float, epochs_to_target: float | None, target: float,
                   chance: float, max_epochs: float) -> float:
    """Validation accuracy at ``epoch``: a saturating rise from chance that crosses ``target``
    at ``epochs_to_target`` (a miss levels off just below it)."""
    if epochs_to_target is None:
        plateau, tau = target - 0.02 * (target - chance), max_epochs / 3.0
    else:
        plateau = target + CHANCE_MARGIN * (1.0 - target)
        share = (target - chance) / (plateau - chance)
        tau = epochs_to_target * (1.0 - 1e-6) / -math.log(1.0 - share)  # crossed at it
    return chance + (plateau - chance) * (1.0 - math.exp(-epoch / tau))


class EventClock:
    """Simulated time that jumps to the next due event of ``launcher``'s jobs when slept on."""

    def __init__(self, start: float = 1.9e9) -> None:
        self.t = start
        self.launcher: SimLauncher | None = None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        nxt = self.launcher.next_due() if self.launcher is not None else None
        self.t = max(self.t + max(0.0, seconds), nxt if nxt is not None else self.t)


class ScriptedJob:
    """A job that replays timed events on a clock: each ``(seconds after launch, event)`` is
    appended to the trial's real ``events.jsonl`` once due, and the job ends at
    ``exit_after_s`` with ``returncode`` (never, with ``hang``). ``cancel`` and ``timeout_s``
    behave as a real :class:`~launchers.base.Job`'s. The rehearsal's jobs are these, and so are
    the fake launcher's of the loop tests (``devsupport.fake_launcher``)."""

    _pids = count(700_000)

    def __init__(self, events: list[tuple[float, dict[str, Any]]], *, exit_after_s: float,
                 clock: Clock, workdir: Path, argv: list[str], timeout_s: float | None,
                 returncode: int = 0, hang: bool = False, log: str = "") -> None:
        self.events, self.exit_after_s, self.clock, self.argv = events, exit_after_s, clock, argv
        self.exit_code, self.hang = returncode, hang
        self.pid = next(self._pids)
        self.started = clock.now()
        self.timeout_s = timeout_s
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "job.log"
        self.log_path.write_text(log)
        self.events_path: Path | None = workdir / "events.jsonl"
        self.events_path.unlink(missing_ok=True)
        (workdir / "argv.txt").write_text(" ".join(argv) + "\n")
        self._next = 0
        self._state = JobState.RUNNING
        self._returncode: int | None = None

    def next_due(self) -> float | None:
        """When something next happens to this job (None: it has ended)."""
        if self._state.finished:
            return None
        due = [] if self.hang else [self.exit_after_s]
        if self._next < len(self.events):
            due.append(self.events[self._next][0])
        if self.timeout_s is not None:
            due.append(self.timeout_s + 1e-3)
        return self.started + min(due) if due else None

    def poll(self) -> JobState:
        if self._state.finished:
            return self._state
        elapsed = self.clock.now() - self.started
        assert self.events_path is not None
        lines = []
        while self._next < len(self.events) and self.events[self._next][0] <= elapsed:
            at, event = self.events[self._next]
            lines.append(json.dumps({**event, "time": self.started + at}))
            self._next += 1
        if lines:
            with self.events_path.open("a") as fh:
                fh.write("\n".join(lines) + "\n")
        if not self.hang and elapsed >= self.exit_after_s:
            self._returncode = self.exit_code
            self._state = JobState.COMPLETED if self.exit_code == 0 else JobState.FAILED
        elif self.timeout_s is not None and elapsed > self.timeout_s:
            self._returncode, self._state = -15, JobState.TIMEOUT
        return self._state

    @property
    def state(self) -> JobState:
        return self.poll()

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def cancel(self) -> JobState:
        if not self._state.finished:
            self._returncode, self._state = -15, JobState.CANCELLED
        return self._state

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


def _noise(config: dict[str, Any]) -> float:
    """A standard normal draw fixed by the config (its seed included)."""
    text = json.dumps({k: v for k, v in config.items() if k not in ("events", "data")},
                      sort_keys=True, default=str)
    return random.Random(hashlib.sha256(text.encode()).hexdigest()).gauss(0.0, 1.0)


class SimLauncher(Launcher):
    """Launches :class:`ScriptedJob` s from ``model`` on ``clock`` (``n_train``/``n_val`` images)."""

    def __init__(self, model: TrialModel, clock: EventClock, *, n_train: int, n_val: int,
                 num_classes: int) -> None:
        self.model, self.clock = model, clock
        self.n_train, self.n_val, self.num_classes = n_train, n_val, num_classes
        self.jobs: list[ScriptedJob] = []
        self.predictions: dict[str, Prediction] = {}
        clock.launcher = self

    def next_due(self) -> float | None:
        due = [d for d in (j.next_due() for j in self.jobs) if d is not None]
        return min(due) if due else None

    def probe_argv(self, command: list[str], hosts: Sequence[str],
                   mca: Mapping[str, str]) -> list[str] | None:
        return None  # simulated hosts carry their hardware

    def launch(self, config_path: Path, resources: Resources, *, workdir: Path,
               **options: Any) -> ScriptedJob:
        config = yaml.safe_load(config_path.read_text())
        p = self.model.predict(config, self.n_train, self.n_val)
        self.predictions[str(workdir)] = p
        target = config.get("target_accuracy")
        max_epochs = float(config.get("max_epochs", 20.0))
        every = float(config.get("eval_every_epochs", 1.0))
        epochs = p.epochs_to_target
        if epochs is not None:  # seed noise, as real repeats differ
            epochs *= math.exp(p.sigma_epochs * _noise(config))
            epochs = epochs if epochs <= max_epochs else None
        events: list[tuple[float, dict[str, Any]]] = [(p.startup_s, {
            "event": "start", "startup_s": p.startup_s, "simulated": True,
            "config": {"target_accuracy": target}})]
        chance = 1.0 / self.num_classes
        n_evals = max(1, math.ceil(max_epochs / every - 1e-9))
        train_per_eval = p.epoch_s * every - p.eval_s
        elapsed, tta, best = 0.0, None, 0.0
        for k in range(1, n_evals + 1):
            epoch = min(max_epochs, k * every)
            elapsed += train_per_eval + p.eval_s
            acc = accuracy_curve(epoch, epochs, float(target or 1.0), chance, max_epochs)
            best = max(best, acc)
            events.append((p.startup_s + elapsed, {
                "event": "epoch", "epoch": round(epoch, 4), "val_accuracy": round(acc, 5),
                "images_per_sec": p.images_per_sec, "elapsed_s": round(elapsed, 3),
                "eval_s": round(p.eval_s, 3), "step": int(epoch * self.n_train
                                                          // max(1, int(config["per_worker_batch"]))),
                "train_loss": round(1.0 - acc, 4), "simulated": True}))
            if target is not None and acc >= float(target):
                tta = elapsed
                break
        events.append((p.startup_s + elapsed, {
            "event": "done", "reason": "target_reached" if tta is not None else "max_epochs",
            "tta_s": tta, "best_val_accuracy": best, "startup_s": p.startup_s,
            "simulated": True}))
        workdir.mkdir(parents=True, exist_ok=True)
        job = ScriptedJob(events, exit_after_s=p.startup_s + elapsed + 0.5, clock=self.clock,
                          workdir=workdir, argv=["simulated-mpirun", "-np",
                                                 str(resources.world_size), str(config_path)],
                          timeout_s=resources.timeout_s, log="simulated job (mcnn-explore "
                          "rehearse)\n")
        self.jobs = [j for j in self.jobs if not j._state.finished] + [job]
        return job
