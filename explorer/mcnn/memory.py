"""Peak resident memory of one training rank: an analytic count, calibrated by measured runs.

A rank's peak RSS is the larger of its training and its evaluation phase, each the sum of

* **runtime**: Python, TensorFlow, oneDNN and Horovod once loaded (a calibrated constant);
* **model state**: weights, gradients, the SGD momentum slot, the allreduced gradients and
  oneDNN's reordered copy of the weights, 4 bytes each per parameter (``mixed_bfloat16`` adds
  the 2-byte cast of the weights, a moving average of the weights adds its 4-byte copy:
  ``optimizer.ema_epochs``), and 64 MiB for Horovod's fusion buffer when there are 2+ ranks
  (see :data:`FUSION_BYTES`: a measured figure, not Horovod's threshold);
* **input pipeline** (:mod:`explorer.mcnn.pipeline`): the in-memory cache of the rank's shard
  when the split is small, else its shuffle buffer of decoded uint8 images (its share of the
  training images, at most 10,000 and 1 GiB; from a cache it shares the cached buffers), and two
  prefetched float32 batches of each pipeline that is running;
* **activations**: for training, every layer output kept for the backward pass plus two
  gradients of the largest layer, per image of the per-rank batch; for evaluation (batch
  :func:`eval_batch`), the tensors alive at once in a forward pass. Elements are counted
  from the model's shapes (:func:`~explorer.mcnn.model.mcnn_spec`), 4 bytes each in float32 and 2
  in ``mixed_bfloat16``, times a calibrated factor for what the count leaves out (oneDNN's blocked
  copies, the pre-activation tensors, allocator slack);
* **workspace**: memory that grows with the image size but not with the batch (oneDNN's
  workspaces and reordered buffers, the allocator's slack), a calibrated number of float32
  input images.

The three calibrated numbers come from peak RSS measured by ``python -m bench.memory``, which
writes :data:`CALIBRATION_FILE` and reports predicted vs measured at held-out points.
"""

from __future__ import annotations

import functools
import json
import math
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explorer.mcnn.flops import mcnn_params
from explorer.mcnn.model import mcnn_spec
from explorer.mcnn.pipeline import IN_MEMORY_BYTES, shuffle_buffer

__all__ = ["CALIBRATION_FILE", "MemoryCalibration", "MemoryEstimate", "activation_elements",
           "default_calibration", "eval_batch", "load_calibration", "peak_rss_mib", "predict_peak"]

CALIBRATION_FILE = Path(__file__).with_name("memory_calibration.json")
MIB = 1024.0**2
GIB = 1024.0**3
# What a rank's fusion buffer adds to its peak RSS. Horovod's default fusion threshold has been
# 128 MiB since 0.21 (horovod PR #2468; this project runs 0.28.1), as the rehearsal's allreduce
# model assumes. As resident memory, 64 MiB fits the one 2-rank point measured (BENCHMARKS §7,
# 256x320: +5.0 % with 64, about +10 % with 128). Why less than the threshold is resident was
# not measured; more 2-rank points would settle it.
FUSION_BYTES = 64 * MIB
EVAL_BATCH = 32  # evaluation batches hold up to 32 images of at most EVAL_PIXELS each ...
EVAL_PIXELS = 256 * 320  # ... fewer (never fewer than the training batch) at larger sizes


def eval_batch(per_rank_batch: int, input_size: tuple[int, int]) -> int:
    """The evaluation batch of a rank: 32 images up to 256×320 (more images per batch evaluate
    faster), fewer at larger sizes so that evaluation needs no more memory than 32 images at
    256×320 (2 at 1024×1280), and never fewer than the training batch."""
    fit = max(1, EVAL_BATCH * EVAL_PIXELS // (input_size[0] * input_size[1]))
    return max(per_rank_batch, min(EVAL_BATCH, fit))


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB: ``VmHWM`` of ``/proc/self/status``
    (``ru_maxrss`` is the fallback; Linux carries it over from a larger parent across exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass(frozen=True)
class MemoryCalibration:
    """The two measured constants of the model, and where they were measured."""

    runtime_mib: float  # a rank's resident memory beyond everything the model counts
    activation_factor: float  # resident bytes per counted activation byte
    source: str = "uncalibrated"
    # memory that grows with the image size but not with the batch (oneDNN's workspaces and
    # reordered buffers, the allocator's slack), in float32 input images of the trial's size
    workspace_images: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"runtime_mib": self.runtime_mib, "activation_factor": self.activation_factor,
                "workspace_images": self.workspace_images, "source": self.source}


@functools.lru_cache(maxsize=1)
def default_calibration() -> MemoryCalibration | None:
    """The calibration shipped with the code (:data:`CALIBRATION_FILE`), or None before
    ``bench.memory`` has written one (then no memory rule applies)."""
    if not CALIBRATION_FILE.is_file():
        return None
    return load_calibration(CALIBRATION_FILE)


def load_calibration(path: Path = CALIBRATION_FILE) -> MemoryCalibration:
    """The calibration ``bench.memory`` wrote (raises ``FileNotFoundError`` before it has)."""
    data = json.loads(path.read_text())
    return MemoryCalibration(float(data["runtime_mib"]), float(data["activation_factor"]),
                             str(data.get("source", path.name)),
                             float(data.get("workspace_images", 0.0)))


@dataclass(frozen=True)
class MemoryEstimate:
    """A rank's predicted peak resident memory, with its parts (bytes)."""

    peak_bytes: float
    phase: str  # "training" or "evaluation": the phase that sets the peak
    parts: dict[str, float]

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def breakdown(self) -> str:
        """``"training: activations 7.1, input pipeline 0.6, ... GiB"``."""
        parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.parts.items())
        return f"{self.phase}: {parts} GiB"

    def describe(self) -> str:
        """``"9.3 GiB (training: activations 7.1, input pipeline 0.6, ... GiB)"``."""
        return f"{self.peak_gib:.1f} GiB ({self.breakdown()})"


