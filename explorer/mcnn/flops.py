"""Analytical FLOPs of the M-CNN (multiply-adds × 2), per image, forward and training step.

Counted: every 5×5 and 1×1 convolution and both dense layers (``2·MACs``). Not counted: bias adds,
ReLUs and max-pools (< 0.5 % at 1024×1280). A training step is the forward pass plus, per layer,
the weight gradient (= its forward FLOPs) and the input gradient (= its forward FLOPs) — except
for the first convolution of each pathway, whose input (the image or a pooled image) needs no
gradient. That is the usual "≈ 3× forward", made exact for this graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from explorer.mcnn.model import mcnn_spec

__all__ = ["FlopCount", "mcnn_flops", "mcnn_params"]


@dataclass(frozen=True)
class FlopCount:
    forward: float
    train: float
    layers: dict[str, float]


def mcnn_flops(height: int, width: int, num_classes: int = 13, channels: int = 3) -> FlopCount:
    """FLOPs per image of :func:`~explorer.mcnn.model.build_mcnn` for ``height × width``."""
    spec = mcnn_spec(height, width)
    layers: dict[str, float] = {}
    no_input_grad: set[str] = set()
    for scale, filters in zip(spec.scales, spec.filters, strict=True):
        h, w = (math.ceil(height / scale), math.ceil(width / scale)) if scale > 1 else (height, width)
        cin = channels
        for j in range(3):
            name = f"s{scale}_conv{j + 1}"
            layers[name] = 2.0 * h * w * 25 * cin * filters
            if j == 0:
                no_input_grad.add(name)
            cin = filters
    gh, gw = spec.merged_grid
    merged = sum(spec.filters)
    layers["merge_conv1x1"] = 2.0 * gh * gw * merged * 1024
    flat = math.ceil(gh / 2) * math.ceil(gw / 2) * 1024
    layers["fc512"] = 2.0 * flat * 512
    layers["logits"] = 2.0 * 512 * num_classes
    forward = sum(layers.values())
    train = sum(v * (2.0 if k in no_input_grad else 3.0) for k, v in layers.items())
    return FlopCount(forward=forward, train=train, layers=layers)


def mcnn_params(height: int, width: int, num_classes: int = 13, channels: int = 3) -> int:
    """Trainable parameters of :func:`~explorer.mcnn.model.build_mcnn` for ``height × width``
    (42,577,261 at 1024×1280 with 13 classes): what every step's allreduce moves."""
    spec = mcnn_spec(height, width)
    total = 0
    for filters in spec.filters:
        cin = channels
        for _ in range(3):
            total += 25 * cin * filters + filters
            cin = filters
    gh, gw = spec.merged_grid
    total += sum(spec.filters) * 1024 + 1024
    flat = math.ceil(gh / 2) * math.ceil(gw / 2) * 1024
    return total + flat * 512 + 512 + 512 * num_classes + num_classes
