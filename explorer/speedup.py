"""The answer a user asks for first: how much faster the best config is than the baseline.

``speedup_vs_baseline = baseline TTA ÷ best TTA``, with TTA the study's objective figure
(``tta_s``, ``tta_wall_s`` or ``tta_interp_s``). Single runs are labelled "unconfirmed": the best
of a search is optimistically biased, and one run of each says little about run-to-run spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from explorer.confirm import Group, best_group, groups, tta_of
from explorer.record import Outcome, TrialRecord

__all__ = ["Speedup", "leaderboard", "speedup"]

_TTA_OBJECTIVES = ("tta_s", "tta_wall_s", "tta_interp_s")


def _tta(r: TrialRecord, objective: str) -> float | None:
    """The run's TTA by the objective; None when it missed or did not finish."""
    tta = tta_of(r, objective)
    return None if math.isinf(tta) else tta


@dataclass(frozen=True)
class Speedup:
    baseline: TrialRecord
    best: TrialRecord | None  # the best non-baseline trial that reached the target
    objective: str
    ratio: float | None  # baseline TTA ÷ best TTA; None when either missed
    # after `study confirm`: the best confirmed config and the baseline's runs (medians)
    best_group: Group | None = None
    baseline_group: Group | None = None

    @property
    def confirmed(self) -> bool:
        return self.best_group is not None and self.baseline_group is not None \
            and self.baseline_group.confirmed

    @property
    def baseline_tta(self) -> float | None:
        return _tta(self.baseline, self.objective)

    @property
    def best_tta(self) -> float | None:
        return None if self.best is None else _tta(self.best, self.objective)

    def describe(self) -> str:
        """One line, e.g. ``1.83× faster than the baseline (seed): 52.1 s vs 95.3 s
        (tta_s, trial 7; unconfirmed single runs)``."""
        name = self.baseline.fixed.get("name", "?")
        if self.confirmed:
            assert self.best_group is not None and self.baseline_group is not None
            best_g, base_g = self.best_group, self.baseline_group
            if self.ratio is None:
                return (f"confirmed: the baseline ({name}) {base_g.describe()}; the best config "
                        f"(trial {best_g.root.number}) {best_g.describe()}; no finite ratio")
            how = (f"{self.ratio:.2f}× faster than" if self.ratio >= 1.0 else
                   f"{1 / self.ratio:.2f}× slower than (the search has not beaten)")
            return (f"{how} the baseline ({name}), confirmed: trial {best_g.root.number} "
                    f"{best_g.describe()} vs the baseline {base_g.describe()} "
                    f"({self.objective})")
        if self.baseline.state is not Outcome.COMPLETED:
            return (f"the baseline ({name}) did not finish ({self.baseline.state.value}: "
                    f"{self.baseline.reason}); no speedup")
        base, best = self.baseline_tta, self.best_tta
        if base is None:
            acc = self.baseline.best_val_accuracy or 0.0
            tail = (f"; best TTA {best:.1f} s (trial {self.best.number})"
                    if best is not None and self.best is not None else "")
            return (f"the baseline ({name}) missed the target (best accuracy {acc:.3f}): no "
                    f"speedup figure{tail}")
        if self.ratio is None or best is None or self.best is None:
            return (f"no searched trial reached the target yet; the baseline ({name}) took "
                    f"{base:.1f} s ({self.objective})")
        if self.ratio < 1.0:
            return (f"the search has not beaten the baseline ({name}) yet: its best, trial "
                    f"{self.best.number}, is {1 / self.ratio:.2f}× slower ({best:.1f} s vs "
                    f"{base:.1f} s, {self.objective}; unconfirmed single runs)")
        return (f"{self.ratio:.2f}× faster than the baseline ({name}): {best:.1f} s vs "
                f"{base:.1f} s ({self.objective}, trial {self.best.number} vs trial "
                f"{self.baseline.number}; unconfirmed single runs)")


def speedup(trials: list[TrialRecord], objective: str) -> Speedup | None:
    """The speedup of the study's best searched trial over its baseline trial (None: no
    baseline trial, or not a TTA objective)."""
    if objective not in _TTA_OBJECTIVES:
        return None
    baseline = next((r for r in trials if r.baseline), None)
    if baseline is None or baseline.state in (Outcome.WAITING, Outcome.RUNNING):
        return None
    searched = [(t, r) for r in trials if not r.baseline and r.confirm_of is None
                if (t := _tta(r, objective)) is not None]
    best = min(searched, key=lambda pair: pair[0])[1] if searched else None
    base = _tta(baseline, objective)
    ratio = None
    if base is not None and best is not None:
        best_tta = _tta(best, objective)
        ratio = base / best_tta if best_tta else None
    chosen = best_group(trials, objective)
    base_group = next((g for g in groups(trials, objective) if g.root.number == baseline.number),
                      None)
    if chosen is not None and base_group is not None and base_group.confirmed:
        finite = chosen.median < float("inf") and base_group.median < float("inf")
        ratio = base_group.median / chosen.median if finite and chosen.median else None
        return Speedup(baseline, chosen.root, objective, ratio, chosen, base_group)
    return Speedup(baseline, best, objective, ratio)


def leaderboard(trials: list[TrialRecord], objective: str, *, n: int = 5,
                link: Callable[[TrialRecord], str | None] | None = None) -> list[str]:
    """The fastest ``n`` runs that reached the target, one line each, fastest first, e.g.
    ``1. trial 7: 52.1 s, acc 0.712, 1 node × 2 ranks × 1 thread, bind core, batch 32  URL``."""
    reached = sorted(((t, r) for r in trials if (t := _tta(r, objective)) is not None),
                     key=lambda pair: (pair[0], pair[1].number))
    lines = []
    for rank, (tta, r) in enumerate(reached[:n], start=1):
        tag = (" [baseline]" if r.baseline else
               f" [confirms trial {r.confirm_of}]" if r.confirm_of is not None else "")
        url = link(r) if link is not None else None
        lines.append(f"{rank}. trial {r.number}{tag}: {tta:.1f} s ({objective}), acc "
                     f"{r.best_val_accuracy or 0.0:.3f}, {r.layout_text}, batch "
                     f"{r.derived.get('global_batch', '?')}{'  ' + url if url else ''}")
    return lines
