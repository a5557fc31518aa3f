"""Godinez et al. (2017) multi-scale CNN (M-CNN), Keras 3.

Structure (docs/DESIGN.md §1), for an input of H×W×3:

* one pathway per scale ``s = 1, 2, 4, ..., S``: MaxPool ``s×s`` stride ``s`` (VALID; none for
  ``s = 1``), three 5×5 Conv2D + ReLU (SAME, bias), MaxPool ``(S/s)×(S/s)`` stride ``S/s`` (SAME).
  Filters per pathway: 16, 16, 16, 32, 32, 32, 64;
* concatenate on channels, 1×1 Conv → 1024 + ReLU, MaxPool 2×2 stride 2;
* Flatten → Dense 512 + ReLU → Dense ``num_classes`` (logits, float32).

No batch norm or dropout; Glorot-uniform kernels, zero biases.

**Input-size rule.** The coarsest scale ``S`` is the largest power of two ``<= 64`` with
``min(H, W) >= 4·S``: 64 at 1024×1280 (merged grid 16×20, 42,577,261 parameters with 13 classes),
16 at 64×80 (five pathways, merged grid 4×5). Pathway ``i`` keeps the ``i``-th filter count, so
smaller inputs drop the coarsest pathways. When ``s`` does not divide H or W the first pooling uses
SAME padding, so every pathway ends at exactly ``ceil(H/S)×ceil(W/S)`` for any input size (for
sizes divisible by ``S`` this is identical to VALID).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_args

from explorer.mcnn.config import Precision
from mcnn_base.errors import ConfigError

__all__ = ["FILTERS", "MAX_SCALE", "MCNNSpec", "build_mcnn", "mcnn_spec"]

FILTERS = (16, 16, 16, 32, 32, 32, 64)
MAX_SCALE = 64
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class MCNNSpec:
    """The shape decisions :func:`build_mcnn` makes for an input size."""

    height: int
    width: int
    scales: tuple[int, ...]
    filters: tuple[int, ...]
    merged_grid: tuple[int, int]

    @property
    def coarsest_scale(self) -> int:
        return self.scales[-1]


def mcnn_spec(height: int, width: int) -> MCNNSpec:
    """Return the pathways and merged grid used for an ``height × width`` input."""
    if height < 8 or width < 8:
        raise ConfigError(f"M-CNN needs an input of at least 8×8 pixels, got {height}×{width}")
    top = 1
    while top * 2 <= MAX_SCALE and min(height, width) >= 4 * top * 2:
        top *= 2
    scales = tuple(2**k for k in range(int(math.log2(top)) + 1))
    grid = (math.ceil(height / top), math.ceil(width / top))
    return MCNNSpec(height, width, scales, FILTERS[: len(scales)], grid)


def build_mcnn(
    image_size: tuple[int, int] = (1024, 1280),
    num_classes: int = 13,
    *,
    channels: int = 3,
    precision: str = "float32",
    seed: int | None = None,
) -> Any:  # a keras.Model (keras is imported lazily: it costs seconds)
    """Build the M-CNN as a functional Keras model that outputs float32 logits.

    Args:
        image_size: ``(height, width)`` of the input.
        num_classes: number of output classes (13 = 12 MoA + DMSO).
        channels: input channels (DAPI, Tubulin, Actin).
        precision: ``"float32"``, ``"mixed_bfloat16"`` (bf16 compute, float32 variables) or
            ``"float32_bf16math"`` (a float32 model; the job lets oneDNN compute in bf16).
        seed: seed for the Glorot initialisers; the same seed gives the same weights.
    """
    import keras
    from keras import layers

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision=}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes=}")
    spec = mcnn_spec(*image_size)
    height, width = image_size
    policy = keras.DTypePolicy("float32" if precision == "float32_bf16math" else precision)
    counter = iter(range(10_000))

    def init() -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(None if seed is None else seed + next(counter))

    def conv(filters: int, kernel: int, name: str) -> layers.Conv2D:
        return layers.Conv2D(
            filters, kernel, padding="same", activation="relu", kernel_initializer=init(),
            bias_initializer="zeros", dtype=policy, name=name,
        )

    inputs = keras.Input((height, width, channels), name="image")
    branches = []
    for scale, filters in zip(spec.scales, spec.filters, strict=True):
        x = inputs
        if scale > 1:
            divisible = height % scale == 0 and width % scale == 0
            x = layers.MaxPooling2D(
                scale, scale, padding="valid" if divisible else "same", dtype=policy,
                name=f"s{scale}_pool_in",
            )(x)
        for j in range(3):
            x = conv(filters, 5, f"s{scale}_conv{j + 1}")(x)
        out_pool = spec.coarsest_scale // scale
        if out_pool > 1:
            x = layers.MaxPooling2D(
                out_pool, out_pool, padding="same", dtype=policy, name=f"s{scale}_pool_out"
            )(x)
        branches.append(x)
    if len(branches) > 1:
        x = layers.Concatenate(axis=-1, dtype=policy, name="merge")(branches)
    else:
        x = branches[0]
    x = conv(1024, 1, "merge_conv1x1")(x)
    x = layers.MaxPooling2D(2, 2, padding="same", dtype=policy, name="merge_pool")(x)
    x = layers.Flatten(dtype=policy, name="flatten")(x)
    x = layers.Dense(
        512, activation="relu", kernel_initializer=init(), bias_initializer="zeros",
        dtype=policy, name="fc512",
    )(x)
    logits = layers.Dense(
        num_classes, kernel_initializer=init(), bias_initializer="zeros", dtype="float32",
        name="logits",
    )(x)
    return keras.Model(inputs, logits, name="mcnn")
