"""Layout search quality: the explorer's throughput study against an exhaustive sweep, same run.

    .venv/bin/python -m bench.layout [--quick] [--workdir bench-work] [--seed 0] [--size H W]

1. Exhaustive: every feasible layout of ``search_spaces/layout_demo.yaml`` (ranks × threads ×
   binding × inter-op × precision on this node) is run once as the real mpirun job; its steady
   images/s (median of epochs after the first) and node-seconds are recorded, one line each in
   ``sweep.jsonl`` of the work directory, so an interrupted sweep resumes where it stopped (rows
   of this grid and machine class only; ``--fresh`` measures all again).
   ``--size H W`` runs the same sweep at a larger image size (say 512 640 or 1024 1280): the
   space's image size becomes H×W, on a tree of 60 synthetic H×W images, 4 images per rank per
   step, and binding none/core only (one socket here, so socket binding adds nothing).
2. Explorer: ``study launch --objective images_per_sec`` on the same space with a budget of ⅓ of
   the feasible layouts (TPE); compute = the study's node-seconds, infeasible samples cost none.
3. Baselines: naive ``mpirun -np 2 python -m explorer.mcnn.train`` (Open MPI's default mapping
   and binding, TF's default threads) and one process with TF defaults, fp32.

Reported: best-found ÷ exhaustive-best (the exhaustive sweep's measurement of the layout the study
picked, so both sides come from one measurement) and compute ÷ exhaustive compute; the best layout's
speedup over both baselines.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    append_jsonl,
    emit,
    machine,
    median_rate,
    read_jsonl,
    synth_tree,
    table,
    verdict,
)
from explorer.cli_study import quiet_libraries
from explorer.driver import StudyDriver
from explorer.mcnn.config import config_from_dict
from explorer.mcnn.events import read_events
from explorer.mcnn.shards import prepare_shards
from explorer.progress import ProgressLine
from explorer.study import StudySettings, best_trial, spent_node_s
from launchers import MpirunLauncher
from launchers.base import Job
from launchers.hosts import detect_local
from mcnn_base.native_logs import filter_native_info
from search_spaces.plan import build_plan, deep_merge
from search_spaces.space import SearchSpace, load_space

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "layout_demo.yaml"


def _key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params[k] for k in ("ranks_per_node", "threads_per_rank", "binding",
                                     "inter_op_threads", "precision"))


def _run(argv: list[str], env: dict[str, str], workdir: Path) -> tuple[float, float]:
    """Run one job argv; return (steady images/s, wall seconds)."""
    job = Job(argv, env=env, log_path=workdir / "job.log", events_path=workdir / "events.jsonl",
              timeout_s=900)
    job.wait(960)
    if job.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{job.log_tail(15)}")
    return median_rate(read_events(workdir / "events.jsonl")), time.time() - job.started


def exhaustive(space: SearchSpace, data: Path, work: Path, grid: dict[str, list[Any]],
               n_train: int) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every feasible layout of ``grid``, measured once; resumes from ``work/sweep.jsonl`` (its
    rows of this grid and this machine class: the sweep is one machine's)."""
    record = work / "sweep.jsonl"
    here = machine()["machine_class"]
    keys = {tuple(v) for v in itertools.product(*grid.values())}
    results = {_key(r["params"]): r for r in read_jsonl(record)
               if r.get("machine_class") == here and _key(r["params"]) in keys}
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        if _key(params) in results:
            continue
        plan = build_plan(space, params, data_root=data, n_train=n_train, hosts=[detect_local()],
                          overrides={"eval": False, "target_accuracy": None})  # as the study
        if not plan.feasible:
            continue
        wd = work / "exhaustive" / "-".join(str(v) for v in values)
        wd.mkdir(parents=True, exist_ok=True)
        cfg = wd / "config.yaml"
        cfg.write_text(yaml.safe_dump(plan.config))
        assert plan.resources is not None
        job = MpirunLauncher().launch(cfg.resolve(), plan.resources, workdir=wd)
        job.wait(960)
        if job.returncode != 0:
            raise RuntimeError(f"layout {params} failed:\n{job.log_tail(15)}")
        row = {"params": params,
               "images_per_sec": median_rate(read_events(wd / "events.jsonl")),
               "node_s": time.time() - job.started, "machine_class": here,
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        append_jsonl(record, row)
        results[_key(params)] = row
    return results


def space_variant(work: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The layout space as ``edit`` changes it, written to ``work/space.yaml``."""
    doc = yaml.safe_load(SPACE.read_text())
    edit(doc)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def sized_space(work: Path, size: tuple[int, int]) -> Path:
    """The layout space at image size ``size`` (see the module doc), written under ``work``."""
    def edit(doc: dict[str, Any]) -> None:
        doc["name"] = f"layout_{size[0]}x{size[1]}"
        doc["base"]["per_worker_batch"] = 4
        doc["base"]["data"]["image_size"] = list(size)
        doc["dimensions"]["binding"] = {"choices": ["none", "core"]}
    return space_variant(work, edit)


def quick_space(work: Path) -> Path:
    """The CI smoke run's space: a 4-layout grid, 2 epochs."""
    def edit(doc: dict[str, Any]) -> None:
        doc["base"]["max_epochs"] = 2
        doc["base"]["per_worker_batch"] = 8
        doc["dimensions"] = {"ranks_per_node": {"choices": [1, 2]},
                             "threads_per_rank": {"choices": [1]},
                             "binding": {"choices": ["none", "core"]}}
    return space_variant(work, edit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (a 4-layout grid)")
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true",
                        help="measure every layout again instead of resuming the recorded sweep")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="sweep at this image size, with the sized settings of the module doc "
                        "(4 images per rank, 60 images, binding none/core)")
    args = parser.parse_args(argv)
    if args.quick and args.size:
        parser.error("--quick runs at 64×80; drop --size")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_libraries()
    size: tuple[int, int] = (args.size[0], args.size[1]) if args.size else (64, 80)
    suffix = "-quick" if args.quick else (f"-{size[0]}x{size[1]}" if args.size else "")
    work = Path(args.workdir).resolve() / f"layout{suffix}"
    images = 96 if args.quick else (60 if args.size else 360)
    data = synth_tree(Path(args.workdir).resolve() / f"data-{size[0]}x{size[1]}-{images}", size,
                      images, 5)
    space_path = (quick_space(work) if args.quick else
                  sized_space(work, size) if args.size else SPACE)
    if args.quick or args.fresh:  # a smoke run measures afresh; a full sweep resumes
        (work / "sweep.jsonl").unlink(missing_ok=True)
    space = load_space(space_path)
    grid = {name: list(dim.choices) for name, dim in space.dimensions.items()}
    for name, default in (("inter_op_threads", 1), ("precision", "float32"),
                          ("threads_per_rank", 1)):
        grid.setdefault(name, [default])
    grid = {k: grid[k] for k in ("ranks_per_node", "threads_per_rank", "binding",
                                 "inter_op_threads", "precision")}
    # n_train of the split the jobs use (shards are built once, by the first job)
    base = config_from_dict(deep_merge(space.base, {"data": {"root": str(data)}}))
    n_train = prepare_shards(base.data).n_train

    t0 = time.time()
    sweep = exhaustive(space, data, work, grid, n_train)
    sweep_s = time.time() - t0
    sweep_node_s = sum(r["node_s"] for r in sweep.values())
    best_key = max(sweep, key=lambda k: sweep[k]["images_per_sec"])
    best_rate = sweep[best_key]["images_per_sec"]

    budget = max(2, math.ceil(len(sweep) / 3))
    storage = f"sqlite:///{work / 'optuna.db'}"
    for f in ("optuna.db", "mlflow.db"):
        (work / f).unlink(missing_ok=True)
    settings = StudySettings(space=space_path, data_root=data, study="layout", storage=storage,
                             tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                             workdir=work / "study", hosts=[detect_local()], trials=budget,
                             sampler="tpe", pruner="none", seed=args.seed,
                             objective="images_per_sec")
    study = StudyDriver(settings, MpirunLauncher(),
                        progress=ProgressLine(budget, stream=open(os.devnull, "w"))).run()  # noqa: SIM115
    found = best_trial(study)
    assert found is not None
    found_key = _key({**{k: v[0] for k, v in grid.items()}, **found.params})
    study_node_s = spent_node_s(study)

    # baselines: Open MPI and TF defaults, fp32
    cfg = dict(space.base, data={**space.base.get("data", {}), "root": str(data)},
               eval=False, intra_op_threads=0, inter_op_threads=0, precision="float32")
    base_dir = work / "baselines"
    base_dir.mkdir(parents=True, exist_ok=True)
    (base_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    train = [sys.executable, "-m", "explorer.mcnn.train", "--config",
             str(base_dir / "config.yaml"), "--events"]
    naive_dir, single_dir = base_dir / "naive-mpirun", base_dir / "single"
    for d in (naive_dir, single_dir):
        d.mkdir(exist_ok=True)
        (d / "events.jsonl").unlink(missing_ok=True)
    root_flag = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    naive, _ = _run(["mpirun", "-np", "2", *root_flag, *train, str(naive_dir / "events.jsonl")],
                    {}, naive_dir)
    single, _ = _run([*train, str(single_dir / "events.jsonl")], {},
                     single_dir)

    found_rate = sweep[found_key]["images_per_sec"]
    quality = found_rate / best_rate
    compute = study_node_s / sweep_node_s
    rows = [[", ".join(f"{k}={r['params'][k]}" for k in grid), r["images_per_sec"],
             r["node_s"]] for r in sorted(sweep.values(), key=lambda r: -r["images_per_sec"])]
    facts = machine()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores, {facts['machine_class']}; "
          f"{facts['date']}; images {size[0]}×{size[1]} (synthetic stand-in)")
    print(table(["layout (exhaustive sweep)", "img/s", "node-s"], rows))
    print(f"\nexhaustive: {len(sweep)} feasible layouts, {sweep_node_s:.0f} node-s "
          f"({sweep_s:.0f} s of wall time in this run; rows resumed from sweep.jsonl cost none)")
    print(f"explorer (TPE, {budget} trials, seed {args.seed}): picked "
          f"{dict(zip(grid, found_key, strict=True))}, {study_node_s:.0f} node-s")
    print(table(["figure", "value", "target"], [
        ["best-found / exhaustive-best", quality, verdict(quality, 0.95, at_least=True)],
        ["compute / exhaustive compute", compute, verdict(compute, 1 / 3 + 1e-9)],
        ["best layout / naive mpirun -np 2", best_rate / naive, "-"],
        ["best layout / one process, TF defaults", best_rate / single, "-"],
    ]))
    emit("layout", {"machine": facts, "quick": args.quick, "size": list(size),
                    "layouts": len(sweep),
                    "exhaustive_best": dict(zip(grid, best_key, strict=True)),
                    "exhaustive_best_images_per_sec": best_rate,
                    "found": dict(zip(grid, found_key, strict=True)),
                    "found_images_per_sec_in_sweep": found_rate,
                    "found_images_per_sec_in_study": found.values[0],
                    "quality": quality, "compute_ratio": compute, "budget": budget,
                    "naive_mpirun_images_per_sec": naive, "single_images_per_sec": single,
                    "speedup_vs_naive": best_rate / naive, "speedup_vs_single": best_rate / single})
    return 0


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
