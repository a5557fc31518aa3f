"""Where a full-size M-CNN train step spends its oneDNN time: kernels chosen and their shares.

    .venv/bin/python -m bench.onednn [--quick] [--batch 4] [--size 1024x1280] [--steps 3]
        [--precision float32|mixed_bfloat16|float32_bf16math]

Runs the model-only train step (``bench.throughput.model_only_rate``) in a child process with
``ONEDNN_VERBOSE=1`` and sums the ``exec`` lines by primitive, implementation, pass, data type and
channels/height, per step. Verbose mode slows the step, so read shares, not absolute times.
``float32_bf16math`` is the fp32 step with ``ONEDNN_DEFAULT_FPMATH_MODE=BF16``, as the job runs
that precision: the table shows which kernels oneDNN then picks.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
from collections.abc import Iterable

from bench.common import emit, machine, table
from explorer.mcnn.config import FPMATH_ENV
from mcnn_base.native_logs import filter_native_info

Key = tuple[str, str, str, str, str]


def parse(lines: Iterable[str]) -> dict[Key, tuple[float, int]]:
    """(kind, implementation, pass, dtype, "icXocY@H") → (total ms, calls) over ``exec`` lines;
    a primitive whose attributes set a math mode (``attr-fpmath:bf16``) has it in its dtype."""
    total: dict[Key, float] = collections.defaultdict(float)
    calls: collections.Counter[Key] = collections.Counter()
    for line in lines:
        f = line.strip().split(",")
        if len(f) < 10 or f[0] != "onednn_verbose" or f[2:4] != ["primitive", "exec"]:
            continue
        md = f[8].split()
        dtype = md[0].split(":")[1] if md and ":" in md[0] else "-"
        fpmath = re.search(r"attr-fpmath:(\w+)", f[9])  # the math mode, when not the data type's
        if fpmath:
            dtype += f" (math {fpmath[1]})"
        shape = re.search(r"ic(\d+)oc(\d+)_ih(\d+)", f[-2])
        where = f"ic{shape[1]}oc{shape[2]}@{shape[3]}" if shape else "-"
        key = (f[5], f[6] or "-", f[7], dtype, where)
        total[key] += float(f[-1])
        calls[key] += 1
    return {k: (v, calls[k]) for k, v in total.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="mixed_bfloat16",
                        choices=["float32", "mixed_bfloat16", "float32_bf16math"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", default="1024x1280", help="HEIGHTxWIDTH")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 64x80, one step")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.steps = "64x80", 1
    try:
        h, w = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected HEIGHTxWIDTH, e.g. 1024x1280")
    code = ("import sys; from bench.throughput import model_only_rate; "
            "model_only_rate(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], "
            "int(sys.argv[5]))")
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(FPMATH_ENV, None)
    step_precision = args.precision
    if args.precision == "float32_bf16math":  # fp32 tensors, oneDNN's math in bf16
        env[FPMATH_ENV], step_precision = "BF16", "float32"
    proc = subprocess.run(  # noqa: S603 - fixed argv, validated values
        [sys.executable, "-c", code, str(h), str(w), str(args.batch), step_precision,
         str(args.steps)], env=env, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return proc.returncode
    found = parse(proc.stdout.splitlines())
    steps = args.steps + 2  # model_only_rate warms up with two steps
    grand = sum(ms for ms, _ in found.values())
    top = sorted(found.items(), key=lambda kv: -kv[1][0])[:args.top]
    rows = [[f"{100 * ms / grand:.1f}%", ms / steps, n // steps, *key] for key, (ms, n) in top]
    facts = machine()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores; {facts['date']}; {h}x{w}, "
          f"batch {args.batch}, {args.precision}; primitive time {grand / steps:.0f} ms/step")
    print(table(["share", "ms/step", "calls/step", "primitive", "implementation", "pass", "dtype",
                 "channels@height"], rows))
    emit("onednn", {"machine": facts, "quick": args.quick, "size": [h, w], "batch": args.batch,
                    "precision": args.precision, "ms_per_step": grand / steps,
                    "top": [{"share": ms / grand, "key": list(key), "calls": n}
                            for key, (ms, n) in top]})
    return 0


if __name__ == "__main__":
    with filter_native_info():  # TensorFlow's native INFO lines (MCNN_VERBOSE=1 keeps them)
        code = main()
    raise SystemExit(code)
