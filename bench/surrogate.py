"""What a config would have done, read off the recorded table (``bench.table``).

The replay (``bench.replay``) asks for configs a sampler proposes, which are rarely table points.
:class:`TableModel` answers from the table in two parts:

* **convergence** (validation accuracy at each evaluation, by epoch): a fixed config (the
  baseline, its neighbours) is looked up exactly; a sampled one takes the nearest table config
  with the same batch (and other categorical non-layout values), by distance over the numeric
  non-layout dimensions scaled to [0, 1] as the sampler scales them (log ones on the log scale).
  One of that config's recorded seeds is chosen at random, so seed noise is replayed too.
* **time** (training seconds on the TTA clock at each evaluation, and start-up): every run of the
  workload evaluates at the same epochs, so the time of evaluation k on a (layout, batch) cell is
  the median over the table's runs in that cell; start-up is the median of the layout's runs.
  Medians keep a run slowed by other load from moving the clock.

The assumption that makes this a model: **convergence does not depend on the layout at a fixed
global batch** (``bench.table``'s layout-check runs measure it). :func:`leave_one_out` says how
well the nearest-neighbour lookup predicts a table config's TTA from the others.
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
from search_spaces.space import Dimension, SearchSpace

__all__ = ["Run", "TableModel", "leave_one_out", "spearman"]


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


def _layout(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params.get(n) for n in LAYOUT_DIMS)


class TableModel:
    """The table as a simulator (see the module doc)."""

    def __init__(self, records: Sequence[dict[str, Any]], space: SearchSpace) -> None:
        self.space = space
        self.records = [r for r in records if r.get("state") == "completed" and r.get("curve")]
        if not self.records:
            raise ValueError("the table holds no completed run")
        self.by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.records:
            if r["phase"] != "layout":  # layout checks only test the assumption
                self.by_config[r["config_id"]].append(r)
        self.by_digest = {rs[0]["digest"]: cid for cid, rs in self.by_config.items()}
        self.numeric = [n for n, d in space.dimensions.items()
                        if n not in LAYOUT_DIMS and d.kind != "categorical"]
        self.exact = [n for n, d in space.dimensions.items()
                      if n not in LAYOUT_DIMS and d.kind == "categorical"]
        self._times: dict[tuple[Any, ...], list[float]] = {}
        cells: dict[tuple[Any, ...], list[list[float]]] = defaultdict(list)
        coarse: dict[tuple[Any, ...], list[list[float]]] = defaultdict(list)
        starts: dict[tuple[Any, ...], list[float]] = defaultdict(list)
        for r in self.records:
            times = [c[1] for c in r["curve"]]
            cells[self._cell(r["params"])].append(times)
            coarse[self._cell(r["params"], binding=False)].append(times)
            if r.get("startup_s") is not None:
                starts[_layout(r["params"])].append(float(r["startup_s"]))
        self._cells = {k: _median_axis(v) for k, v in cells.items()}
        self._coarse = {k: _median_axis(v) for k, v in coarse.items()}
        self._starts = {k: statistics.median(v) for k, v in starts.items()}
        every = [s for v in starts.values() for s in v]
        self._start_all = statistics.median(every) if every else 0.0
        ends = [float(r["job_wall_s"]) - float(r["startup_s"] or 0.0) - r["curve"][-1][1]
                for r in self.records if r.get("job_wall_s") is not None]
        self.teardown_s = max(0.0, statistics.median(ends)) if ends else 0.0

    def _sampled(self, record: dict[str, Any]) -> bool:
        """A table point drawn from the space (not a fixed config such as the baseline)."""
        return not record.get("overrides") and all(n in record["params"]
                                                   for n in self.space.dimensions)

    # -- time ---------------------------------------------------------------------------------
    def _cell(self, params: dict[str, Any], *, binding: bool = True) -> tuple[Any, ...]:
        layout = tuple(params.get(n) for n in LAYOUT_DIMS if binding or n != "binding")
        return (*layout, *(params.get(n) for n in self.exact))

    def times(self, params: dict[str, Any]) -> list[float] | None:
        """Median training seconds at each evaluation for this layout and batch (None when the
        table has no run of them)."""
        return self._cells.get(self._cell(params)) or self._coarse.get(
            self._cell(params, binding=False))

    def startup_s(self, params: dict[str, Any]) -> float:
        return self._starts.get(_layout(params), self._start_all)

    # -- convergence --------------------------------------------------------------------------
    def _unit(self, params: dict[str, Any]) -> list[float]:
        return [_scaled(self.space.dimensions[n], params[n]) for n in self.numeric]

    def neighbour(self, params: dict[str, Any], overrides: dict[str, Any] | None = None, *,
                  exclude: str | None = None, digest: str | None = None) -> str | None:
        """The table config whose curves stand for ``params`` (None: nothing comparable)."""
        if digest is not None and digest in self.by_digest:
            return self.by_digest[digest]
        key = [params.get(n) for n in self.exact]
        here = self._unit(params)
        best: tuple[float, str] | None = None
        for cid, rs in self.by_config.items():
            p = rs[0]["params"]
            if cid == exclude or not self._sampled(rs[0]):
                continue
            if [p.get(n) for n in self.exact] != key:
                continue
            d = math.dist(here, self._unit(p))
            if best is None or (d, cid) < best:
                best = (d, cid)
        return None if best is None else best[1]

    def run(self, params: dict[str, Any], rng: random.Random, *, digest: str | None = None,
            exclude: str | None = None) -> Run | None:
        """One simulated run of ``params`` (a recorded seed of its neighbour, on the time axis
        of its own layout and batch); None when the table cannot answer."""
        cid = self.neighbour(params, digest=digest, exclude=exclude)
        times = self.times(params)
        if cid is None or times is None:
            return None
        record = rng.choice(self.by_config[cid])
        return self._run(record, params, times)

    def runs(self, params: dict[str, Any], *, digest: str | None = None,
             exclude: str | None = None) -> list[Run]:
        """Every recorded seed of ``params``' neighbour, on ``params``' time axis."""
        cid = self.neighbour(params, digest=digest, exclude=exclude)
        times = self.times(params)
        if cid is None or times is None:
            return []
        return [self._run(r, params, times) for r in self.by_config[cid]]

    def _run(self, record: dict[str, Any], params: dict[str, Any], times: list[float]) -> Run:
        curve = record["curve"][: len(times)]
        return Run([(times[k], float(c[2])) for k, c in enumerate(curve)],
                   [float(c[0]) for c in curve], self.startup_s(params), record["config_id"],
                   int(record["seed"]))

    def expected_tta(self, params: dict[str, Any], target: float, *,
                     digest: str | None = None) -> float:
        """The median TTA over the neighbour's seeds (inf when the median misses): the "true"
        quality of a config, against which a search's pick is judged."""
        ttas = [t if t is not None else math.inf
                for t in (r.tta(target) for r in self.runs(params, digest=digest))]
        return statistics.median(ttas) if ttas else math.inf

    def space_configs(self) -> list[dict[str, Any]]:
        """The params of every sampled table config (one per config)."""
        return [rs[0]["params"] for rs in self.by_config.values() if self._sampled(rs[0])]


