"""Declarative search spaces: YAML → validated :class:`SearchSpace`.

A space file has three sections::

    name: seed_bbbc021
    base: {...}            # fixed training-config values (merged under every sampled config)
    dimensions:            # what Optuna samples
      peak_lr: {float: [0.004, 0.064], log: true}
      per_worker_batch: {choices: [4, 8, 16]}
      nodes: {int: [1, 2]}
    constraints: {min_updates_per_epoch: 150, max_global_batch: 2048}

A dimension is exactly one of ``float: [low, high]``, ``int: [low, high]`` (both with optional
``log`` / ``step``) or ``choices: [...]``; its name must be in the dimension registry
(:data:`search_spaces.dimensions.DIMENSIONS`). Every error names the file, the key path and, where
YAML can tell, the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mcnn_base.errors import ConfigError
from search_spaces.dimensions import DIMENSIONS

__all__ = ["Constraints", "Dimension", "SearchSpace", "load_space"]

_TOP_KEYS = {"name", "description", "base", "dimensions", "constraints"}
_CONSTRAINT_KEYS = {"min_updates_per_epoch", "max_global_batch"}


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Constraints:
    min_updates_per_epoch: int = 1
    max_global_batch: int = 2048


@dataclass(frozen=True)
class SearchSpace:
    name: str
    dimensions: dict[str, Dimension]
    base: dict[str, Any] = field(default_factory=dict)
    constraints: Constraints = Constraints()
    description: str = ""
    source: str = ""


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key (``__lines__``)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    mapping["__lines__"] = lines
    return mapping  # type: ignore[return-value]


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "__lines__"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _where(src: str, mapping: dict[str, Any], key: str, path: str) -> str:
    line = mapping.get("__lines__", {}).get(key)
    return f"{src}:{line}: {path}" if line else f"{src}: {path}"


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {what} must be a number, got {value!r}")
    return float(value)


# dimensions a space may not sample together: the second would overwrite the first
EXCLUSIVE = (("per_node_batch", "per_worker_batch"),)


def _dimension(name: str, spec: Any, where: str) -> Dimension:
    if name not in DIMENSIONS:
        raise ConfigError(f"{where}: unknown dimension {name!r}; expected one of "
                          f"{', '.join(sorted(DIMENSIONS))}")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping like {{float: [low, high]}} or "
                          f"{{choices: [...]}}, got {_strip(spec)!r}")
    spec = _strip(spec)
    kinds = [k for k in ("float", "int", "choices") if k in spec]
    extra = set(spec) - {"float", "int", "choices", "log", "step"}
    if len(kinds) != 1 or extra:
        raise ConfigError(f"{where}: a dimension needs exactly one of float/int/choices (plus "
                          f"optional log, step); got keys {sorted(spec)}")
    kind = kinds[0]
    if kind == "choices":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices: expected a non-empty list, got {choices!r}")
        return Dimension(name, "categorical", choices=tuple(choices))
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(f"{where}.{kind}: expected [low, high], got {bounds!r}")
    low, high = (_number(b, f"{where}.{kind}", "bound") for b in bounds)
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"{where}.int: bounds must be integers, got {bounds!r}")
    if not low <= high:
        raise ConfigError(f"{where}.{kind}: low must be <= high, got [{low:g}, {high:g}]")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low:g}")
    step = spec.get("step")
    if step is not None and _number(step, f"{where}.step", "step") <= 0:
        raise ConfigError(f"{where}.step: must be > 0, got {step!r}")
    return Dimension(name, kind, low, high, log, None if step is None else float(step))


def load_space(path: str | Path) -> SearchSpace:
    """Load and validate a search-space YAML file.

    Raises:
        ConfigError: unknown key, bad range or type, malformed YAML; the message names the file,
            the key path and the line.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise ConfigError(f"search space {src!r} does not exist")
    try:
        doc = yaml.load(path.read_text(), Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{src}:{mark.line + 1}" if mark is not None else src
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{src}: a search space must be a mapping with 'dimensions'")
    for key in doc:
        if key != "__lines__" and key not in _TOP_KEYS:
            raise ConfigError(f"{_where(src, doc, key, key)}: unknown key; expected one of "
                              f"{', '.join(sorted(_TOP_KEYS))}")
    dims_doc = doc.get("dimensions")
    if not isinstance(dims_doc, dict) or len(dims_doc) <= (1 if "__lines__" in dims_doc else 0):
        raise ConfigError(f"{src}: 'dimensions' must be a non-empty mapping")
    dims = {name: _dimension(name, spec, _where(src, dims_doc, name, f"dimensions.{name}"))
            for name, spec in dims_doc.items() if name != "__lines__"}
    for pair in EXCLUSIVE:
        if all(name in dims for name in pair):
            raise ConfigError(f"{_where(src, dims_doc, pair[1], 'dimensions')}: {pair[0]} and "
                              f"{pair[1]} are both sampled; expected one of them (per-worker "
                              "batch = per-node batch ÷ ranks per node)")
    cons_doc = doc.get("constraints") or {}
    if not isinstance(cons_doc, dict):
        raise ConfigError(f"{src}: 'constraints' must be a mapping")
    values: dict[str, int] = {}
    for key, value in cons_doc.items():
        if key == "__lines__":
            continue
        where = _where(src, cons_doc, key, f"constraints.{key}")
        if key not in _CONSTRAINT_KEYS:
            raise ConfigError(f"{where}: unknown constraint; expected one of "
                              f"{', '.join(sorted(_CONSTRAINT_KEYS))}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: expected a positive integer, got {value!r}")
        values[key] = value
    base = _strip(doc.get("base") or {})
    if not isinstance(base, dict):
        raise ConfigError(f"{src}: 'base' must be a mapping of training-config values")
    name = doc.get("name") or path.stem
    if not isinstance(name, str):
        raise ConfigError(f"{_where(src, doc, 'name', 'name')}: expected a string, got {name!r}")
    return SearchSpace(name=name, dimensions=dims, base=base, constraints=Constraints(**values),
                       description=str(doc.get("description") or ""), source=src)
