"""``mcnn-explore train``: run one training config through a launcher and report TTA."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from explorer.cli_study import absolute_sqlite, quiet_libraries
from explorer.mcnn.config import TrainConfig, load_config
from explorer.mcnn.events import EventTail
from explorer.outcome import outcome_from_events
from explorer.record import median_images_per_sec
from explorer.schema import schema_lock
from explorer.tracking import RunRecorder, Tracker
from launchers import Job, JobState, LocalLauncher, MpirunLauncher, Resources
from mcnn_base.errors import ConfigError
from mcnn_base.urls import mask_url

__all__ = ["add_commands", "follow"]


def follow(job: Any, on_event: Any = None, interval: float = 0.5) -> list[dict[str, Any]]:
    """Tail ``job``'s events until it ends; call ``on_event(event)`` for each. Return them all."""
    tail = EventTail(job.events_path)
    seen: list[dict[str, Any]] = []
    while True:
        finished = job.poll().finished
        for event in tail.poll():
            seen.append(event)
            if on_event is not None:
                on_event(event)
        if finished:
            return seen
        time.sleep(interval)


def _print_event(event: dict[str, Any]) -> None:
    kind = event.get("event")
    if kind == "start":
        print(f"start: world size {event['world_size']} on {sorted(set(event['hosts']))}, "
              f"{event['n_train']} train / {event['n_val']} val images ({event['split']}), "
              f"{event['steps_per_epoch']} steps/epoch, startup {event['startup_s']:.1f}s",
              flush=True)
    elif kind == "epoch":
        acc = event.get("val_accuracy")
        acc_s = "-" if acc is None else f"{acc:.3f}"
        print(f"epoch {event['epoch']:>3}  loss {event['train_loss']:.4f}  val_acc {acc_s}  "
              f"{event['images_per_sec']:.1f} img/s  lr {event['lr']:.4g}  "
              f"t {event['elapsed_s']:.1f}s", flush=True)
    elif kind == "target_reached":
        print(f"target reached: tta {event['tta_s']:.1f}s (+ startup {event['startup_s']:.1f}s"
              f" = {event['tta_wall_s']:.1f}s wall)", flush=True)
    elif kind == "failed":
        print(f"FAILED on rank {event.get('rank')}: {event.get('reason')}: "
              f"{str(event.get('detail', ''))[-300:]}", flush=True)


def _resources(args: argparse.Namespace, cfg: TrainConfig) -> Resources:
    """Flags win; otherwise the config's ``layout`` (an exported best trial); otherwise defaults."""
    layout = cfg.layout
    if args.local:
        if args.np not in (None, 1):
            raise ConfigError(f"--local runs one process; got --np {args.np}")
        args.np = 1
    np_ = args.np if args.np is not None else (layout.ranks_per_node if layout else 2)
    threads = args.threads if args.threads is not None else (
        layout.threads_per_rank if layout else 1)
    binding = args.binding or (layout.binding if layout else "core")
    if np_ < 1 or threads < 1:
        raise ConfigError(f"--np and --threads must be >= 1, got --np {np_} --threads {threads}")
    hosts = layout.hosts if layout and args.np is None else ("localhost",)
    env = dict(layout.env) if layout else {}
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return Resources(hosts=hosts, ranks_per_node=np_, threads_per_rank=threads, binding=binding,
                     env=env, oversubscribe=args.oversubscribe, timeout_s=args.timeout)


