"""Full-size (1024×1280) train-step speed of candidate changes, each a ratio to the same run's
baseline and to the same run's matmul bound.

    .venv/bin/python -m bench.fullsize [--quick] [--rounds 2] [--steps 5] [--workdir bench-work]

Every variant is the model-only train step (``bench.throughput.model_only_rate``: the M-CNN as
specified, SGD with momentum, an in-memory batch) in its own child process, because some
settings (oneDNN's math mode) are read once when TensorFlow loads. Rounds run every variant once
each, in order, so slow drift of the machine hits all of them alike; each variant's figure is its
median over rounds. Each finished child (and the bound, measured once first) is appended to
``WORKDIR/fullsize-<machine class>-<size>.jsonl`` and a rerun skips what is recorded, so a resumed
run compares against the bound and rounds it recorded before (``--fresh`` starts over).

Variants (fp32 unless named): ``base`` (batch 4, intra-op threads = cores, inter-op 1), ``b2``
and ``b8`` (per-process batch), ``xla`` (``jit_compile=True`` on the step), ``inter`` (intra-op 1,
inter-op = cores: the 7 pathways side by side), ``intra+inter`` (both = cores),
``fpmath-bf16`` (fp32 variables and tensors, oneDNN allowed to compute in bf16:
``ONEDNN_DEFAULT_FPMATH_MODE=BF16``; a CPU without bf16 hardware has no faster math to allow, so
there it shows what the setting costs) and ``bf16`` (``mixed_bfloat16``). ``--quick`` (CI smoke)
runs ``base`` and ``fpmath-bf16`` at 64×80 for two steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import append_jsonl, emit, machine, read_jsonl, table
from bench.throughput import matmul_bound, model_only_rate
from explorer.mcnn.config import FPMATH_ENV
from explorer.mcnn.flops import mcnn_flops
from mcnn_base.cpu import has_bf16, isa_flags

__all__ = ["VARIANTS", "Variant", "main"]


@dataclass(frozen=True)
class Variant:
    name: str
    batch: int = 4
    precision: str = "float32"
    xla: bool = False
    intra: int = 0  # 0: the number of cores
    inter: int = 1  # 0: the number of cores
    env: tuple[tuple[str, str], ...] = ()

    @property
    def bf16_math(self) -> bool:
        return self.precision == "mixed_bfloat16" or (FPMATH_ENV, "BF16") in self.env


VARIANTS = [Variant("base"), Variant("b2", batch=2), Variant("b8", batch=8),
            Variant("xla", xla=True), Variant("inter", intra=1, inter=0),
            Variant("intra+inter", inter=0),
            Variant("fpmath-bf16", env=((FPMATH_ENV, "BF16"),)),
            Variant("bf16", precision="mixed_bfloat16")]


def _child(spec: dict[str, Any], size: tuple[int, int], steps: int,
           bound: tuple[int, float]) -> dict[str, float]:
    """Runs in the child: the step's images/s, and the matmul bound when asked."""
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0))
    v = Variant(**{**spec, "env": tuple(tuple(e) for e in spec.get("env", ()))})
    tf.config.threading.set_intra_op_parallelism_threads(v.intra or cores)
    tf.config.threading.set_inter_op_parallelism_threads(v.inter or cores)
    if v.name == "bound":
        return {"fp32_bound": matmul_bound("float32", *bound),
                "bf16_bound": matmul_bound("bfloat16", *bound)}
    t0 = time.perf_counter()
    rate = model_only_rate(size[0], size[1], v.batch, v.precision, steps, jit_compile=v.xla)
    return {"images_per_sec": rate, "child_s": time.perf_counter() - t0}


def _run_child(v: Variant, size: tuple[int, int], steps: int,
               bound: tuple[int, float]) -> dict[str, float]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **dict(v.env)}
    argv = [sys.executable, "-m", "bench.fullsize", "--child", json.dumps(asdict(v)),
            "--size", f"{size[0]}x{size[1]}", "--steps", str(steps),
            "--bound", f"{bound[0]}:{bound[1]:g}"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True,  # noqa: S603 - argv list
                          timeout=1800, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"variant {v.name} failed ({done.returncode}): "
                           f"{done.stderr.strip()[-1500:]}")
    return dict(json.loads(lines[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke run (64x80, two steps)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", default="1024x1280")
    parser.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS],
                        choices=[v.name for v in VARIANTS])
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--fresh", action="store_true", help="ignore what was recorded")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--bound", default="4096:10", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    h, w = (int(x) for x in args.size.split("x"))
    if args.child:
        n, secs = args.bound.split(":")
        print(json.dumps(_child(json.loads(args.child), (h, w), args.steps,
                                (int(n), float(secs)))), flush=True)
        return 0
    facts = machine()
    flags = isa_flags()
    native = flags is not None and has_bf16(flags)
    names = ["base", "fpmath-bf16"] if args.quick else args.variants
    if "base" not in names:
        names = ["base", *names]
    variants = [v for v in VARIANTS if v.name in names]
    (h, w), steps, rounds = ((64, 80), 2, 1) if args.quick else ((h, w), args.steps, args.rounds)
    bound_at = (1024, 2.0) if args.quick else (4096, 10.0)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    path = work / (f"fullsize-{facts['machine_class']}-{h}x{w}"
                   f"{'-quick' if args.quick else ''}.jsonl")
    if args.fresh and path.exists():
        path.unlink()
    done = {(r["variant"], r["round"]): r for r in read_jsonl(path)}
    plan = [(Variant("bound"), 0)] + [(v, k) for k in range(rounds) for v in variants]
    for v, k in plan:
        if (v.name, k) in done:
            continue
        result = {"variant": v.name, "round": k, **_run_child(v, (h, w), steps, bound_at),
                  "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        append_jsonl(path, result)
        done[(v.name, k)] = result
        print(f"{v.name} round {k}: {result}", flush=True)
    bound = done[("bound", 0)]
    flops = mcnn_flops(h, w).train
    rate = {v.name: statistics.median(done[(v.name, k)]["images_per_sec"] for k in range(rounds))
            for v in variants}
    rows, results = [], []
    for v in variants:
        b = bound["bf16_bound"] if v.bf16_math else bound["fp32_bound"]
        emulated = v.bf16_math and not native
        achieved = rate[v.name] * flops
        rows.append([v.name, v.batch, v.precision + (" + bf16 math" if v.env else ""),
                     rate[v.name], rate[v.name] / rate["base"], achieved / 1e9,
                     ("bf16" if v.bf16_math else "fp32") + (" (emulated)" if emulated else ""),
                     achieved / b])
        results.append({"variant": v.name, "images_per_sec": rate[v.name],
                        "vs_base": rate[v.name] / rate["base"], "vs_bound": achieved / b,
                        "bound": "bf16" if v.bf16_math else "fp32", "emulated_bf16": emulated})
    print(f"machine: {facts['cpu']}, {facts['cores']} cores, class {facts['machine_class']} "
          f"({' '.join(facts['isa'] or []) or 'no AVX-512'}); {facts['date']}")
    print(f"{h}x{w}, model-only train step, median of {rounds} round(s) × {steps} steps; bounds "
          f"({bound_at[0]}² matmul, same run): fp32 {bound['fp32_bound'] / 1e9:.1f} GFLOP/s, bf16 "
          f"{bound['bf16_bound'] / 1e9:.1f} GFLOP/s" + ("" if native else " (emulated bf16)"))
    print(table(["variant", "batch", "math", "images/s", "÷ base", "GFLOP/s", "bound",
                 "÷ bound"], rows))
    emit("fullsize", {"size": f"{h}x{w}", "machine": facts, "bounds": bound,
                      "rounds": rounds, "steps": steps, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
