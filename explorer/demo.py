"""``mcnn-explore demo``: the embedded default, end to end on this machine.

Writes a small synthetic BBBC021-layout tree (once), a training config next to it, and trains
M-CNN on it with ``mpirun -np 2`` + Horovod until the target accuracy, printing TTA and images/s.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

__all__ = ["add_commands", "demo_config"]


def demo_config(data_root: Path, workdir: Path, target: float) -> dict[str, Any]:
    return {
        "data": {"root": str(data_root.resolve()), "image_size": [64, 80],
                 "normalize": "standardize", "cache_dir": str((workdir / "cache").resolve())},
        "per_worker_batch": 8,
        "schedule": {"piecewise": "0.01;1;0.03;8;0.01", "warmup_epochs": 0.5},
        "max_epochs": 20,
        "target_accuracy": target,
        "intra_op_threads": 1,
        "inter_op_threads": 1,
        "seed": 0,
    }


def _demo(args: argparse.Namespace) -> int:
    from explorer import cli_train
    from explorer.mcnn.synth import SynthOptions, synthesize

    workdir = Path(args.workdir)
    data = workdir / "data"
    if not (data / "BBBC021_v1_image.csv").is_file():
        print(f"writing synthetic BBBC021 tree to {data} ...", flush=True)
        synthesize(data, SynthOptions(size=(64, 80), images=args.images, moas=args.moas))
    config = workdir / "demo_train.yaml"
    config.write_text(yaml.safe_dump(demo_config(data, workdir, args.target), sort_keys=False))
    print(f"config: {config}", flush=True)
    ns = argparse.Namespace(config=str(config), np=2, threads=1, binding="core",
                            oversubscribe=False, local=False, timeout=args.timeout,
                            workdir=str(workdir / "run"))
    return cli_train._train(ns)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("demo", help="synthesize data and train on it with mpirun -np 2")
    p.add_argument("--workdir", default="demo", help="folder for data, config and run")
    p.add_argument("--images", type=int, default=360)
    p.add_argument("--moas", type=int, default=5, help="MoA classes besides DMSO")
    p.add_argument("--target", type=float, default=0.45, help="target validation accuracy")
    p.add_argument("--timeout", type=float, default=900.0)
    p.set_defaults(func=_demo)
