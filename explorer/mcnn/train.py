"""Train M-CNN with Horovod until a target accuracy: the job every explorer trial runs.

Launch (2 ranks on this machine, one core and one intra-op thread each)::

    mpirun -np 2 --bind-to core --map-by core --allow-run-as-root \\
        python -m explorer.mcnn.train --config trial.yaml

or without MPI (one process, ``comm: local``)::

    python -m explorer.mcnn.train --config trial.yaml

Reads top to bottom: config → threads → Horovod → shards → model → broadcast → epochs of
(train steps, evaluation) → events. Only rank 0 writes events (any rank may append ``failed``).
Exit codes: 0 done, 2 bad config/data (a damaged shard cache too), 3 NaN/Inf loss, 4 its output
could not be written (disk full, read-only or missing folder: the ``failed`` event may be lost
too), 1 anything else.

TTA (docs/DESIGN.md §3): the clock starts right before the first training batch is read and stops
after the evaluation that first reaches ``target_accuracy``; evaluation time is included.
``startup_s`` runs from the launcher's ``MCNN_LAUNCH_TIME`` (or this process's start) to that point.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from explorer.mcnn.comm import make_comm
from explorer.mcnn.config import FPMATH_ENV, load_config
from explorer.mcnn.ema import WeightAverage, ema_decay
from explorer.mcnn.events import EventWriter
from explorer.mcnn.memory import eval_batch, peak_rss_mib
from explorer.mcnn.model import build_mcnn
from explorer.mcnn.pipeline import train_dataset, val_dataset
from explorer.mcnn.schedule import learning_rate, parse_piecewise
from explorer.mcnn.shards import damaged_message, prepare_shards
from mcnn_base.errors import DataError, UserError, os_error_message
from mcnn_base.native_logs import import_tensorflow

PROCESS_START = time.time()
# Start-up phase marks (absolute seconds), reported relative to the launch in the start event.
PHASES: dict[str, float] = {"python_start": PROCESS_START}

EXIT_OK, EXIT_ERROR, EXIT_USER, EXIT_NAN, EXIT_IO = 0, 1, 2, 3, 4


class NanLoss(RuntimeError):
    pass


def _configure_threads(intra: int, inter: int) -> None:
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def _weight_fingerprint(variables: list[Any]) -> Any:
    """A float64 summary of all weights; identical across ranks iff replicas are in sync."""
    total = np.zeros(3)
    for v in variables:
        a = np.asarray(v, dtype=np.float64).ravel()
        idx = np.arange(a.size, dtype=np.float64) % 9973 + 1
        total += (a.sum(), (a * a).sum(), (a * idx).sum())
    return total


def _inject_fault(cfg: Any, rank: int, step: int) -> float:
    """Testing only: the deliberate faults of ``cfg.fault``; returns a loss multiplier."""
    f = cfg.fault
    if f is None or f.rank != rank or step != f.at_step:
        return 1.0
    if f.kind == "raise":
        raise RuntimeError(f"injected fault on rank {rank} at step {step}")
    if f.kind == "hang":
        while True:
            time.sleep(3600)
    if f.kind == "exit":
        os._exit(9)
    if f.kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return float("nan")


def _checked(batches: Iterable[Any], shards: Any) -> Iterator[Any]:
    """Yield from ``batches``; a damaged or vanished shard file becomes a DataError naming the
    cache and its fix (TensorFlow's DataLossError names neither)."""
    import tensorflow as tf

    try:
        yield from batches
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as exc:
        text = str(exc.message)
        found = re.search(r"corrupted record at \d+", text)
        detail = found.group(0) if found else text.strip().splitlines()[0][:200]
        raise DataError(damaged_message(shards.path, detail)) from None


def _os_failure(exc: OSError) -> tuple[int, str, str]:
    """Exit code, reason and detail of an OSError: the environment's (EXIT_IO) or a bug's."""
    message = os_error_message(exc)
    if message is None:
        return EXIT_ERROR, "exception", "".join(traceback.format_exception(exc)[-6:])
    return EXIT_IO, "io_error", message


def _epochs(step: int, steps_per_epoch: int) -> float:
    """Epochs trained after ``step`` updates: a whole number when it is one (1, not 1.0)."""
    epochs = round(step / steps_per_epoch, 3)
    return int(epochs) if epochs.is_integer() else epochs


def run(cfg: Any, events: Any, comm: Any) -> int:
    import tensorflow as tf

    rank, size = comm.rank, comm.size
    shards = prepare_shards(cfg.data, log=(lambda m: print(m, flush=True)) if rank == 0 else None)
    PHASES["data_ready"] = time.time()
    global_batch = cfg.per_worker_batch * size
    steps_per_epoch = max(1, shards.n_train // global_batch)
    schedule = parse_piecewise(cfg.schedule.piecewise)
    lr_scale = global_batch / cfg.schedule.reference_batch if cfg.schedule.linear_scaling else 1.0

    tf.keras.utils.set_random_seed(cfg.seed + rank)
    model = build_mcnn(cfg.data.model_input_size, len(shards.classes),
                       precision=cfg.precision, seed=cfg.seed)
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.0, momentum=cfg.optimizer.momentum,
                                        nesterov=cfg.optimizer.nesterov)
    optimizer.build(model.trainable_variables)
    # Keras 3 + Horovod: broadcast rank 0's weights and optimizer slots before the first step.
    comm.broadcast_variables(list(model.variables) + list(optimizer.variables))
    kernels = [v for v in model.trainable_variables if "kernel" in v.path]
    # kept without evaluation too: a throughput-only run (layout-first stage 1) then times the
    # same step as the trials it picks a layout for
    average = (WeightAverage(model.trainable_variables,
                             ema_decay(cfg.optimizer.ema_epochs, steps_per_epoch))
               if cfg.optimizer.ema_epochs is not None else None)
    n_classes = len(shards.classes)
    smoothing, decay = cfg.optimizer.label_smoothing, cfg.optimizer.weight_decay

    @tf.function
    def train_step(images: Any, labels: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            onehot = tf.one_hot(labels, n_classes)
            ce = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(
                onehot, logits, from_logits=True, label_smoothing=smoothing))
            loss = ce + decay * tf.add_n([tf.nn.l2_loss(k) for k in kernels])
        grads = tape.gradient(loss, model.trainable_variables)
        reduced = comm.allreduce_mean([loss, *grads])
        optimizer.apply_gradients(zip(reduced[1:], model.trainable_variables, strict=True))
        if average is not None:
            average.fold(optimizer.iterations - 1)  # the update just applied, 0-based
        return reduced[0]

    @tf.function
    def eval_step(images: Any, labels: Any) -> Any:
        pred = tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.float64))

    train_iter = _checked(train_dataset(shards, rank=rank, size=size, batch=cfg.per_worker_batch,
                                        seed=cfg.seed, augment=cfg.data.augment,
                                        normalize=cfg.data.normalize), shards)
    val_ds = val_dataset(shards, rank=rank, size=size, batch=eval_batch(cfg.per_worker_batch,
                                                            cfg.data.model_input_size),
                         augment=cfg.data.augment, normalize=cfg.data.normalize)
    launch = float(os.environ.get("MCNN_LAUNCH_TIME", PROCESS_START))
    hosts = comm.hostname_list()
    PHASES["model_ready"] = time.time()
    clock = time.time()  # TTA clock: first touch of training data follows immediately
    PHASES["clock"] = clock
    startup_s = clock - launch
    events.emit("start", config=cfg.to_dict(), world_size=size, hosts=hosts,
                phases={k: v - launch for k, v in PHASES.items()}, startup_s=startup_s,
                steps_per_epoch=steps_per_epoch, global_batch=global_batch,
                n_train=shards.n_train, n_val=shards.n_val, classes=shards.classes,
                split=shards.split, shards=str(shards.path),
                onednn_fpmath=os.environ.get(FPMATH_ENV))

    max_steps = cfg.max_steps or int(np.ceil(cfg.max_epochs * steps_per_epoch))
    # one period of training between evaluations (one epoch unless eval_every_epochs says)
    period = max(1, round(cfg.eval_every_epochs * steps_per_epoch))
    step, n_eval, best, tta_s, first_step_s = 0, 0, 0.0, None, 0.0
    epoch: float = 0
    last_progress = clock
    reason = "max_epochs" if cfg.max_steps is None else "max_steps"
    while step < max_steps:
        n_eval += 1
        t0, losses = time.time(), []
        for _ in range(min(period, max_steps - step)):
            lr = learning_rate(schedule, step, steps_per_epoch,
                               warmup_epochs=cfg.schedule.warmup_epochs, scale=lr_scale)
            optimizer.learning_rate.assign(lr * _inject_fault(cfg, rank, step))
            images, labels = next(train_iter)
            loss = float(train_step(images, labels))
            if step == 0:
                first_step_s = time.time() - clock
            if not np.isfinite(loss):
                raise NanLoss(f"loss is {loss} at step {step} (lr {lr:g})")
            losses.append(loss)
            step += 1
            if time.time() - last_progress >= cfg.progress_every_s:
                last_progress = time.time()
                events.emit("progress", epoch=_epochs(step, steps_per_epoch), step=step,
                            elapsed_s=last_progress - clock)
        train_s = time.time() - t0
        val_acc, eval_s = None, 0.0
        if cfg.eval:
            t1 = time.time()
            correct = total = 0.0
            with average.swapped() if average is not None else contextlib.nullcontext():
                for images, labels in _checked(val_ds, shards):
                    correct += float(eval_step(images, labels))
                    total += int(labels.shape[0])
            correct, total = comm.allreduce_sum(np.array([correct, total]))
            val_acc, eval_s = correct / max(total, 1.0), time.time() - t1
            best = max(best, val_acc)
        elapsed = time.time() - clock
        epoch = _epochs(step, steps_per_epoch)
        events.emit("epoch", epoch=epoch, eval=n_eval, step=step,
                    images_seen=step * global_batch,
                    train_loss=float(np.mean(losses)), val_accuracy=val_acc,
                    images_per_sec=len(losses) * global_batch / max(train_s, 1e-9),
                    lr=lr, elapsed_s=elapsed, eval_s=eval_s, train_s=train_s,
                    peak_rss_mib=peak_rss_mib(),
                    **({"first_step_s": first_step_s} if n_eval == 1 else {}))
        if cfg.target_accuracy is not None and val_acc is not None \
                and val_acc >= cfg.target_accuracy:
            tta_s = elapsed
            events.emit("target_reached", tta_s=tta_s, startup_s=startup_s,
                        tta_wall_s=startup_s + tta_s, epoch=epoch, step=step,
                        val_accuracy=val_acc)
            reason = "target_reached"
            break
    prints = comm.allgather(_weight_fingerprint(model.trainable_variables))
    divergence = float(np.max(np.abs(prints - prints[0:1])))
    rss = comm.allgather(np.array([peak_rss_mib()]))  # every rank's peak, rank order
    events.emit("done", reason=reason, epochs=epoch, steps=step, best_val_accuracy=best,
                tta_s=tta_s, startup_s=startup_s, elapsed_s=time.time() - clock,
                replica_fingerprints=prints.tolist(), replica_divergence=divergence,
                peak_rss_mib=float(np.max(rss)), rank_peak_rss_mib=rss.ravel().tolist())
    _finish(EXIT_OK, events, comm)  # does not return: skips tearing down TF objects
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.mcnn.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training config (.yaml/.yml/.json)")
    parser.add_argument("--events", help="events JSONL path (overrides the config's)")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER
    events_path = Path(args.events) if args.events else cfg.events
    if cfg.precision == "float32_bf16math":  # read once, when oneDNN loads
        os.environ[FPMATH_ENV] = "BF16"
    else:  # a setting inherited from the shell must not turn float32 into bf16 math unseen
        os.environ.pop(FPMATH_ENV, None)
    import_tensorflow()  # its native INFO lines stay out of the job's log (MCNN_VERBOSE=1 keeps them)
    _configure_threads(cfg.intra_op_threads, cfg.inter_op_threads)
    PHASES["tf_imported"] = time.time()
    comm = make_comm(cfg.comm)
    PHASES["comm_ready"] = time.time()
    events = EventWriter(events_path if comm.rank == 0 else None, rank=comm.rank)
    code, reason = EXIT_OK, ""
    try:
        code = run(cfg, events, comm)
    except NanLoss as exc:
        code, reason, detail = EXIT_NAN, "nan_loss", str(exc)
    except UserError as exc:
        code, reason, detail = EXIT_USER, "bad_input", str(exc)
    except OSError as exc:
        code, reason, detail = _os_failure(exc)
    except BaseException as exc:
        code, reason, detail = EXIT_ERROR, "exception", "".join(
            traceback.format_exception(exc)[-6:])
    if code != EXIT_OK:
        # Every failing rank reports (O_APPEND keeps lines whole). A NaN is seen by every rank
        # (the loss is allreduced), and whichever exits first makes mpirun kill the others, so
        # no single rank can be relied on to get its line out. On a full or read-only disk
        # neither line may get out: the exit code (EXIT_IO) still tells.
        with contextlib.suppress(OSError):
            print(f"rank {comm.rank}: {reason}: {detail}", file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            EventWriter(events_path, rank=comm.rank).emit(
                "failed", reason=reason, detail=detail[-2000:])
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        # Never wait for peers that may be stuck in a collective: mpirun tears the job down on a
        # non-zero exit.
        os._exit(code)
    _finish(code, events, comm)
    return code


def _finish(code: int, events: Any, comm: Any) -> None:
    """Close events, shut Horovod down and exit at once.

    Returning from :func:`run` would first destroy its TensorFlow objects (model, datasets,
    iterators), which took ~0.9 s per trained epoch in bench/overhead (5 s after 6 epochs) and
    saves nothing, so a finished job leaves from inside :func:`run`.
    """
    events.close()
    comm.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
