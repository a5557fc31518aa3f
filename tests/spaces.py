"""Tiny search spaces and trial configs for tests: 64×80 synthetic images, a few epochs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["write_space", "write_trial_config"]


def write_space(path: Path, *, name: str = "test", epochs: int = 2, ranks: Sequence[int] = (2,),
                bindings: Sequence[str] = ("none",), batches: Sequence[int] = (8,),
                nodes: tuple[int, int] | None = None, base: dict[str, Any] | None = None) -> Path:
    """Write a space file at ``path``: peak LR in [0.01, 0.03], one thread per rank."""
    dimensions: dict[str, Any] = {}
    if nodes is not None:
        dimensions["nodes"] = {"int": list(nodes)}
    dimensions.update({
        "peak_lr": {"float": [0.01, 0.03], "log": True},
        "per_worker_batch": {"choices": list(batches)},
        "ranks_per_node": {"choices": list(ranks)},
        "threads_per_rank": {"choices": [1]},
        "binding": {"choices": list(bindings)},
    })
    doc = {
        "name": name,
        "base": {"max_epochs": epochs,
                 "data": {"image_size": [64, 80], "normalize": "standardize"},
                 "schedule": {"warmup_epochs": 0.5}, **(base or {})},
        "dimensions": dimensions,
        "constraints": {"min_updates_per_epoch": 2, "max_global_batch": 64},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_trial_config(path: Path, root: Path, cache_dir: Path, **over: Any) -> Path:
    """Write one job config at ``path`` (batch 8, 12 epochs, an unreachable target); ``over``
    replaces top-level keys."""
    cfg = {
        "data": {"root": str(root), "image_size": [64, 80], "normalize": "standardize",
                 "cache_dir": str(cache_dir)},
        "per_worker_batch": 8,
        "schedule": {"piecewise": "0.01;1;0.03", "warmup_epochs": 0.5},
        "max_epochs": 12,
        "target_accuracy": 0.99,
        "intra_op_threads": 1,
        "inter_op_threads": 1,
        **over,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path
