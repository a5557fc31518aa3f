"""JSON-lines job events (explorer/mcnn/events.py): strict JSON for non-finite figures."""

from __future__ import annotations

import json
import math

from explorer.mcnn.events import EventWriter, finite, read_events


def test_finite_makes_nan_null_and_infinity_large_or_null():
    value = {"a": math.nan, 1: [math.inf, (-math.inf, 0.5)], "ok": "x"}
    assert finite(value) == {"a": None, "1": [1e308, [-1e308, 0.5]], "ok": "x"}
    assert finite(value, infinity=None) == {"a": None, "1": [None, [None, 0.5]], "ok": "x"}


def test_an_event_with_a_nan_loss_is_a_strict_json_line(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    writer.emit("failed", loss=math.nan, best=math.inf)
    writer.close()

    def reject(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    json.loads(path.read_text().strip(), parse_constant=reject)
    (event,) = read_events(path)
    assert event["loss"] is None and event["best"] == 1e308
