"""JSON-lines job events: the only channel from a running job to the explorer.

Kinds: ``start``, ``epoch``, ``progress`` (a heartbeat inside a long epoch), ``target_reached``,
``done``, ``failed``. Every line is one ``write()`` of a complete JSON object plus ``\\n`` on a file
opened in append mode, flushed immediately, so the file stays valid JSONL if the job is killed; a
reader ignores a trailing partial line until it is complete. Only a nearly full disk splits a line
(a short write): the rest is retried, so the full disk surfaces as ENOSPC.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["EventTail", "EventWriter", "finite", "read_events"]

KINDS = ("start", "epoch", "progress", "target_reached", "done", "failed")


def finite(value: Any, infinity: float | None = 1e308) -> Any:
    """``value`` made strict JSON, recursively: NaN becomes None (null), ±inf ±``infinity`` (None:
    also null), mapping keys strings."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value) or infinity is None:
            return None
        return infinity if value > 0 else -infinity
    if isinstance(value, dict):
        return {str(k): finite(v, infinity) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v, infinity) for v in value]
    return value


class EventWriter:
    """Append events to ``path`` (no-op when ``path`` is None, e.g. on ranks other than 0)."""

    def __init__(self, path: str | Path | None, *, rank: int = 0) -> None:
        self.path = Path(path) if path is not None else None
        self.rank = rank
        self._fd: int | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"event kind must be one of {KINDS}, got {kind=}")
        record = {"event": kind, "time": time.time(), "rank": self.rank, **finite(fields)}
        if self._fd is not None:
            _write_all(self._fd, (json.dumps(record, allow_nan=False) + "\n").encode())
        return record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte: a nearly full disk takes part of a line (a short write) and refuses the
    rest with ENOSPC, which must surface rather than leave a silently truncated event."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Return every complete event of a file (an incomplete last line is ignored)."""
    tail = EventTail(path)
    return tail.poll()


class EventTail:
    """Incremental reader: each :meth:`poll` returns the events completed since the last one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._buffer = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                events.append({"event": "corrupt", "raw": line[:200].decode(errors="replace")})
        return events
