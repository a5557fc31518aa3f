"""The calibrated trial model: images/s and TTA of a training config on N simulated nodes.

Three parts, each fitted to measured runs held in a :class:`Calibration` (a JSON file: this
machine's recorded table of real trials, ``bench/tables``, made into one by ``bench.calibrate``):

* **compute**: a node's efficiency (achieved train FLOP/s ÷ its cores' matmul bound in the
  run's precision) as a log-linear function of ranks per node, threads per rank and per-rank
  batch. When the calibration holds more than one image size, log(ranks) and log(threads) are
  also multiplied by the log of the analytic train FLOPs per image (:mod:`explorer.mcnn.flops`):
  one thread runs near the bound at every measured size, and more threads and ranks pay off on
  bigger images. bf16 points, when the calibration has two or more and its bf16 bound, add an
  offset and (over two or more sizes) their own size slope. A term the points cannot determine
  is left out. Least squares over the calibration's measured points; outside their range, the
  efficiency at the range's edge (FLOP-scaled to the size asked). A simulated host runs at that
  efficiency of *its* matmul bound (:mod:`explorer.rehearsal.profiles`);
* **communication** between nodes: one ring allreduce of the fp32 gradients per step
  (:func:`~explorer.rehearsal.profiles.ring_allreduce_s`), half of it hidden behind the backward
  pass (Horovod overlaps a gradient's allreduce with the rest of backprop); ranks of one node
  communicate inside the measured compute;
* **convergence**: log epochs-to-target = a + γ·log(global batch) + κ·(log(LR ÷ global batch) −
  μ)² + ω·warm-up epochs, least squares over the calibration's runs that reached the target
  (μ by a grid search); a config whose epochs exceed its ``max_epochs`` misses.

Every :class:`Prediction` carries the calibration's name, a leave-one-out uncertainty (the SD of
the log residuals of each part) and the list of ways it is extrapolated beyond the calibration
(threads, ranks, batch, image size, global batch, host, precision).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explorer.mcnn.flops import mcnn_flops, mcnn_params
from explorer.mcnn.schedule import parse_piecewise
from explorer.rehearsal.profiles import Fabric, HostProfile, ring_allreduce_s
from mcnn_base.errors import ConfigError

__all__ = ["Calibration", "Prediction", "TrialModel", "load_calibration"]

OVERLAP = 0.5  # share of the backward pass (2/3 of a step) that hides the allreduce
EMULATED_BF16_SLOWDOWN = 2.7  # bf16 without bf16 hardware: measured on an AVX-512F-only Xeon


@dataclass(frozen=True)
class Calibration:
    """Measured runs the model is fitted to (see the module doc)."""

    name: str
    machine_class: str
    cpu: str
    fp32_gflops_per_core: float  # the calibration machine's measured matmul bound per core
    compute: list[dict[str, Any]]  # image_size, ranks, threads, per_rank_batch, images_per_sec
    convergence: list[dict[str, Any]]  # global_batch, peak_lr, warmup_epochs, epochs (None: missed)
    target: float
    max_epochs: float
    startup_s: float
    num_classes: int
    note: str = ""
    bf16_gflops_per_core: float | None = None  # measured where the CPU runs bf16 natively

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Calibration:
        try:
            return cls(str(doc["name"]), str(doc["machine_class"]), str(doc["cpu"]),
                       float(doc["fp32_gflops_per_core"]), list(doc["compute"]),
                       list(doc["convergence"]), float(doc["target"]),
                       float(doc["max_epochs"]), float(doc["startup_s"]),
                       int(doc["num_classes"]), str(doc.get("note", "")),
                       None if doc.get("bf16_gflops_per_core") is None
                       else float(doc["bf16_gflops_per_core"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"calibration {doc.get('name', '?')!r}: missing or invalid "
                              f"field {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_calibration(path: Path) -> Calibration:
    """Read a calibration file (one-line errors)."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--calibration {str(path)!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--calibration {str(path)!r}:{exc.lineno}: invalid JSON: "
                          f"{exc.msg}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--calibration {str(path)!r}: expected a JSON object")
    return Calibration.from_dict(doc)


