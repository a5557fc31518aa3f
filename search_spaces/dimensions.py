"""The dimension registry: every name a search space may sample, and where its value goes.

:data:`DIMENSIONS` is the only place that maps a sampled name into a trial: ``space.py`` accepts
exactly its names and ``plan.py`` writes the values through :func:`sampled_config`. Adding a
search dimension is one entry here (plus the docs). An entry is either

* a :class:`Dim`: the training-config path(s) its converted value is written to, e.g.
  ``("schedule", "warmup_epochs")``, ``("optimizer", "momentum")`` or ``("precision",)``; a
  layout field (``("layout", "binding")``, which the launcher's ``Resources`` are read from); a
  rank environment variable (``("layout", "env", "KMP_BLOCKTIME")``); or, with ``pool``, a node
  count that selects the first hosts of the pool (``layout.hosts``); or
* a :class:`Member` of the LR schedule family (``peak_lr``, ``first_decay_epoch``,
  ``decay_every_epochs``, ``decay_phases``, ``decay_factor``), rendered together by
  :func:`render_schedule` into one tf_cnn_benchmarks piecewise string at ``schedule.piecewise``::

      peak;  first;  peak·f;  first+every;  peak·f²;  ...   (boundaries at or past max_epochs dropped)

A dimension that is not sampled writes nothing (the space's ``base`` or the config default
applies) unless its entry has a fallback: the layout is always written in full, so every trial
config carries the layout it ran with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from explorer.mcnn.schedule import PiecewiseSchedule

__all__ = ["DIMENSIONS", "SCHEDULE_PATH", "BaseOr", "Dim", "Fixed", "Like", "Member",
           "render_schedule", "resolve", "sampled_config"]

ConfigPath = tuple[str, ...]
Convert = Callable[[Any], Any]

SCHEDULE_PATH: ConfigPath = ("schedule", "piecewise")
ENV_PATH: ConfigPath = ("layout", "env")


def keep(value: Any) -> Any:
    """No conversion: the config's own validation takes the sampled value as it is."""
    return value


def round3(value: Any) -> float:
    return round(float(value), 3)


def int_str(value: Any) -> str:
    return str(int(value))


@dataclass(frozen=True)
class Fixed:
    """Unsampled: this value."""

    value: Any


@dataclass(frozen=True)
class BaseOr:
    """Unsampled: the space base's value at the dimension's first path, else ``value``."""

    value: Any


@dataclass(frozen=True)
class Like:
    """Unsampled: the (converted) value of dimension ``name``."""

    name: str


@dataclass(frozen=True)
class Dim:
    """One sampled name → the config path(s) its converted value is written to.

    Attributes:
        paths: where the value goes in the training config (usually one path).
        convert: sampled value → config value.
        fallback: what is written when the space does not sample it (None: nothing).
        pool: the value is a node count; ``paths`` get the names of the pool's first hosts.
        per: the value is shared by the ranks of a node: each gets it ÷ the value of dimension
            ``per`` (``per_node_batch`` → ``per_worker_batch``; a remainder makes the trial
            infeasible, see :func:`search_spaces.feasibility.check_node_batch`).
    """

    paths: tuple[ConfigPath, ...]
    convert: Convert = keep
    fallback: Fixed | BaseOr | Like | None = None
    pool: bool = False
    per: str | None = None


@dataclass(frozen=True)
class Member:
    """One parameter of the LR schedule family: its conversion and unsampled default."""

    convert: Convert
    default: Callable[[float], Any]  # max_epochs → value


def _config(*path: str, convert: Convert = keep) -> Dim:
    return Dim((path,), convert)


def _layout(name: str, convert: Convert, default: Any, *also: ConfigPath) -> Dim:
    return Dim((("layout", name), *also), convert, BaseOr(default))


def _env(var: str, convert: Convert, fallback: Like | None = None) -> Dim:
    return Dim(((*ENV_PATH, var),), convert, fallback)


