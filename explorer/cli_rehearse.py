"""``mcnn-explore rehearse``: run a whole study against the calibrated trial model, on a pool of
simulated hosts, before spending cluster time.

The study is a real one (same space file, sampler, pruner, feasibility rules, strategy,
concurrency, Optuna storage and MLflow runs, tagged ``mcnn.simulated``); only the launcher and
the clock are simulated (:mod:`explorer.rehearsal.sim`). It ends with the predicted best config,
its TTA and images/s with their uncertainty and extrapolations, and the node-hours the sweep
would cost.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path
from typing import Any

import optuna

from explorer.cli_study import absolute_sqlite, quiet_libraries, write_study_report
from explorer.driver import StudyDriver
from explorer.progress import ProgressLine, duration
from explorer.record import records
from explorer.rehearsal.model import Calibration, TrialModel, load_calibration
from explorer.rehearsal.profiles import FABRICS, HOSTS, HostProfile, fabric, host_profile
from explorer.rehearsal.sim import EventClock, SimLauncher
from explorer.study import MEMORY, PRUNERS, StudySettings, best_record, spent_node_s
from mcnn_base.cpu import isa_flags, machine_class
from mcnn_base.errors import ConfigError
from mcnn_base.urls import mask_url

__all__ = ["add_commands", "default_calibration"]

CALIBRATIONS = "calibrations"


def default_calibration() -> tuple[Path, bool]:
    """The packaged calibration of this machine's class (else the first one) and whether it is
    of this class."""
    folder = Path(str(resources.files("explorer.rehearsal") / CALIBRATIONS))
    found = sorted(folder.glob("*.json"))
    if not found:
        raise ConfigError(f"no calibration in {folder}; make one with python -m bench.calibrate "
                          "and pass --calibration")
    here = machine_class(isa_flags())
    own = [p for p in found if p.stem.endswith(f".{here}")]
    return (own or found)[0], bool(own)


def _local_profile(cal: Calibration, cores: int | None) -> HostProfile:
    """The calibration machine itself, as a simulated host."""
    isa = {"amx": ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile"),
           "avx512-bf16": ("avx512f", "avx512_bf16"), "avx512": ("avx512f",)}.get(
        cal.machine_class, ())
    cores_used = max(int(p["ranks"]) * int(p["threads"]) for p in cal.compute)
    return HostProfile(cal.machine_class, cores or cores_used, 1, isa, 24.0,
                       cal.fp32_gflops_per_core, None,
                       f"the calibration machine ({cal.cpu}, measured matmul bound)")


def _check_new(storage: str, study: str) -> None:
    """A rehearsal writes a new study: refuse a name ``storage`` already holds (one line)."""
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as exc:  # any storage error: the user's URL
        raise ConfigError(f"--storage {mask_url(storage)}: cannot open it "
                          f"({str(exc).splitlines()[0][:200]})") from None
    if study in names:
        raise ConfigError(f"--study {study!r} already exists in {mask_url(storage)}: a "
                          "rehearsal writes a new study; pick another name")


def _rehearse(args: argparse.Namespace) -> int:
    started = time.monotonic()
    for flag in ("nodes", "trials", "images", "val_images"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    if args.epochs_scale <= 0:
        raise ConfigError(f"--epochs-scale must be > 0, got {args.epochs_scale}")
    if args.calibration:
        cal_path, own = Path(args.calibration), True
    else:
        cal_path, own = default_calibration()
    cal = load_calibration(cal_path)
    if args.host_profile == "local":
        host = _local_profile(cal, args.cores_per_node)
    else:
        host = host_profile(args.host_profile)
        if args.cores_per_node:
            host = HostProfile(host.name, args.cores_per_node, host.sockets, host.isa,
                               host.memory_gib, host.fp32_gflops_per_core,
                               host.bf16_gflops_per_core, host.note)
    net = fabric(args.fabric)
    model = TrialModel(cal, host, net, epochs_scale=args.epochs_scale)
    clock = EventClock()
    launcher = SimLauncher(model, clock, n_train=args.images, n_val=args.val_images,
                           num_classes=cal.num_classes)
    workdir = Path(args.workdir or Path("runs") / args.study).resolve()
    storage = absolute_sqlite(args.storage)
    _check_new(storage, args.study)
    settings = StudySettings(
        space=Path(args.space), data_root=Path("/simulated/bbbc021"), study=args.study,
        storage=MEMORY, tracking_uri=absolute_sqlite(args.tracking_uri),
        workdir=workdir, hosts=[host.host(i) for i in range(args.nodes)], trials=args.trials,
        target_accuracy=args.target_accuracy, sampler=args.sampler, pruner=args.pruner,
        seed=args.seed, concurrent_trials=args.concurrent_trials, stall_timeout_s=None,
        baseline=args.baseline, strategy=args.strategy,
        allow_emulated_bf16=args.allow_emulated_bf16, simulated=True,
        budget_node_s=None if args.budget_node_hours is None else args.budget_node_hours * 3600)
    quiet_libraries()
    print(f"rehearsal {args.study!r}: {args.nodes} × {host.name} ({host.cores} cores; "
          f"{host.note}), fabric {net.name} ({net.note}); calibration {cal.name} "
          f"({cal_path}{'' if own else ', of another machine class'}); {args.images} training "
          f"images; simulated, not measured", flush=True)

    def prepare(base: dict[str, Any], s: StudySettings, log: Any) -> int:
        return int(args.images)

    driver = StudyDriver(settings, launcher, progress=ProgressLine(args.trials), clock=clock,
                         prepare=prepare, node_probe=None)
    study = driver.run()
    # the loop ran on an in-memory storage (simulated hours are thousands of quick writes);
    # the finished study goes to --storage in one copy
    optuna.copy_study(from_study_name=args.study, from_storage=study._storage,
                      to_storage=storage, to_study_name=args.study)
    print()
    trials = records(study)
    best = best_record(study)
    sweep_s = clock.now() - driver.started
    node_h = spent_node_s(study) / 3600
    states = [r.state.value for r in trials]
    print(f"sweep: {states.count('COMPLETED')} trials completed, {states.count('PRUNED')} "
          f"pruned, {states.count('FAILED')} failed ({states.count('INFEASIBLE')} infeasible "
          f"samples never launched); {node_h:,.1f} node-hours, {duration(sweep_s)} on the "
          f"simulated cluster; rehearsed in {time.monotonic() - started:.1f} s")
    report = write_study_report(study, settings)
    if report is not None:
        print(f"report: {report} (simulated)")
    if best is None or best.tta_s is None:
        print("predicted best: no trial reached the target")
        return 0
    workdir_of = (best.job or {}).get("workdir")
    pred = launcher.predictions.get(str(workdir_of)) if workdir_of else None
    print(f"predicted best: trial {best.number}, TTA {best.tta_s:.0f} s "
          f"({best.tta_s / 60:.1f} min) in its simulated run (seed noise included), "
          f"{best.median_images_per_sec or 0.0:.1f} img/s")
    for key, value in sorted(best.params.items()):
        print(f"  {key} = {value}")
    d = best.derived
    print(f"  -> global batch {d.get('global_batch')}, world size {d.get('world_size')}, "
          f"{d.get('updates_per_epoch')} updates per epoch")
    if pred is not None:
        print(f"  model (expected): {pred.describe()}")
        print(f"  step {pred.step_s * 1e3:.0f} ms = compute {pred.compute_s * 1e3:.0f} ms + "
              f"allreduce not hidden {pred.comm_s * 1e3:.0f} ms")
    return 0


def add_commands(sub: Any) -> None:
    r = sub.add_parser("rehearse", help="rehearse a study on simulated hosts (calibrated model)")
    r.add_argument("--space", required=True, help="search space YAML")
    r.add_argument("--nodes", type=int, default=128, help="simulated nodes in the pool")
    r.add_argument("--host-profile", default="local", choices=["local", *sorted(HOSTS)],
                   help="the simulated node (default: the calibration machine)")
    r.add_argument("--cores-per-node", type=int, default=None)
    r.add_argument("--fabric", default="opa100", choices=sorted(FABRICS))
    r.add_argument("--calibration", default=None,
                   help="calibration JSON (default: the packaged one of this machine class)")
    r.add_argument("--images", type=int, default=313_282,
                   help="training images (default: the seed's augmented BBBC021, 313,282)")
    r.add_argument("--val-images", type=int, default=35_306)
    r.add_argument("--epochs-scale", type=float, default=1.0,
                   help="multiply the calibrated epochs-to-target (a real data set needs more)")
    r.add_argument("--study", default="rehearsal")
    r.add_argument("--storage", default="sqlite:///rehearsal.db")
    r.add_argument("--tracking-uri", default="sqlite:///rehearsal-mlflow.db")
    r.add_argument("--workdir", default=None)
    r.add_argument("--trials", type=int, default=50)
    r.add_argument("--target-accuracy", type=float, default=None)
    r.add_argument("--sampler", default="tpe", choices=["tpe", "gp", "random"])
    r.add_argument("--pruner", default="sh", choices=list(PRUNERS))
    r.add_argument("--strategy", default="joint", choices=["joint", "layout-first"])
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--concurrent-trials", type=int, default=None)
    r.add_argument("--budget-node-hours", type=float, default=None)
    r.add_argument("--baseline", default=None)
    r.add_argument("--allow-emulated-bf16", action="store_true")
    r.set_defaults(func=_rehearse)
