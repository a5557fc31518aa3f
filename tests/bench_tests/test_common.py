from __future__ import annotations

import json

from bench.common import emit, verdict


def test_verdict_reads_the_direction_of_the_target():
    assert verdict(0.5, 0.5) == "<= 0.50 met"
    assert verdict(0.51, 0.5) == "<= 0.50 NOT met"
    assert verdict(0.95, 0.95, at_least=True) == ">= 0.95 met"
    assert verdict(0.686, 0.90, at_least=True) == ">= 0.90 NOT met"


def test_emit_prints_strict_json_with_null_for_missing_figures(capsys):
    emit("x", {"tta_s": float("inf"), "ratio": float("nan"), "rows": [[1.5, float("-inf")]],
               "nested": {"ok": 2.0, "bad": (float("nan"),)}})
    line = capsys.readouterr().out.strip()
    assert line.startswith("BENCH_JSON ")

    def reject(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    data = json.loads(line.removeprefix("BENCH_JSON "), parse_constant=reject)
    assert data == {"bench": "x", "tta_s": None, "ratio": None, "rows": [[1.5, None]],
                    "nested": {"ok": 2.0, "bad": [None]}}