def _layer_outputs(height: int, width: int, num_classes: int,
                   channels: int) -> tuple[list[int], list[int]]:
    """Elements per image of every layer output in a forward pass, and of each pathway's
    final output (what a forward pass keeps while other pathways run)."""
    spec = mcnn_spec(height, width)
    gh, gw = spec.merged_grid
    outputs: list[int] = []
    branches: list[int] = []
    for scale, filters in zip(spec.scales, spec.filters, strict=True):
        h, w = (math.ceil(height / scale), math.ceil(width / scale)) if scale > 1 else (height, width)
        if scale > 1:
            outputs.append(h * w * channels)  # the pooled input
        outputs += [h * w * filters] * 3  # three 5×5 convolutions (ReLU outputs)
        if spec.coarsest_scale // scale > 1:
            outputs.append(gh * gw * filters)  # pooled to the merged grid
        branches.append(gh * gw * filters)
    merged = sum(spec.filters)
    if len(spec.scales) > 1:
        outputs.append(gh * gw * merged)  # concatenation
    outputs.append(gh * gw * 1024)  # 1×1 convolution
    outputs.append(math.ceil(gh / 2) * math.ceil(gw / 2) * 1024)  # merge pool (flatten: a view)
    outputs += [512, num_classes]
    return outputs, branches


def activation_elements(height: int, width: int, num_classes: int = 13,
                        channels: int = 3) -> tuple[int, int]:
    """Counted activation elements per image: (training, evaluation).

    Training keeps the input and every layer output for the backward pass, which then holds the
    gradients of the largest layer's output and input at once. Evaluation holds the input, each
    finished pathway's output and the largest layer's input and output.
    """
    outputs, branches = _layer_outputs(height, width, num_classes, channels)
    image = height * width * channels
    largest = max(outputs)
    train = image + sum(outputs) + 2 * largest
    evaluate = image + sum(branches) + 2 * largest
    return train, evaluate


def predict_peak(*, image_size: tuple[int, int], per_rank_batch: int, precision: str,
                 n_train: int, n_val: int, world: int, calibration: MemoryCalibration,
                 input_size: tuple[int, int] | None = None, num_classes: int = 13,
                 channels: int = 3, weight_average: bool = False) -> MemoryEstimate:
    """Predict one rank's peak resident memory.

    Args:
        image_size: the stored (decoded) image size the pipeline holds.
        per_rank_batch: the per-worker batch.
        precision: ``"float32"`` or ``"mixed_bfloat16"`` (``"float32_bf16math"`` counts as
            float32: its tensors are float32; not calibrated separately).
        n_train, n_val: images of the split (each rank holds its ``1/world`` share).
        world: ranks in the job.
        calibration: the measured constants (:func:`load_calibration`).
        input_size: the model's input when training crops (default ``image_size``).
        weight_average: the job keeps a moving average of the weights (``ema_epochs``).
    """
    h, w = input_size or image_size
    stored = image_size[0] * image_size[1] * channels  # uint8 bytes of one decoded image
    act_bytes = 2 if precision == "mixed_bfloat16" else 4
    params = mcnn_params(h, w, num_classes, channels)
    copies = 5 * 4 + (2 if precision == "mixed_bfloat16" else 0) + (4 if weight_average else 0)
    state = float(params * copies)
    state += FUSION_BYTES if world > 1 else 0
    train_share, val_share = math.ceil(n_train / world), math.ceil(n_val / world)
    cached = ((train_share + val_share) * stored
              if (n_train + n_val) * stored <= IN_MEMORY_BYTES else 0)
    # the shuffle buffer holds decoded images; from an in-memory cache it shares their buffers
    shuffle = 0 if cached else shuffle_buffer(max(1, n_train // world), image_size) * stored
    e_train, e_eval = activation_elements(h, w, num_classes, channels)
    e_batch = eval_batch(per_rank_batch, (h, w))
    runtime = calibration.runtime_mib * MIB
    workspace = calibration.workspace_images * h * w * channels * 4
    k = calibration.activation_factor
    train_batches = 2 * per_rank_batch * h * w * channels * 4  # two prefetched float32 batches
    training = {
        "activations": k * per_rank_batch * e_train * act_bytes,
        "input pipeline": cached + shuffle + train_batches,
        "model state": state,
        "workspace": workspace,
        "runtime": runtime,
    }
    evaluation = {  # the training pipeline's buffers stay alive while the model evaluates
        "activations": k * e_batch * e_eval * act_bytes,
        "input pipeline": cached + shuffle + train_batches + 2 * e_batch * h * w * channels * 4,
        "model state": state,
        "workspace": workspace,
        "runtime": runtime,
    }
    t, e = sum(training.values()), sum(evaluation.values())
    if t >= e:
        return MemoryEstimate(t, "training", training)
    return MemoryEstimate(e, "evaluation", evaluation)
