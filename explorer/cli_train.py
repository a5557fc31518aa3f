"""``mcnn-explore train``: run one training config through a launcher and report TTA."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from explorer.errors import ConfigError
from explorer.mcnn.events import EventTail

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


def _train(args: argparse.Namespace) -> int:
    from explorer.mcnn.config import load_config
    from launchers import JobState, LocalLauncher, MpirunLauncher, Resources

    load_config(args.config)  # fail fast, before any process starts
    if args.np is None:
        args.np = 1 if args.local else 2
    if args.local and args.np != 1:
        raise ConfigError(f"--local runs one process; got --np {args.np}")
    if args.np < 1 or args.threads < 1:
        raise ConfigError(f"--np and --threads must be >= 1, got {args.np=} {args.threads=}")
    workdir = Path(args.workdir or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}")
    resources = Resources(ranks_per_node=args.np, threads_per_rank=args.threads,
                          binding=args.binding, oversubscribe=args.oversubscribe,
                          timeout_s=args.timeout)
    launcher = LocalLauncher() if args.local else MpirunLauncher()
    job = launcher.launch(Path(args.config).resolve(), resources, workdir=workdir)
    print(f"launched: {' '.join(job.argv)}\nlog: {job.log_path}", flush=True)
    try:
        events = follow(job, _print_event)
    except KeyboardInterrupt:
        job.cancel()
        raise
    done = [e for e in events if e.get("event") == "done"]
    epochs = [e for e in events if e.get("event") == "epoch"]
    if job.state is not JobState.COMPLETED or not done:
        print(f"job ended {job.state.value} (exit {job.returncode}); log tail:\n"
              f"{job.log_tail(15)}")
        return 1
    d = done[0]
    rate = sorted(e["images_per_sec"] for e in epochs[1:] or epochs)
    median_rate = rate[len(rate) // 2] if rate else float("nan")
    tta = "not reached" if d.get("tta_s") is None else f"{d['tta_s']:.1f}s"
    print(f"done ({d['reason']}): TTA {tta}, best val accuracy "
          f"{d['best_val_accuracy']:.3f}, {median_rate:.1f} images/s (median epoch), "
          f"startup {d['startup_s']:.1f}s, replica divergence {d['replica_divergence']:g}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("train", help="run one training config (mpirun + Horovod by default)")
    p.add_argument("--config", required=True, help="training config .yaml/.json")
    p.add_argument("--np", type=int, default=None,
                   help="ranks on this machine (default 2; 1 with --local)")
    p.add_argument("--threads", type=int, default=1, help="cores/threads per rank (default 1)")
    p.add_argument("--binding", choices=("none", "core", "socket"), default="core")
    p.add_argument("--oversubscribe", action="store_true")
    p.add_argument("--local", action="store_true", help="one process, no MPI")
    p.add_argument("--timeout", type=float, default=None, help="seconds before the job is ended")
    p.add_argument("--workdir", help="where events, log and argv go (default runs/train-TIME)")
    p.set_defaults(func=_train)
