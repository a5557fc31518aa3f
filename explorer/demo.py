"""``mcnn-explore demo``: the embedded default, end to end on this machine.

Writes the synthetic tree of workload ``demo-v1`` (:mod:`explorer.workloads`, once) and runs a
real small study on it: the seed's hand-tuned run as the baseline trial, then searched trials;
every trial is an ``mpirun`` Horovod M-CNN job, Optuna and MLflow live in sqlite files under
``--workdir``. It ends by printing the best TTA, its speedup over the baseline, its config, the
MLflow UI command and the export command. Run it again and it resumes the same study (already
complete: it just prints the summary); ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from explorer import cli_study
from explorer.workloads import WORKLOADS

__all__ = ["add_commands"]

WORKLOAD = WORKLOADS["demo-v1"]


def _demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    data = workdir / "data"
    if args.fresh:
        for name in ("optuna.db", "mlflow.db", "runs"):
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    if not (data / "BBBC021_v1_image.csv").is_file():
        print(f"writing the synthetic BBBC021 tree of {WORKLOAD.describe()} to {data} ...",
              flush=True)
        WORKLOAD.synthesize(data)
    argv = ["--space", str(args.space), "--data", str(data), "--study", "demo",
            "--storage", f"sqlite:///{workdir / 'optuna.db'}",
            "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--trials", str(args.trials), "--target-accuracy", str(args.target),
            "--trial-timeout", str(args.trial_timeout), "--seed", "0",
            *(["--baseline", args.baseline] if args.baseline != "none" else []),
            "--workdir", str(workdir / "runs")]
    parser = argparse.ArgumentParser(prog="mcnn-explore study")
    cli_study.add_commands(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["study", "launch", *argv])
    return int(ns.func(ns))


def add_commands(sub: Any) -> None:
    p = sub.add_parser("demo", help="synthesize data and run a small real study on it")
    p.add_argument("--workdir", default="demo", help="folder for data, storages and runs")
    p.add_argument("--space", default=str(WORKLOAD.space),
                   help=f"search space (default: {WORKLOAD.space.name})")
    p.add_argument("--trials", type=int, default=5, help="trials, the baseline included")
    p.add_argument("--baseline", default="seed", help="seed (default), a config file, or none")
    p.add_argument("--target", type=float, default=WORKLOAD.target_accuracy,
                   help=f"target validation accuracy (default {WORKLOAD.target_accuracy})")
    p.add_argument("--trial-timeout", type=float, default=300.0)
    p.add_argument("--fresh", action="store_true", help="forget the previous demo study")
    p.set_defaults(func=_demo)
