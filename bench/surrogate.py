"""What a config would have done, read off the recorded table (``bench.table``).

The replay (``bench.replay``) asks for configs a sampler proposes from the bench space, a grid the
table covers. :class:`TableModel` answers in two parts:

* **convergence** (validation accuracy at each evaluation): the table's runs of the same
  schedule and batch (the non-layout values) on the reference layout, or, for a fixed config
  (the baseline, its neighbours), the runs of that exact config. The run of the trial's own
  seed is used, as a real study's trials all train with the config's seed (0); a seed the
  table lacks is drawn from the recorded ones. Nothing is interpolated: a point the table lacks
  is not answered.
* **time** (training seconds on the TTA clock at each evaluation, and start-up): every run of the
  workload evaluates at the same epochs, so the time of evaluation k on a (layout, batch) cell is
  the median over the cell's uncontended runs (:func:`uncontended`: within 10 % of the cell's
  fastest images/s); start-up is the median of the layout's runs. Part of the table was
  recorded while other work loaded the machine (each record keeps the load average around it):
  those runs' curves count, their clocks do not.

The assumption that joins the two: **convergence does not depend on the layout at a fixed global
batch**. :func:`layout_check` measures it on the table's cell runs (the same schedule on other
layouts) against the seed-to-seed differences of the repeats.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from explorer.layout_first import LAYOUT_DIMS
from explorer.objective import interpolated_tta
from search_spaces.space import SearchSpace

__all__ = ["SIGNAL_PHASE", "UNCONTENDED", "Run", "TableModel", "cell_key", "kendall_tau", "layout_check",
           "uncontended"]

CONVERGENCE_PHASES = ("repeat", "grid", "neighbour")  # runs on the config's own layout
# bench.signal's own runs (the table's phase 6): the model does not read them at all, so that
# recording them changes no figure of the replay, the headline or the calibration
SIGNAL_PHASE = "signal"


@dataclass(frozen=True)
class Run:
    """A simulated run: (training seconds, validation accuracy) at each evaluation."""

    timeline: list[tuple[float, float]]
    epochs: list[float]
    startup_s: float
    config_id: str  # the table config it was read from
    seed: int

    def tta(self, target: float) -> float | None:
        return next((t for t, a in self.timeline if a >= target), None)

    def tta_interp(self, target: float) -> float | None:
        return interpolated_tta(self.timeline, target)


# a layout value a config leaves out is the registry's default (search_spaces.dimensions)
LAYOUT_DEFAULTS = {"ranks_per_node": 1, "threads_per_rank": 1, "binding": "core"}


UNCONTENDED = 0.9  # a run at least this share of its cell's fastest images/s ran alone


def cell_key(params: dict[str, Any]) -> tuple[Any, ...]:
    """(layout values..., per-node batch, per-worker batch): what decides a run's speed."""
    return (*_layout(params), params.get("per_node_batch"), params.get("per_worker_batch"))


