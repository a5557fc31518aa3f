"""Confirmed winners: the best configs of a study rerun with new seeds, compared by median TTA.

The best single run of a search is optimistically biased: of many noisy runs, the luckiest wins.
``mcnn-explore study confirm --top K --repeats R`` reruns the K best searched configs and the
baseline R times each with new seeds (fixed trials tagged ``confirm_of``, each with its own MLflow
child run). A config's *group* is its original trial and its repeats; groups are compared by
median TTA, by MLPerf's olympic rule (the fastest and the slowest run dropped) when a group holds
at least five runs. A run that missed the target or failed counts as infinitely slow.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from explorer.record import Outcome, TrialRecord
from mcnn_base.errors import ConfigError

__all__ = ["OLYMPIC_MIN_RUNS", "Group", "best_group", "groups", "repeat_attrs", "top_trials",
           "tta_of"]

OLYMPIC_MIN_RUNS = 5


def tta_of(r: TrialRecord, objective: str) -> float:
    """The run's TTA by the study's objective; infinite when it missed or did not finish."""
    if r.state is not Outcome.COMPLETED or not r.reached:
        return math.inf
    value = getattr(r, objective, None)
    return float(value) if value is not None else math.inf


@dataclass(frozen=True)
class Group:
    """One config: its original trial and the finished repeats of it."""

    root: TrialRecord
    runs: tuple[TrialRecord, ...]  # the root first
    objective: str

    @property
    def ttas(self) -> list[float]:
        return sorted(tta_of(r, self.objective) for r in self.runs)

    @property
    def olympic(self) -> bool:
        return len(self.runs) >= OLYMPIC_MIN_RUNS

    @property
    def median(self) -> float:
        values = self.ttas[1:-1] if self.olympic else self.ttas
        return float(statistics.median(values))

    @property
    def confirmed(self) -> bool:
        return len(self.runs) > 1

    def describe(self) -> str:
        """e.g. ``median 52.1 s over 5 runs (olympic), range 48.0–57.3 s, 0 missed``."""
        values = self.ttas
        missed = sum(1 for v in values if math.isinf(v))
        finite = [v for v in values if not math.isinf(v)]
        spread = f"range {finite[0]:.1f}–{finite[-1]:.1f} s" if finite else "no run reached it"
        rule = " (olympic)" if self.olympic else ""
        median = "∞ (most runs missed)" if math.isinf(self.median) else f"{self.median:.1f} s"
        return (f"median {median} over {len(values)} runs{rule}, {spread}, {missed} missed")


def groups(trials: list[TrialRecord], objective: str) -> list[Group]:
    """Every finished original trial (searched or baseline) with its finished repeats."""
    repeats: dict[int, list[TrialRecord]] = {}
    for r in trials:
        # a repeat lost with its driver (interrupted, stale) says nothing about the config
        if (r.confirm_of is not None and r.state not in (Outcome.WAITING, Outcome.RUNNING)
                and not r.lost):
            repeats.setdefault(r.confirm_of, []).append(r)
    return [Group(r, (r, *repeats.get(r.number, [])), objective) for r in trials
            if r.confirm_of is None and r.state is Outcome.COMPLETED]


def best_group(trials: list[TrialRecord], objective: str) -> Group | None:
    """The confirmed searched config with the lowest median TTA (None: nothing confirmed)."""
    confirmed = [g for g in groups(trials, objective) if g.confirmed and not g.root.baseline]
    return min(confirmed, key=lambda g: (g.median, g.root.number)) if confirmed else None


def top_trials(trials: list[TrialRecord], objective: str, k: int) -> list[TrialRecord]:
    """The ``k`` fastest searched trials that reached the target (baseline and repeats aside).

    Raises:
        ConfigError: ``k`` < 1, or no searched trial reached the target.
    """
    if k < 1:
        raise ConfigError(f"--top must be >= 1, got {k}")
    searched = [r for r in trials if r.confirm_of is None and not r.baseline
                and not math.isinf(tta_of(r, objective))]
    if not searched:
        states: dict[str, int] = {}
        for r in trials:
            states[r.state.value] = states.get(r.state.value, 0) + 1
        summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "none"
        raise ConfigError(f"nothing to confirm: no searched trial reached the target (trials: "
                          f"{summary}); run more trials with 'mcnn-explore study launch'")
    return sorted(searched, key=lambda r: (tta_of(r, objective), r.number))[:k]


def repeat_attrs(root: TrialRecord, seed: int) -> dict[str, Any]:
    """The user attributes of one repeat of ``root``: its values again, with a new seed."""
    params = root.fixed.get("params") if root.fixed else root.params
    overrides = dict(root.fixed.get("overrides") or {}) if root.fixed else {}
    overrides["seed"] = seed
    return {"confirm_of": root.number,
            "fixed": {"name": f"trial {root.number}", "params": dict(params or {}),
                      "overrides": overrides}}
