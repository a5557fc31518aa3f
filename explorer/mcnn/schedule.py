"""Piecewise learning-rate schedules in tf_cnn_benchmarks' format.

``"LR0;E1;LR1;...;En;LRn"``: the LR is ``LRi`` while ``E(i) <= epoch < E(i+1)`` (``E0 = 0``), so the
first step of epoch ``Ei`` already uses ``LRi``. Boundaries are converted to steps with
``int(Ei * steps_per_epoch)``. On top of that:

* optional linear scaling (Goyal et al. 2017): every LR is multiplied by
  ``global_batch / reference_batch``;
* optional linear warm-up over ``warmup_epochs``: the LR ramps from ``LR(0)/warmup_steps`` up to the
  piecewise value at ``warmup_steps``, i.e. ``lr(step) = piecewise(step) * (step + 1) / warmup_steps``.

Pure Python, no TensorFlow: the explorer uses it to render and plot schedules, the job to set
the optimizer's LR before each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mcnn_base.errors import ConfigError

__all__ = ["PiecewiseSchedule", "learning_rate", "parse_piecewise"]


def _number(token: str, what: str, text: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ConfigError(
            f"piecewise LR schedule {text!r}: {what} {token!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"piecewise LR schedule {text!r}: {what} {token!r} is not finite")
    return value


@dataclass(frozen=True)
class PiecewiseSchedule:
    """Learning rates ``lrs[i]`` that start at epoch ``boundaries[i - 1]`` (``lrs[0]`` at epoch 0)."""

    lrs: tuple[float, ...]
    boundaries: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.lrs) != len(self.boundaries) + 1:
            raise ConfigError(
                f"a piecewise schedule needs one more LR than boundaries, got {len(self.lrs)=} "
                f"and {len(self.boundaries)=}"
            )
        for lr in self.lrs:
            if not lr > 0:
                raise ConfigError(f"learning rates must be > 0, got {lr} in {self.render()!r}")
        previous = 0.0
        for b in self.boundaries:
            if not b > previous:
                raise ConfigError(
                    f"piecewise epochs must be > 0 and strictly increasing, got {b} after "
                    f"{previous} in {self.render()!r}"
                )
            previous = b

    def render(self) -> str:
        """Return the tf_cnn_benchmarks string, e.g. ``'0.008;2;0.032;5;0.001'``."""
        parts = [_fmt(self.lrs[0])]
        for b, lr in zip(self.boundaries, self.lrs[1:], strict=True):
            parts += [_fmt(b), _fmt(lr)]
        return ";".join(parts)

    def boundary_steps(self, steps_per_epoch: float) -> list[int]:
        """Return the first step of each phase after the first: ``int(Ei * steps_per_epoch)``."""
        return [int(b * steps_per_epoch) for b in self.boundaries]

    def lr_at(self, step: int, steps_per_epoch: float) -> float:
        """Return the piecewise LR of ``step`` (0-based), without scaling or warm-up."""
        lr = self.lrs[0]
        for boundary, phase_lr in zip(self.boundary_steps(steps_per_epoch), self.lrs[1:], strict=True):
            if step >= boundary:
                lr = phase_lr
            else:
                break
        return lr


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def parse_piecewise(text: str) -> PiecewiseSchedule:
    """Parse ``'LR0;E1;LR1;...;En;LRn'``.

    Raises:
        ConfigError: for an even number of fields, a non-numeric field, a non-positive LR or
            epochs that are not strictly increasing. The message quotes the bad value.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"piecewise LR schedule must be a non-empty string, got {text!r}")
    tokens = [t.strip() for t in text.strip().split(";")]
    if len(tokens) % 2 == 0:
        raise ConfigError(
            f"piecewise LR schedule {text!r} has {len(tokens)} fields; expected an odd count "
            "'LR0;E1;LR1;...;En;LRn'"
        )
    lrs = tuple(_number(t, "learning rate", text) for t in tokens[0::2])
    epochs = tuple(_number(t, "epoch", text) for t in tokens[1::2])
    return PiecewiseSchedule(lrs=lrs, boundaries=epochs)


def learning_rate(
    schedule: PiecewiseSchedule | str,
    step: int,
    steps_per_epoch: float,
    *,
    warmup_epochs: float = 0.0,
    scale: float = 1.0,
) -> float:
    """Return the LR used by training step ``step`` (0-based).

    Args:
        schedule: a parsed schedule or its piecewise string.
        step: the global step, starting at 0.
        steps_per_epoch: updates per epoch (``train_images / global_batch``); may be fractional.
        warmup_epochs: linear warm-up length; 0 disables it.
        scale: linear-scaling factor ``global_batch / reference_batch`` (1 disables it).
    """
    if isinstance(schedule, str):
        schedule = parse_piecewise(schedule)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step=}")
    if not steps_per_epoch > 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch=}")
    lr = schedule.lr_at(step, steps_per_epoch) * scale
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    if warmup_steps > 0 and step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr
