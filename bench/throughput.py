"""Training throughput against this machine's matmul FLOP bound, fp32 and bf16, in one run.

    .venv/bin/python -m bench.throughput [--quick] [--workdir bench-work]

1. The bound: the best sustained ``tf.matmul`` FLOP/s (fp32 and bf16, all cores) of this run.
2. FLOPs per image: analytical (:mod:`explorer.mcnn.flops`), checked against TF's profiler.
3. End-to-end training images/s of the real job (``python -m explorer.mcnn.train``: shards →
   tf.data → M-CNN → SGD) at 1024×1280 and at the demo size 64×80, one process, all cores.
4. achieved ÷ bound, where achieved = images/s × training FLOPs per image; and end-to-end ÷
   model-only images/s (the same train step on an in-memory batch), the input pipeline's cost.

``--quick`` (CI smoke): small matmul, demo size only, two short epochs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.common import (
    emit,
    machine,
    median_rate,
    run_job,
    synth_tree,
    table,
    verdict,
)
from explorer.mcnn.flops import mcnn_flops
from explorer.mcnn.model import build_mcnn
from mcnn_base.cpu import has_bf16, isa_flags
from mcnn_base.native_logs import filter_native_info

TARGETS = {"float32": 0.90, "mixed_bfloat16": 0.75}  # at 1024x1280 (issue 5)


def matmul_bound(dtype: str, n: int, seconds: float) -> float:
    """Best sustained FLOP/s of an ``n × n`` matmul in ``dtype`` (after warm-up)."""
    import tensorflow as tf

    tf_dtype = tf.float32 if dtype == "float32" else tf.bfloat16
    a = tf.cast(tf.random.uniform((n, n), seed=1), tf_dtype)
    b = tf.cast(tf.random.uniform((n, n), seed=2), tf_dtype)
    mm = tf.function(tf.linalg.matmul)
    for _ in range(3):
        mm(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(3):
            mm(a, b)  # eager CPU ops run synchronously
        best = max(best, 3 * 2.0 * n**3 / (time.perf_counter() - t0))
    return best


def profiler_forward_flops(height: int, width: int) -> float:
    """Forward FLOPs per image as TF's profiler counts them on the traced graph."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    model = build_mcnn((height, width), 13)
    fwd = tf.function(lambda x: model(x, training=False), autograph=False)
    graph = fwd.get_concrete_function(tf.TensorSpec([1, height, width, 3], tf.float32)).graph
    opts = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return float(model_analyzer.profile(graph=graph, options=opts).total_float_ops)


def model_only_rate(height: int, width: int, batch: int, precision: str, steps: int, *,
                    jit_compile: bool = False) -> float:
    """Images/s of the same train step on an in-memory batch: no input pipeline at all
    (``jit_compile``: the step compiled by XLA)."""
    import tensorflow as tf

    model = build_mcnn((height, width), 13, precision=precision, seed=0)
    opt = tf.keras.optimizers.SGD(0.01, momentum=0.9)
    x = tf.random.uniform((batch, height, width, 3), seed=3)
    y = tf.zeros((batch,), tf.int32)

    @tf.function(jit_compile=jit_compile)
    def step() -> Any:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    for _ in range(2):
        step().numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        step().numpy()
    return steps * batch / (time.perf_counter() - t0)