def _median_axis(axes: list[list[float]]) -> list[float]:
    n = min(len(a) for a in axes)
    return [statistics.median(a[k] for a in axes) for k in range(n)]


def _scaled(dim: Dimension, value: Any) -> float:
    assert dim.low is not None and dim.high is not None
    lo, hi, v = float(dim.low), float(dim.high), float(value)
    if dim.log:
        lo, hi, v = math.log(lo), math.log(hi), math.log(v)
    return 0.0 if hi == lo else (v - lo) / (hi - lo)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties; inf values rank last)."""
    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2.0
            i = j + 1
        return out
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else 0.0


def leave_one_out(model: TableModel, target: float) -> dict[str, Any]:
    """How well the nearest other config predicts each table config's median TTA: Spearman's
    rank correlation (misses rank last) and hit/miss agreement, over the sampled configs."""
    actual, predicted = [], []
    for cid, rs in model.by_config.items():
        params = rs[0]["params"]
        other = model.neighbour(params, exclude=cid) if model._sampled(rs[0]) else None
        times = model.times(params)
        if other is None or times is None:
            continue
        own = [model._run(r, params, times).tta(target) for r in rs]
        near = [model._run(r, params, times).tta(target) for r in model.by_config[other]]
        actual.append(statistics.median([t if t is not None else math.inf for t in own]))
        predicted.append(statistics.median([t if t is not None else math.inf for t in near]))
    agree = sum(math.isinf(a) == math.isinf(p) for a, p in zip(actual, predicted, strict=True))
    return {"configs": len(actual), "spearman": spearman(actual, predicted) if actual else 0.0,
            "hit_miss_agreement": agree / len(actual) if actual else 0.0}
