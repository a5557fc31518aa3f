"""The headline a user asks for: the search's best config against the baselines, each run R ≥ 5
times (the table's phase-5 "confirm" runs, ``bench.table``).

* **best**: the table's best grid config (the replay's oracle, lowest expected TTA at the target:
  what a search that covers the grid ends up picking), run with fresh seeds 10–14, as the seeds
  that chose it would flatter it;
* **seed baseline**: the seed's hand-tuned run mapped onto this machine, seeds 0–4;
* **practitioner**: ``bench/practitioner.<workload>.yaml``, written down before the search.

Every TTA is a run's own measured training seconds to the target (its own time axis, not a cell
median); a run that misses counts as ∞, so a median is ∞ when most runs miss. The ratio is
baseline TTA ÷ best TTA, the median of each over its seeds, with a 90 % percentile-bootstrap
interval (each side resampled on its own).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bench.stats import bootstrap_ratio, interval, median

__all__ = ["confirm_ttas", "headline"]

MIN_SEEDS = 5


def _tta(record: dict[str, Any], target: float) -> float:
    return next((float(c[1]) for c in record["curve"] if float(c[2]) >= target), math.inf)


def confirm_ttas(records: Sequence[dict[str, Any]], target: float) -> dict[str, list[float]]:
    """TTA of each recorded run of the headline's configs: ``best:<config>``, ``baseline`` (its
    repeat and confirm runs) and ``practitioner``, in seed order."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        if r.get("state") != "completed":
            continue
        name = r["config_id"]
        if r.get("phase") == "confirm" or (name == "baseline" and r.get("phase") == "repeat"):
            out[name].append((int(r["seed"]), _tta(r, target)))
    return {k: [t for _, t in sorted(v)] for k, v in out.items()}


def _side(ttas: list[float]) -> str:
    missed = sum(math.isinf(t) for t in ttas)
    med = median(ttas)
    text = "misses (median)" if math.isinf(med) else f"{med:.1f} s"
    return f"{text} over {len(ttas)} seeds" + (f", {missed} missed" if missed else "")


def headline(records: Sequence[dict[str, Any]], target: float,
             search: tuple[str, tuple[float, float, float]] | None) -> tuple[list[str],
                                                                            dict[str, Any]]:
    """Lines to print and the figures: best ÷ each baseline with intervals; ``search`` is the
    best strategy and its node-seconds to within 10 % of the best (median, 90 % interval)."""
    ttas = confirm_ttas(records, target)
    best = next((k for k in ttas if k.startswith("best:")), None)
    if best is None or len(ttas[best]) < MIN_SEEDS:
        return ([f"headline: not yet recorded (bench.table's confirm phase: the table's best "
                 f"with {MIN_SEEDS} fresh seeds)"], {})
    lines = [f"headline: the table's best, {best[5:]}: {_side(ttas[best])} (fresh seeds)"]
    figs: dict[str, Any] = {"best": best[5:], "best_tta_s": ttas[best]}
    for name in ("baseline", "practitioner"):
        runs = ttas.get(name, [])
        if len(runs) < MIN_SEEDS:
            lines.append(f"  vs {name}: {len(runs)} of {MIN_SEEDS} seeds recorded")
            continue
        ratio = bootstrap_ratio(runs, ttas[best])
        label = "seed baseline" if name == "baseline" else "practitioner baseline"
        lines.append(f"  vs the {label} ({_side(runs)}): {label} TTA ÷ best = "
                     f"{interval(ratio, 2)} (median [90 % CI])")
        figs[name] = {"tta_s": runs, "ratio": ratio}
    if search is not None:
        name, cost = search
        lines.append(f"  found by {name} after {interval(cost)} node-s (simulated median "
                     "[90 % CI] to a pick within 10 % of the best)")
        figs["search"] = {"strategy": name, "node_s": cost}
    return lines, figs