@dataclass(frozen=True)
class Prediction:
    """What one config would do (see the module doc)."""

    images_per_sec: float  # the whole job's training images/s
    step_s: float
    compute_s: float  # per step
    comm_s: float  # per step, the part not hidden
    epochs_to_target: float | None  # None: misses within max_epochs
    epoch_s: float  # training plus one evaluation's share
    eval_s: float  # one evaluation
    startup_s: float
    tta_s: float | None
    sigma_rate: float  # leave-one-out SD of log images/s
    sigma_epochs: float  # leave-one-out SD of log epochs-to-target
    extrapolated: list[str] = field(default_factory=list)
    calibration: str = ""

    def describe(self) -> str:
        tta = "misses" if self.tta_s is None else (
            f"{self.tta_s:.0f} s (×/÷ {math.exp(math.hypot(self.sigma_rate, self.sigma_epochs)):.2f})")
        extra = f"; extrapolated: {', '.join(self.extrapolated)}" if self.extrapolated else ""
        return (f"{self.images_per_sec:.1f} img/s (×/÷ {math.exp(self.sigma_rate):.2f}), TTA "
                f"{tta}{extra} [calibration {self.calibration}]")


def _lstsq_loo(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares coefficients and the leave-one-out SD of the residuals (0 if too few)."""
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    n, k = x.shape
    if n <= k:
        return coef, 0.0
    res = []
    for i in range(n):
        keep = np.arange(n) != i
        c = np.linalg.lstsq(x[keep], y[keep], rcond=None)[0]
        res.append(float(y[i] - x[i] @ c))
    return coef, float(np.sqrt(np.mean(np.square(res))))


def _gflops(point: dict[str, Any], num_classes: int) -> float:
    """Train GFLOPs per image at a compute point's image size."""
    h, w = point["image_size"]
    return mcnn_flops(int(h), int(w), num_classes).train / 1e9


def _config_facts(config: dict[str, Any]) -> dict[str, Any]:
    layout = config.get("layout") or {}
    data = config.get("data") or {}
    crop = (data.get("augment") or {}).get("random_crop")
    size = tuple(crop or data.get("image_size") or (1024, 1280))
    schedule = config.get("schedule") or {}
    pw = parse_piecewise(str(schedule.get("piecewise", "0.01")))
    ranks = int(layout.get("ranks_per_node", 1))
    nodes = max(1, len(layout.get("hosts") or ["localhost"]))
    batch = int(config.get("per_worker_batch", 8))
    gb = batch * ranks * nodes
    peak = max(pw.lrs)
    if schedule.get("linear_scaling"):
        peak *= gb / float(schedule.get("reference_batch", 256))
    return {"size": (int(size[0]), int(size[1])), "ranks": ranks, "nodes": nodes,
            "threads": int(layout.get("threads_per_rank", 1)), "batch": batch,
            "global_batch": gb, "peak_lr": peak,
            "warmup": float(schedule.get("warmup_epochs", 0.0)),
            "precision": str(config.get("precision", "float32")),
            "max_epochs": float(config.get("max_epochs", 20.0)),
            "eval_every": float(config.get("eval_every_epochs", 1.0)),
            "target": config.get("target_accuracy")}


class TrialModel:
    """The fitted model of one calibration, for one host profile and fabric."""

    def __init__(self, cal: Calibration, host: HostProfile, net: Fabric, *,
                 epochs_scale: float = 1.0) -> None:
        self.cal, self.host, self.net, self.epochs_scale = cal, host, net, epochs_scale
        fp32 = [p for p in cal.compute if p.get("precision", "float32") == "float32"]
        if len(fp32) < 2:
            raise ConfigError(f"calibration {cal.name!r}: needs at least 2 fp32 compute points")
        bf16 = ([p for p in cal.compute if p.get("precision") == "mixed_bfloat16"]
                if cal.bf16_gflops_per_core else [])  # rated against the bf16 bound
        self.lg0 = float(np.mean([math.log(_gflops(p, cal.num_classes)) for p in fp32]))
        if len(bf16) < 2:
            bf16 = []
        points = fp32 + bf16
        ys = []
        for p in points:
            bound = cal.bf16_gflops_per_core if p in bf16 else cal.fp32_gflops_per_core
            assert bound is not None
            cores = int(p["ranks"]) * int(p["threads"])
            ys.append(math.log(float(p["images_per_sec"]) * _gflops(p, cal.num_classes)
                               / (cores * bound)))
        # the richest set of optional terms the points determine: each needs its own spread
        # (a size term needs ranks or threads measured at more than one size, a bf16 slope bf16
        # points at more than one size); a term the data cannot fix is left out, not guessed
        self.size_term = self.bf16_fit = self.bf16_size_term = False
        base = np.linalg.matrix_rank(np.array([self._row(p, bf16) for p in points]))
        for terms in ((True, True, True), (True, True, False), (False, True, True),
                      (False, True, False), (True, False, False), (False, False, False)):
            if not bf16 and terms[1]:
                continue
            self.size_term, self.bf16_fit, self.bf16_size_term = terms
            x = np.array([self._row(p, bf16) for p in points])
            if np.linalg.matrix_rank(x) - base == x.shape[1] - 4:
                break
        if not self.bf16_fit:  # (bf16 points always add their offset; kept for safety)
            ys = ys[:len(fp32)]
            points, bf16 = fp32, []
        rows = [self._row(p, bf16) for p in points]
        self.c_coef, self.sigma_rate = _lstsq_loo(np.array(rows), np.array(ys))
        self.c_range = {k: (min(int(p[k]) for p in points), max(int(p[k]) for p in points))
                        for k in ("ranks", "threads", "per_rank_batch")}
        self.gflops_range = {prec: (min(_gflops(p, cal.num_classes) for p in pts),
                                    max(_gflops(p, cal.num_classes) for p in pts))
                             for prec, pts in (("float32", fp32), ("mixed_bfloat16", bf16))
                             if pts}
        self.sizes = {prec: sorted({(int(p["image_size"][0]), int(p["image_size"][1]))
                                    for p in pts}, key=lambda hw: hw[0] * hw[1])
                      for prec, pts in (("float32", fp32), ("mixed_bfloat16", bf16)) if pts}
        reached = [p for p in cal.convergence if p.get("epochs") is not None]
        if len(reached) < 5:
            raise ConfigError(f"calibration {cal.name!r}: needs at least 5 runs that reached "
                              "the target to fit convergence")
        self.mu, self.e_coef, self.sigma_epochs = self._fit_convergence(reached)
        self.gb_range = (min(int(p["global_batch"]) for p in reached),
                         max(int(p["global_batch"]) for p in reached))

    def _row(self, p: dict[str, Any], bf16: list[dict[str, Any]]) -> list[float]:
        return self._compute_row(int(p["ranks"]), int(p["threads"]), int(p["per_rank_batch"]),
                                 _gflops(p, self.cal.num_classes), p in bf16)

    def _compute_row(self, ranks: int, threads: int, batch: int, gflops: float,
                     bf16: bool) -> list[float]:
        row = [1.0, math.log(ranks), math.log(threads), math.log(batch)]
        lg = math.log(gflops) - self.lg0  # centred on the fp32 points' mean
        if self.size_term:  # bigger images: more threads and ranks pay off (one thread runs
            row += [lg * math.log(ranks), lg * math.log(threads)]  # near the bound at any size)
        if self.bf16_fit:
            row.append(float(bf16))
            if self.bf16_size_term:
                row.append(float(bf16) * lg)
        return row

    @staticmethod
    def _conv_row(p: dict[str, Any], mu: float) -> list[float]:
        gb = float(p["global_batch"])
        return [1.0, math.log(gb), (math.log(float(p["peak_lr"]) / gb) - mu) ** 2,
                float(p.get("warmup_epochs", 0.0))]

    def _fit_convergence(self, pts: list[dict[str, Any]]) -> tuple[float, np.ndarray, float]:
        ys = np.array([math.log(float(p["epochs"])) for p in pts])
        logs = [math.log(float(p["peak_lr"]) / float(p["global_batch"])) for p in pts]
        best: tuple[float, float, np.ndarray, float] | None = None
        for mu in np.linspace(min(logs) - 1.0, max(logs) + 1.0, 81):
            x = np.array([self._conv_row(p, float(mu)) for p in pts])
            coef = np.linalg.lstsq(x, ys, rcond=None)[0]
            sse = float(np.sum(np.square(ys - x @ coef)))
            if coef[2] >= 0 and (best is None or sse < best[0]):  # a bowl, not a cap
                best = (sse, float(mu), coef, 0.0)
        if best is None:
            raise ConfigError(f"calibration {self.cal.name!r}: epochs to target do not rise "
                              "away from any LR; cannot fit convergence")
        _, mu, _, _ = best
        coef, sigma = _lstsq_loo(np.array([self._conv_row(p, mu) for p in pts]), ys)
        return mu, coef, sigma

    # -- predictions ----------------------------------------------------------------------
    def node_rate(self, ranks: int, threads: int, batch: int, size: tuple[int, int],
                  precision: str) -> tuple[float, list[str]]:
        """Training images/s of one node's ranks (no inter-node communication)."""
        flags, at = [], {}
        for key, value in (("ranks", ranks), ("threads", threads), ("per_rank_batch", batch)):
            lo, hi = self.c_range[key]
            at[key] = min(max(value, lo), hi)  # beyond the range: its edge's efficiency
            if not lo <= value <= hi:
                flags.append(f"{key.replace('_', ' ')} {value} (calibrated {lo}–{hi})")
        flops = mcnn_flops(size[0], size[1], self.cal.num_classes).train / 1e9
        if self.host.name != self.cal.machine_class:
            flags.append(f"host {self.host.name} (calibrated on {self.cal.cpu}; scaled by "
                         "matmul speed)")
        if precision == "float32_bf16math":
            flags.append("float32_bf16math rated as float32 (no calibration of bf16 math)")
        bf16 = precision == "mixed_bfloat16"
        fitted_bf16 = bf16 and self.bf16_fit and self.host.bf16_gflops_per_core is not None
        f_lo, f_hi = self.gflops_range["mixed_bfloat16" if fitted_bf16 else "float32"]
        at_flops = min(max(flops, f_lo), f_hi)  # beyond the calibrated sizes: the edge's
        if not f_lo <= flops <= f_hi:  # efficiency
            sizes = ", ".join(f"{h}×{w}" for h, w in self.sizes[
                "mixed_bfloat16" if fitted_bf16 else "float32"])
            flags.append(f"image size {size[0]}×{size[1]} (calibrated {sizes}; efficiency of "
                         "the nearest calibrated size, FLOP-scaled)")
        eff = math.exp(float(np.array(self._compute_row(
            at["ranks"], at["threads"], at["per_rank_batch"], at_flops, fitted_bf16))
            @ self.c_coef))
        gflops = self.host.fp32_gflops_per_core
        if bf16 and self.host.bf16_gflops_per_core is None:
            gflops /= EMULATED_BF16_SLOWDOWN
            flags.append("bf16 emulated on a host without bf16 hardware")
        elif fitted_bf16:
            assert self.host.bf16_gflops_per_core is not None
            gflops = self.host.bf16_gflops_per_core
        elif bf16:
            assert self.host.bf16_gflops_per_core is not None
            gflops = self.host.bf16_gflops_per_core * 0.5  # low-channel convs: half-speed
            flags.append("bf16 (uncalibrated: half the bf16 matmul bound)")
        return eff * ranks * threads * gflops / flops, flags

    def epochs(self, gb: int, peak_lr: float, warmup: float) -> tuple[float, list[str]]:
        flags = []
        lo, hi = self.gb_range
        if not lo <= gb <= hi:
            flags.append(f"global batch {gb} (calibrated {lo}–{hi})")
        row = np.array(self._conv_row({"global_batch": gb, "peak_lr": peak_lr,
                                       "warmup_epochs": warmup}, self.mu))
        return math.exp(float(row @ self.e_coef)) * self.epochs_scale, flags

    def predict(self, config: dict[str, Any], n_train: int, n_val: int) -> Prediction:
        f = _config_facts(config)
        rate, flags = self.node_rate(f["ranks"], f["threads"], f["batch"], f["size"],
                                     f["precision"])
        compute = f["batch"] * f["ranks"] / rate  # seconds per step on one node
        nbytes = 4.0 * mcnn_params(f["size"][0], f["size"][1], self.cal.num_classes)
        world = f["ranks"] * f["nodes"]
        comm = 0.0
        if f["nodes"] > 1:
            comm = max(0.0, ring_allreduce_s(world, nbytes, self.net)
                       - OVERLAP * 2.0 / 3.0 * compute)
        step = compute + comm
        steps = max(1, n_train // f["global_batch"])
        images_per_sec = f["global_batch"] / step
        eval_s = n_val / (3.0 * rate * f["nodes"])  # a forward pass is a third of a step
        epoch_s = steps * step + eval_s / f["eval_every"]
        epochs, cflags = self.epochs(f["global_batch"], f["peak_lr"], f["warmup"])
        reached = epochs if epochs <= f["max_epochs"] else None
        tta = None
        if reached is not None:  # to the first evaluation at or after it
            evals = math.ceil(reached / f["eval_every"] - 1e-9)
            e = evals * f["eval_every"]
            tta = e * steps * step + evals * eval_s
        startup = self.cal.startup_s + (2.0 * math.log2(f["nodes"]) if f["nodes"] > 1 else 0.0)
        return Prediction(images_per_sec, step, compute, comm, reached, epoch_s, eval_s, startup,
                          tta, self.sigma_rate, self.sigma_epochs, flags + cflags,
                          self.cal.name)
