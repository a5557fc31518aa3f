"""Measured images/s for the rehearsal's validation: every layout this machine holds, at two
image sizes, and the same job across two network-namespace hosts.

    .venv/bin/python -m bench.rehearsal_points [--quick] [--workdir bench-work]

Each point is the real job under ``mpirun`` (Horovod, no evaluation, a few epochs; the median
images/s of the epochs after the first, ``bench.common.median_rate``):

* one host: ranks × threads per rank in {1, 2} × {1, 2} within the cores, at 64×80 (per-rank
  batch 16), 256×320 and the full 1024×1280 (per-rank batch 4; 3 epochs of 48 images), float32,
  and ``mixed_bfloat16`` where the CPU runs bf16 natively;
* two hosts (``devsupport.netns``, needs root): one rank per host, 1 thread each, at 64×80,
  128×160 and 256×320, over the namespaces' veth bridge (TCP), each beside one host running two
  ranks of one thread (the same cores do the same work; only the allreduce's path differs).

Points are appended to ``bench/tables/rehearsal-points.<machine class>.jsonl`` as they finish;
a rerun skips recorded points. ``bench.calibrate`` adds the one-host points to the rehearsal's
calibration, and ``bench.rehearsal_check`` predicts each from the others (one point, or one
whole image size, left out); a fabric fitted to two of the two-host points predicts the others.
Figures are on a synthetic stand-in. ``--quick`` (CI smoke) measures one tiny point into the work folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common import append_jsonl, machine, median_rate, read_jsonl, synth_tree
from devsupport.netns import netns_available, netns_hosts
from explorer.mcnn.events import read_events
from launchers import MpirunLauncher, Resources
from mcnn_base.cpu import has_bf16, isa_flags

__all__ = ["Point", "main", "points"]

TABLES = Path(__file__).resolve().parent / "tables"
BATCH = {(64, 80): 16, (128, 160): 8, (256, 320): 4, (1024, 1280): 4}
IMAGES = {(64, 80): 360, (128, 160): 192, (256, 320): 96, (1024, 1280): 48}
SIZES = ((64, 80), (256, 320), (1024, 1280))  # every layout
FABRIC_SIZES = ((64, 80), (128, 160), (256, 320))  # two hosts, and one host with two ranks


@dataclass(frozen=True)
class Point:
    size: tuple[int, int]
    ranks: int
    threads: int
    precision: str = "float32"
    hosts: int = 1

    @property
    def key(self) -> str:
        return (f"{self.size[0]}x{self.size[1]}-{self.hosts}h-{self.ranks}r{self.threads}t-"
                f"{self.precision}")


def points(cores: int, native_bf16: bool) -> list[Point]:
    """Every point this machine can run (see the module doc)."""
    out = []
    for size in SIZES:
        for ranks in (1, 2):
            for threads in (1, 2):
                if ranks * threads > cores:
                    continue
                out.append(Point(size, ranks, threads))
                if native_bf16:
                    out.append(Point(size, ranks, threads, "mixed_bfloat16"))
    for size in FABRIC_SIZES:
        if Point(size, 2, 1) not in out:
            out.append(Point(size, 2, 1))
        out.append(Point(size, 1, 1, hosts=2))
    return out


def _config(root: Path, p: Point, cache: Path, epochs: float) -> dict[str, Any]:
    return {"data": {"root": str(root), "image_size": list(p.size), "cache_dir": str(cache),
                     "normalize": "standardize"},
            "per_worker_batch": BATCH[p.size], "eval": False, "max_epochs": epochs,
            "precision": p.precision, "intra_op_threads": p.threads, "inter_op_threads": 1,
            "comm": "horovod", "seed": 0}


def measure(p: Point, work: Path, epochs: float) -> dict[str, Any]:
    """Run the job at ``p``; its median images/s."""
    moas = 3 if IMAGES[p.size] < 60 else 5  # the generator fills 24 images per class: 48 give 2
    root = synth_tree(work / f"data-{p.size[0]}x{p.size[1]}-{IMAGES[p.size]}-m{moas}", p.size,
                      IMAGES[p.size], moas)
    jobdir = work / "jobs" / f"rehearsal-{p.key}"
    jobdir.mkdir(parents=True, exist_ok=True)
    cfg = jobdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(root, p, work / "cache", epochs), sort_keys=False))
    with contextlib.ExitStack() as stack:
        hosts: tuple[str, ...] = ("localhost",)
        mca: dict[str, str] = {}
        if p.hosts > 1:
            net = stack.enter_context(netns_hosts(p.hosts))
            hosts, mca = net.hosts, dict(net.mca)
        resources = Resources(hosts=hosts, ranks_per_node=p.ranks, threads_per_rank=p.threads,
                              binding="none", mca=mca, timeout_s=1800.0,
                              env={"MCNN_CACHE_DIR": str(work / "cache")})
        job = MpirunLauncher().launch(cfg.resolve(), resources, workdir=jobdir)
        job.wait(1900.0)
        events = read_events(job.events_path) if job.events_path else []
        if job.returncode != 0:
            raise RuntimeError(f"point {p.key} failed ({job.state.value}):\n{job.log_tail(20)}")
    start = next(e for e in events if e.get("event") == "start")
    return {"key": p.key, "size": list(p.size), "ranks": p.ranks, "threads": p.threads,
            "precision": p.precision, "hosts": p.hosts, "per_rank_batch": BATCH[p.size],
            "images_per_sec": median_rate(events), "world_size": int(start["world_size"]),
            "epochs": sum(e.get("event") == "epoch" for e in events),
            "load_average": os.getloadavg()[0], "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (one tiny point)")
    parser.add_argument("--workdir", default="bench-work")
    args = parser.parse_args(argv)
    work = Path(args.workdir).resolve()
    facts = machine()
    flags = isa_flags()
    todo = ([Point((64, 80), 1, 1)] if args.quick
            else points(int(facts["cores"]), flags is not None and has_bf16(flags)))
    why = netns_available()
    if why is not None:
        print(f"skipping the two-host points: {why}")
        todo = [p for p in todo if p.hosts == 1]
    path = (work / "rehearsal-points-quick.jsonl" if args.quick
            else TABLES / f"rehearsal-points.{facts['machine_class']}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = {r["key"]: r for r in read_jsonl(path)}
    for p in todo:
        if p.key in recorded:
            continue
        record = measure(p, work, 2.0 if args.quick else 3.0 if p.size == (1024, 1280) else 4.0)
        append_jsonl(path, record)
        recorded[p.key] = record
        print(f"{p.key}: {record['images_per_sec']:.1f} images/s", flush=True)
    print(f"{len(todo)} points in {path} ({facts['machine_class']}, {facts['cpu']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