DIMENSIONS: dict[str, Dim | Member] = {
    # the LR schedule family → schedule.piecewise (render_schedule); defaults scale with the run
    "peak_lr": Member(float, lambda max_epochs: 0.01),
    "first_decay_epoch": Member(float, lambda max_epochs: max_epochs * 0.5),
    "decay_every_epochs": Member(float, lambda max_epochs: max_epochs * 0.25),
    "decay_phases": Member(int, lambda max_epochs: 2),
    "decay_factor": Member(float, lambda max_epochs: 0.1),
    # training config
    "warmup_epochs": _config("schedule", "warmup_epochs", convert=round3),
    "linear_scaling": _config("schedule", "linear_scaling", convert=bool),
    "per_worker_batch": _config("per_worker_batch", convert=int),
    # the seed's "BS per node": split over the node's ranks, so the layout leaves the global
    # batch alone (a space samples this or per_worker_batch, not both)
    "per_node_batch": Dim((("per_worker_batch",),), int, per="ranks_per_node"),
    "momentum": _config("optimizer", "momentum"),
    "nesterov": _config("optimizer", "nesterov"),
    "ema_epochs": _config("optimizer", "ema_epochs"),
    "precision": _config("precision"),
    "inter_op_threads": _config("inter_op_threads", convert=int),
    # layout (always written): nodes take the pool's first hosts; TF's intra-op threads follow
    # threads_per_rank
    "nodes": Dim((("layout", "hosts"),), int, Fixed(1), pool=True),
    "ranks_per_node": _layout("ranks_per_node", int, 1),
    "threads_per_rank": _layout("threads_per_rank", int, 1, ("intra_op_threads",)),
    "binding": _layout("binding", str, "core"),
    # every rank's environment (layout.env); OMP_NUM_THREADS is always set
    "omp_num_threads": _env("OMP_NUM_THREADS", int_str, Like("threads_per_rank")),
    "kmp_blocktime": _env("KMP_BLOCKTIME", str),
    "kmp_affinity": _env("KMP_AFFINITY", str),
}

_FAMILY = {name: m for name, m in DIMENSIONS.items() if isinstance(m, Member)}
_UNSET = object()


def render_schedule(params: Mapping[str, Any], max_epochs: float) -> str | None:
    """Render the sampled schedule family as a piecewise string (None if nothing was sampled)."""
    if not any(k in params for k in _FAMILY):
        return None
    v = {name: m.convert(params.get(name, m.default(max_epochs))) for name, m in _FAMILY.items()}
    peak, first, every = v["peak_lr"], v["first_decay_epoch"], v["decay_every_epochs"]
    lrs = [_round_sig(peak)]
    boundaries: list[float] = []
    for i in range(v["decay_phases"]):
        b = round(first + i * every, 2)
        if b >= max_epochs or (boundaries and b <= boundaries[-1]):
            break
        boundaries.append(b)
        lrs.append(_round_sig(peak * v["decay_factor"] ** (i + 1)))
    return PiecewiseSchedule(tuple(lrs), tuple(boundaries)).render()


def _round_sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _base_value(base: Mapping[str, Any], path: ConfigPath, default: Any) -> Any:
    node: Any = base
    for key in path[:-1]:
        node = node.get(key) or {}
    return node.get(path[-1], default)


def _dim(name: str) -> Dim:
    dim = DIMENSIONS[name]
    if not isinstance(dim, Dim):
        raise TypeError(f"{name!r} is rendered with the schedule family, not on its own")
    return dim


def resolve(name: str, params: Mapping[str, Any], base: Mapping[str, Any]) -> Any:
    """The converted value dimension ``name`` writes: sampled, else its fallback.

    Returns:
        The value; a private "unset" marker when the dimension is neither sampled nor has a
        fallback (:func:`sampled_config` then writes nothing).
    """
    dim = _dim(name)
    if name in params:
        return dim.convert(params[name])
    fallback = dim.fallback
    if isinstance(fallback, Fixed):
        return dim.convert(fallback.value)
    if isinstance(fallback, BaseOr):
        return dim.convert(_base_value(base, dim.paths[0], fallback.value))
    if isinstance(fallback, Like):
        return dim.convert(resolve(fallback.name, params, base))
    return _UNSET


def _put(out: dict[str, Any], path: ConfigPath, value: Any) -> None:
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def sampled_config(params: Mapping[str, Any], base: Mapping[str, Any],
                   pool: Sequence[str]) -> dict[str, Any]:
    """The training-config values one sample sets (to be merged over ``base``).

    Args:
        params: sampled values by dimension name (names outside the registry are ignored).
        base: the space's base config (fallbacks, ``max_epochs`` and the base's rank env).
        pool: the host names a trial may use, in order; ``nodes = k`` takes the first ``k``.
    """
    out: dict[str, Any] = {}
    piecewise = render_schedule(params, float(base.get("max_epochs", 20.0)))
    if piecewise is not None:
        _put(out, SCHEDULE_PATH, piecewise)
    for name, dim in DIMENSIONS.items():
        if isinstance(dim, Member):
            continue
        value = resolve(name, params, base)
        if value is _UNSET:
            continue
        if dim.pool:
            value = list(pool[:value])
        if dim.per is not None:
            value = max(1, value // max(1, int(resolve(dim.per, params, base))))
        for path in dim.paths:
            _put(out, path, value)
    # the base's rank environment (values as strings), under the sampled variables
    env = {str(k): str(v) for k, v in (_base_value(base, ENV_PATH, None) or {}).items()}
    _put(out, ENV_PATH, {**env, **out["layout"].get("env", {})})
    return out
