"""The loop's clock: real time for studies, simulated time for replays and tests.

:class:`explorer.driver.StudyDriver` reads the time and waits only through a :class:`Clock`, so a
simulated launcher with a simulated clock drives the very same loop, samplers, pruners and records
(fast loop tests, and later replays and rehearsals) without a second study engine.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (unix time, or its simulated stand-in)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a simulated clock just moves on)."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ManualClock:
    """Simulated time: starts at ``start`` (default: now) and moves only when slept on."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else float(start)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