def _record(args: argparse.Namespace, cfg: TrainConfig, job: Job,
            resources: Resources) -> RunRecorder | None:
    """Open the MLflow run of this replay (None with --no-mlflow)."""
    if args.no_mlflow:
        return None
    quiet_libraries()
    uri = absolute_sqlite(args.tracking_uri)
    with schema_lock([("--tracking-uri", uri)]):
        tracker = Tracker(uri, args.experiment, artifact_root=Path("mlartifacts"))
    run = tracker.run(Path(args.config).stem, {"mcnn.config": Path(args.config).resolve()})
    run.log_params({
        "config": str(Path(args.config).resolve()), "per_worker_batch": cfg.per_worker_batch,
        "piecewise": cfg.schedule.piecewise, "warmup_epochs": cfg.schedule.warmup_epochs,
        "linear_scaling": cfg.schedule.linear_scaling, "precision": cfg.precision,
        "world_size": resources.world_size, "ranks_per_node": resources.ranks_per_node,
        "threads_per_rank": resources.threads_per_rank, "binding": resources.binding,
        "hosts": ",".join(resources.hosts),
        "global_batch": cfg.per_worker_batch * resources.world_size,
    })
    run.log_text(" ".join(job.argv) + "\n", "argv.txt")
    print(f"MLflow run {run.run_id} in experiment {args.experiment!r} ({mask_url(uri)})",
          flush=True)
    return run


def _train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # fail fast, before any process starts
    resources = _resources(args, cfg)
    workdir = Path(args.workdir or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}")
    launcher = LocalLauncher() if args.local else MpirunLauncher()
    job = launcher.launch(Path(args.config).resolve(), resources, workdir=workdir)
    print(f"launched: {' '.join(job.argv)}\nlog: {job.log_path}", flush=True)
    run = _record(args, cfg, job, resources)

    def on_event(event: dict[str, Any]) -> None:
        _print_event(event)
        if run is not None and event.get("event") == "epoch":
            run.log_epoch(event)

    try:
        events = follow(job, on_event)
    except BaseException:
        job.cancel()
        if run is not None:
            run.end_status("KILLED", state="CANCELLED")
        raise
    outcome = outcome_from_events(events, job.state, job.returncode, pruned=False,
                                  nodes=resources.nodes, wall_s=time.time() - job.started)
    if run is not None:
        run.log_metrics(outcome.final_metrics())
        run.set_tags({"reason": outcome.reason})
        run.log_text(job.log_tail(60), "log_tail.txt")
        run.log_files([Path(args.config), *([job.events_path] if job.events_path else [])])
        run.end(outcome.state)
    done = [e for e in events if e.get("event") == "done"]
    epochs = [e for e in events if e.get("event") == "epoch"]
    if job.state is not JobState.COMPLETED or not done:
        print(f"job ended {job.state.value} (exit {job.returncode}): {outcome.reason}; "
              f"log tail:\n{job.log_tail(15)}")
        return 1
    d = done[0]
    rate = median_images_per_sec([float(e["images_per_sec"]) for e in epochs])
    median_rate = float("nan") if rate is None else rate
    tta = "not reached" if d.get("tta_s") is None else f"{d['tta_s']:.1f}s"
    print(f"done ({d['reason']}): TTA {tta}, best val accuracy "
          f"{d['best_val_accuracy']:.3f}, {median_rate:.1f} images/s (median epoch), "
          f"startup {d['startup_s']:.1f}s, replica divergence {d['replica_divergence']:g}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("train", help="run one training config (mpirun + Horovod by default)")
    p.add_argument("--config", required=True, help="training config .yaml/.json")
    p.add_argument("--np", type=int, default=None,
                   help="ranks on this machine (default: the config's layout, else 2; 1 with "
                        "--local)")
    p.add_argument("--threads", type=int, default=None,
                   help="cores/threads per rank (default: the config's layout, else 1)")
    p.add_argument("--binding", choices=("none", "core", "socket"), default=None,
                   help="default: the config's layout, else core")
    p.add_argument("--oversubscribe", action="store_true")
    p.add_argument("--local", action="store_true", help="one process, no MPI")
    p.add_argument("--timeout", type=float, default=None, help="seconds before the job is ended")
    p.add_argument("--workdir", help="where events, log and argv go (default runs/train-TIME)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db",
                   help="MLflow tracking URI the run is recorded in (default sqlite:///mlflow.db)")
    p.add_argument("--experiment", default="mcnn-train", help="MLflow experiment (default "
                   "mcnn-train)")
    p.add_argument("--no-mlflow", action="store_true", help="do not record an MLflow run")
    p.set_defaults(func=_train)
