"""``mcnn-explore demo``: the embedded default, end to end on this machine.

Writes a small synthetic BBBC021-layout tree (once) and runs a real small study on it with the
tiny search space: every trial is an ``mpirun`` Horovod M-CNN job, Optuna and MLflow live in
sqlite files under ``--workdir``. It ends by printing the best TTA and its config, the MLflow UI
command and the export command. Run it again and it resumes the same study (already complete:
it just prints the summary); ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from explorer import cli_study
from explorer.mcnn.synth import SynthOptions, synthesize

__all__ = ["add_commands"]

TINY_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml"


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
        print(f"writing synthetic BBBC021 tree to {data} ...", flush=True)
        synthesize(data, SynthOptions(size=(64, 80), images=args.images, moas=args.moas))
    argv = ["--space", str(args.space), "--data", str(data), "--study", "demo",
            "--storage", f"sqlite:///{workdir / 'optuna.db'}",
            "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--trials", str(args.trials), "--target-accuracy", str(args.target),
            "--trial-timeout", str(args.trial_timeout), "--seed", "0",
            "--workdir", str(workdir / "runs")]
    parser = argparse.ArgumentParser(prog="mcnn-explore study")
    cli_study.add_commands(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["study", "launch", *argv])
    return int(ns.func(ns))


def add_commands(sub: Any) -> None:
    p = sub.add_parser("demo", help="synthesize data and run a small real study on it")
    p.add_argument("--workdir", default="demo", help="folder for data, storages and runs")
    p.add_argument("--space", default=str(TINY_SPACE), help="search space (default: tiny.yaml)")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--images", type=int, default=360)
    p.add_argument("--moas", type=int, default=5, help="MoA classes besides DMSO")
    p.add_argument("--target", type=float, default=0.45, help="target validation accuracy")
    p.add_argument("--trial-timeout", type=float, default=300.0)
    p.add_argument("--fresh", action="store_true", help="forget the previous demo study")
    p.set_defaults(func=_demo)
