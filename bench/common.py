"""Shared benchmark plumbing: machine facts, synthetic trees, running the real job, output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from explorer.mcnn.events import finite, read_events
from explorer.mcnn.synth import SynthOptions, synthesize
from explorer.record import median_images_per_sec
from launchers import Job, LocalLauncher, MpirunLauncher, Resources
from mcnn_base.cpu import cpu_model, isa_flags, machine_class

__all__ = ["append_jsonl", "emit", "machine", "median_rate", "read_jsonl", "run_job",
           "synth_tree", "table"]


def machine() -> dict[str, Any]:
    """The machine a figure holds for: CPU model, cores, ISA flags and class, date."""
    flags = isa_flags()
    model = cpu_model()
    if model == "unknown":
        model = platform.processor() or "unknown"
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)),
            "isa": None if flags is None else list(flags),
            "machine_class": machine_class(flags),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def synth_tree(root: Path, size: tuple[int, int], images: int, moas: int) -> Path:
    """A synthetic BBBC021-layout tree, written once and reused."""
    if not (root / "BBBC021_v1_image.csv").is_file():
        synthesize(root, SynthOptions(size=size, images=images, moas=moas, seed=0))
    return root


def run_job(config: dict[str, Any], workdir: Path, *, ranks: int = 1, threads: int = 1,
            binding: str = "none", mpi: bool = False, env: dict[str, str] | None = None,
            timeout_s: float = 1800.0) -> tuple[list[dict[str, Any]], Job]:
    """Run the real training job once; return its events and the finished Job."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    resources = Resources(ranks_per_node=ranks, threads_per_rank=threads, binding=binding,
                          env=env or {}, timeout_s=timeout_s)
    launcher = MpirunLauncher() if mpi else LocalLauncher()
    job = launcher.launch(cfg_path.resolve(), resources, workdir=workdir)
    job.wait(timeout_s + 60)
    events = read_events(job.events_path) if job.events_path else []
    if job.returncode != 0:
        raise RuntimeError(f"benchmark job failed ({job.state.value}); log tail:\n"
                           f"{job.log_tail(20)}")
    return events, job


def median_rate(events: Sequence[dict[str, Any]], skip_first: bool = True) -> float:
    """Median training images/s over epochs (the first, with graph tracing, skipped)."""
    rates = [float(e["images_per_sec"]) for e in events if e.get("event") == "epoch"]
    rate = median_images_per_sec(rates) if skip_first else (
        statistics.median(rates) if rates else None)
    if rate is None:
        raise RuntimeError("the job reported no epoch")
    return rate


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(value: float, limit: float, *, at_least: bool = False) -> str:
    """A target cell: "<= 0.50 met" / ">= 0.90 NOT met"."""
    met = value >= limit if at_least else value <= limit
    return f"{'>=' if at_least else '<='} {limit:.2f} " + ("met" if met else "NOT met")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def emit(name: str, data: dict[str, Any]) -> None:
    """The machine-readable result: one line of strict JSON (a figure that is NaN or infinite,
    such as the TTA of a config that missed its target, is null), prefixed so it can be
    grepped."""
    line = json.dumps(finite({"bench": name, **data}, infinity=None), sort_keys=True,
                      allow_nan=False)
    print("BENCH_JSON " + line, flush=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (none when it does not exist yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as it is measured (what a resumable benchmark skips on a rerun)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(record, sort_keys=True) + "\n")