def uncontended(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs nothing else slowed down: within :data:`UNCONTENDED` of the fastest images/s of
    their (layout, batch) cell. Other load on a machine only ever slows a run, and a run's speed
    does not depend on its LR schedule, so the fastest runs of a cell are the ones that had the
    machine to themselves (the load average cannot tell: a 2-rank job alone keeps it near 3.5,
    a 1-rank job under other load reaches 5)."""
    fastest: dict[tuple[Any, ...], float] = defaultdict(float)
    for r in records:
        rate = float(r.get("images_per_sec") or 0.0)
        fastest[cell_key(r["params"])] = max(fastest[cell_key(r["params"])], rate)
    return [r for r in records
            if float(r.get("images_per_sec") or 0.0) >= UNCONTENDED * fastest[cell_key(r["params"])]]


def _layout(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params.get(n, LAYOUT_DEFAULTS.get(n)) for n in LAYOUT_DIMS)


def _median_axis(axes: list[list[float]]) -> list[float]:
    n = min(len(a) for a in axes)
    return [statistics.median(a[k] for a in axes) for k in range(n)]


class TableModel:
    """The table as a simulator (see the module doc)."""

    def __init__(self, records: Sequence[dict[str, Any]], space: SearchSpace) -> None:
        self.space = space
        self.records = [r for r in records if r.get("state") == "completed" and r.get("curve")
                        and r.get("phase") != SIGNAL_PHASE]
        if not self.records:
            raise ValueError("the table holds no completed run")
        self.conv_dims = [n for n in space.dimensions if n not in LAYOUT_DIMS]
        self.by_conv: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        self.by_digest: dict[str, list[dict[str, Any]]] = defaultdict(list)
        cells: dict[tuple[Any, ...], list[list[float]]] = defaultdict(list)
        calm: dict[tuple[Any, ...], list[list[float]]] = defaultdict(list)  # uncontended only
        alone = {id(r) for r in uncontended(self.records)}
        starts: dict[tuple[Any, ...], list[float]] = defaultdict(list)
        for r in self.records:
            if r["phase"] in CONVERGENCE_PHASES:
                if r.get("overrides"):
                    self.by_digest[r["digest"]].append(r)
                else:
                    self.by_conv[self.conv_key(r["params"])].append(r)
            cells[self.cell(r["params"])].append([c[1] for c in r["curve"]])
            if id(r) in alone:
                calm[self.cell(r["params"])].append([c[1] for c in r["curve"]])
            if r.get("startup_s") is not None:
                starts[_layout(r["params"])].append(float(r["startup_s"]))
        self._cells = {k: _median_axis(calm.get(k) or v) for k, v in cells.items()}
        self._starts = {k: statistics.median(v) for k, v in starts.items()}
        every = [s for v in starts.values() for s in v]
        self._start_all = statistics.median(every) if every else 0.0
        ends = [float(r["job_wall_s"]) - float(r["startup_s"] or 0.0) - r["curve"][-1][1]
                for r in self.records if r.get("job_wall_s") is not None]
        self.teardown_s = max(0.0, statistics.median(ends)) if ends else 0.0

    def conv_key(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(params.get(n) for n in self.conv_dims)

    def cell(self, params: dict[str, Any]) -> tuple[Any, ...]:
        """(layout values..., per-node batch): what decides the time axis."""
        return cell_key(params)

    # -- time ---------------------------------------------------------------------------------
    def times(self, params: dict[str, Any]) -> list[float] | None:
        """Median training seconds at each evaluation for this layout and batch (None when the
        table has no run of them)."""
        return self._cells.get(self.cell(params))

    def startup_s(self, params: dict[str, Any]) -> float:
        return self._starts.get(_layout(params), self._start_all)

    def rates(self, params: dict[str, Any]) -> list[float]:
        """Steady images/s of the table's runs in ``params``' cell."""
        return [float(r["images_per_sec"]) for r in self.records
                if self.cell(r["params"]) == self.cell(params) and r.get("images_per_sec")]

    # -- convergence --------------------------------------------------------------------------
    def seeds(self, params: dict[str, Any], digest: str | None = None) -> list[dict[str, Any]]:
        """The recorded runs whose curves stand for ``params`` (a fixed config by ``digest``)."""
        if digest is not None:
            return self.by_digest.get(digest, [])
        return self.by_conv.get(self.conv_key(params), [])

    def run(self, params: dict[str, Any], rng: random.Random, *, digest: str | None = None,
            seed: int | None = None) -> Run | None:
        """One simulated run of ``params`` on the time axis of its own layout and batch: the
        recorded run of ``seed`` (a trial's config seed: 0 unless a confirmation repeat), or of
        a seed drawn with ``rng`` when that one is not recorded; None when the table cannot
        answer."""
        seeds, times = self.seeds(params, digest), self.times(params)
        if not seeds or times is None:
            return None
        same = [r for r in seeds if r["seed"] == seed]
        return self.on_axis(same[0] if same else rng.choice(seeds), params, times)

    def runs(self, params: dict[str, Any], *, digest: str | None = None) -> list[Run]:
        times = self.times(params)
        if times is None:
            return []
        return [self.on_axis(r, params, times) for r in self.seeds(params, digest)]

    def on_axis(self, record: dict[str, Any], params: dict[str, Any],
                times: list[float]) -> Run:
        curve = record["curve"][: len(times)]
        return Run([(times[k], float(c[2])) for k, c in enumerate(curve)],
                   [float(c[0]) for c in curve], self.startup_s(params), record["config_id"],
                   int(record["seed"]))

    def expected_tta(self, params: dict[str, Any], target: float, *,
                     digest: str | None = None) -> float:
        """The median TTA over the recorded seeds (inf when the median misses): the "true"
        quality of a config, against which a search's pick is judged."""
        ttas = [t if t is not None else math.inf
                for t in (r.tta(target) for r in self.runs(params, digest=digest))]
        return statistics.median(ttas) if ttas else math.inf

    def coverage(self, grid: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """How many schedule × batch points of ``grid`` the table holds."""
        return sum(self.conv_key(p) in self.by_conv for p in grid), len(grid)

    def layouts(self) -> list[dict[str, Any]]:
        """Every layout the table has runs of (its registry values)."""
        seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in self.records:
            seen.setdefault(_layout(r["params"]), {n: r["params"][n] for n in LAYOUT_DIMS
                                                    if n in r["params"]})
        return list(seen.values())


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's τ-b (ties allowed; inf compares as larger than every finite value)."""
    concordant = discordant = ties_x = ties_y = 0
    n = len(xs)
    for i in range(n):
        for j in range(i + 1, n):
            dx = (xs[i] > xs[j]) - (xs[i] < xs[j])
            dy = (ys[i] > ys[j]) - (ys[i] < ys[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else 0.0


def _mean_abs_diff(a: list[float], b: list[float]) -> float:
    n = min(len(a), len(b))
    return statistics.fmean(abs(a[k] - b[k]) for k in range(n)) if n else math.nan


def layout_check(model: TableModel) -> dict[str, Any]:
    """Convergence on other layouts against the reference layout, at the same schedule and
    batch: the mean |Δ accuracy| per evaluation, beside the same figure between seeds of the
    repeats (the noise floor)."""
    pairs = []
    for r in model.records:
        if r["phase"] != "cells":
            continue
        ref = [x for x in model.by_conv.get(model.conv_key(r["params"]), []) if x["seed"] == 0]
        if ref:
            pairs.append(_mean_abs_diff([c[2] for c in r["curve"]],
                                        [c[2] for c in ref[0]["curve"]]))
    seeds = []
    for runs in [*model.by_conv.values(), *model.by_digest.values()]:
        for a, b in ((a, b) for i, a in enumerate(runs) for b in runs[i + 1:]):
            seeds.append(_mean_abs_diff([c[2] for c in a["curve"]], [c[2] for c in b["curve"]]))
    return {"layout_pairs": len(pairs),
            "layout_mean_abs_diff": statistics.fmean(pairs) if pairs else math.nan,
            "seed_pairs": len(seeds),
            "seed_mean_abs_diff": statistics.fmean(seeds) if seeds else math.nan}
