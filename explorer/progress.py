"""The study's live line: trial n/N, best TTA so far, the current trial's epoch and accuracy,
then the study's clock: elapsed time, node-seconds spent and, with a budget or ``--timeout``, what
is left.

On a terminal the line is redrawn in place (``\\r``); otherwise (CI logs, pipes) each update that
changes the epoch is printed as its own line, and trial results always get their own line.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["ProgressLine", "duration"]


class ProgressLine:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.best: str = "-"
        self.status: str = ""
        self._open = False

    def set_best(self, text: str) -> None:
        self.best = text

    def set_status(self, text: str) -> None:
        """The study's clock, e.g. ``12m03s, 340 node-s, 17m57s left``."""
        self.status = text

    def update(self, done: int, trial: int, epoch: float | None, acc: float | None,
               detail: str = "") -> None:
        acc_s = "-" if acc is None else f"{acc:.3f}"
        ep = "-" if epoch is None else f"{epoch:g}"
        line = (f"[{done + 1}/{self.total}] trial {trial}: epoch {ep} val_acc {acc_s} | "
                f"best TTA {self.best}{' | ' + self.status if self.status else ''}"
                f"{'  ' + detail if detail else ''}")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line of its own (ends the live line first)."""
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(text + "\n")
        self.stream.flush()


def duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``4000`` → ``1h06m40s``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"
