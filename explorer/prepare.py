"""Data preparation before a study's first trial: the shard cache, built once in a child process.

The driver never imports TensorFlow, and no trial's start-up pays for preprocessing: ``mcnn-explore
data prepare --json`` builds (or verifies) the cache and prints a one-line summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from explorer.mcnn.config import config_from_dict
from mcnn_base.errors import DataError

__all__ = ["prepare_shards"]


def prepare_shards(base: dict[str, Any], *, source: Path, data_root: Path, workdir: Path,
                   timeout_s: float, log: Callable[[str], None]) -> int:
    """Build the shard cache of ``base`` (a training-config dict); return the training-image count.

    Raises:
        ConfigError: ``base`` is not a valid config (checked in-process first: fail fast).
        DataError: preparation failed or took over ``timeout_s``.
    """
    config_from_dict(base, f"base of {source}")
    workdir.mkdir(parents=True, exist_ok=True)
    base_path = workdir / "base_config.yaml"
    # atomically: another driver of a shared study may be writing the same file
    partial = base_path.with_name(f".base_config.{os.getpid()}.yaml")
    partial.write_text(yaml.safe_dump(base, sort_keys=False))
    os.replace(partial, base_path)
    log(f"preparing shards for {data_root} ...")
    argv = [sys.executable, "-m", "explorer.cli", "data", "prepare", "--config", str(base_path),
            "--json"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,  # noqa: S603 - argv list
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"preparing shards of {data_root} took over {timeout_s:g}s") from None
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        detail = errors[-1][len("error: "):] if errors else proc.stderr.strip()[-1500:]
        raise DataError(f"cannot prepare the data of {data_root}: {detail}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"shards ready: {summary['n_train']} train / {summary['n_val']} val images, "
        f"{len(summary['classes'])} classes ({summary['split']})")
    return int(summary["n_train"])