def _config(root: Path, size: tuple[int, int], batch: int, precision: str, epochs: float,
            threads: int, cache: Path) -> dict[str, Any]:
    return {"data": {"root": str(root), "image_size": list(size), "cache_dir": str(cache),
                     "normalize": "standardize"},
            "per_worker_batch": batch, "eval": False, "max_epochs": epochs,
            "precision": precision, "intra_op_threads": threads, "inter_op_threads": 1,
            "comm": "local", "seed": 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (about a minute)")
    parser.add_argument("--workdir", default="bench-work", help="data, shards and job folders")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cores = len(os.sched_getaffinity(0))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    work = Path(args.workdir).resolve()
    n, secs = (1024, 2.0) if args.quick else (4096, 10.0)
    bound = {p: matmul_bound("float32" if p == "float32" else "bfloat16", n, secs)
             for p in ("float32", "mixed_bfloat16")}
    sizes = [(64, 80)] if args.quick else [(1024, 1280), (64, 80)]
    flops_rows, checks = [], {}
    for h, w in sizes:
        analytic = mcnn_flops(h, w)
        prof = profiler_forward_flops(h, w)
        checks[f"{h}x{w}"] = prof / analytic.forward
        flops_rows.append([f"{h}x{w}", analytic.forward / 1e9, prof / 1e9,
                           prof / analytic.forward, analytic.train / 1e9])
    flags = isa_flags()  # read once: bf16 figures on a CPU without bf16 are emulated
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    for h, w in sizes:
        full = (h, w) == (1024, 1280)
        images = 32 if full else (96 if args.quick else 360)
        root = synth_tree(work / f"data-{h}x{w}-{images}", (h, w), images, 1 if full else 5)
        batch, epochs = (4, 3.0) if full else (32, 2.0 if args.quick else 4.0)
        train_flops = mcnn_flops(h, w).train
        for precision in ("float32", "mixed_bfloat16"):
            cfg = _config(root, (h, w), batch, precision, epochs, cores, work / "cache")
            events, _job = run_job(cfg, work / "jobs" / f"{h}x{w}-{precision}", threads=cores)
            rate = median_rate(events)
            bare = model_only_rate(h, w, batch, precision,
                                   steps=(6 if precision == "float32" else 12) if full else 20)
            achieved = rate * train_flops
            ratio = achieved / bound[precision]
            target = TARGETS[precision] if full else None
            emulated = precision != "float32" and flags is not None and not has_bf16(flags)
            rows.append([f"{h}x{w}", precision + (" (emulated)" if emulated else ""), batch,
                         rate, rate / bare, achieved / 1e9,
                         bound[precision] / 1e9, ratio, "-" if target is None else
                         verdict(ratio, target, at_least=True)])
            results.append({"size": f"{h}x{w}", "precision": precision, "batch": batch,
                            "images_per_sec": rate, "model_only_images_per_sec": bare,
                            "pipeline_efficiency": rate / bare, "achieved_flops": achieved,
                            "bound_flops": bound[precision], "ratio": ratio,
                            "emulated_bf16": emulated})
    speedup: dict[str, float] = {}
    for h, w in sizes:
        fp = next(x for x in results if x["size"] == f"{h}x{w}" and x["precision"] == "float32")
        bf = next(x for x in results if x["size"] == f"{h}x{w}" and x["precision"] != "float32")
        speedup[f"{h}x{w}"] = float(bf["images_per_sec"]) / float(fp["images_per_sec"])
    facts = machine()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores, class {facts['machine_class']} "
          f"({' '.join(facts['isa'] or []) or 'no AVX-512'}); {facts['date']}")
    if flags is not None and not has_bf16(flags):
        print("this CPU has no bf16 hardware (no avx512_bf16, no amx_bf16): the bf16 bound and "
              "ratios below are against emulated bf16, which is slower than float32 here")
    print(f"\nmatmul bound ({n}x{n}, best of {secs:g}s): fp32 {bound['float32'] / 1e9:.1f} "
          f"GFLOP/s, bf16 {bound['mixed_bfloat16'] / 1e9:.1f} GFLOP/s\n")
    print(table(["size", "fwd GFLOP (analytic)", "fwd GFLOP (TF profiler)", "profiler/analytic",
                 "train GFLOP/img"], flops_rows))
    print()
    print(table(["size", "precision", "batch", "img/s", "vs model-only", "achieved GFLOP/s",
                 "bound GFLOP/s",
                 "achieved/bound", "target"], rows))
    print("\nbf16 speedup over fp32: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedup.items()))
    emit("throughput", {"machine": facts, "quick": args.quick, "matmul_n": n, "bound": bound,
                        "profiler_over_analytic": checks, "results": results,
                        "bf16_speedup": speedup})
    return 0


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
