"""Polyak averaging for evaluation: ``optimizer.ema_epochs`` in the training config.

At a high learning rate, validation accuracy of the raw weights jumps from one evaluation to the
next (on bench-v3, by a median of 0.12 at the largest jump of a run: BENCHMARKS §5), so which
evaluation first reaches the target is partly luck. Evaluating an exponential moving average of
the weights instead averages that noise out over about ``1 / (1 - decay)`` updates.

* The horizon is given in epochs: ``decay = 1 - 1 / (ema_epochs × updates per epoch)``, so one
  value averages over the same amount of data at every global batch.
* The average starts at the weights every rank holds after the broadcast. Its decay ramps up as
  ``min(decay, (1 + step) / (10 + step))`` (TensorFlow's ``ExponentialMovingAverage`` with
  ``num_updates``), so the first evaluations are not dominated by the initial weights. Until
  the ramp reaches ``decay`` the average spans about a ninth of the updates so far: the full
  horizon of ``ema_epochs`` is reached only after about ``9 × ema_epochs`` epochs (on bench-v4,
  ``ema_epochs`` 0.5: about 0.1 epoch at epoch 1, 0.2 at epoch 2, half an epoch from 4.5 on).
* Every rank updates its own copy after the same allreduced step, inside the training step's
  graph (:meth:`WeightAverage.fold`), so the copies stay identical without any communication.
* Only evaluation reads the average, but a job with ``eval: false`` keeps it too: a
  throughput-only run (layout-first stage 1) then times the step its trials will run.
* :meth:`WeightAverage.swapped` puts the average into the model for an evaluation and the
  training weights back after it. The update and the swaps stay on the TTA clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["WeightAverage", "ema_decay", "ema_decay_at"]


def ema_decay(ema_epochs: float, updates_per_epoch: int) -> float:
    """The per-update decay that averages over about ``ema_epochs`` epochs (0 below 1 update)."""
    return max(0.0, 1.0 - 1.0 / (ema_epochs * updates_per_epoch))


def ema_decay_at(decay: float, step: int) -> float:
    """The decay applied at update ``step`` (0-based): ramped up to ``decay``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """An exponential moving average of ``variables``, kept in non-trainable shadow variables."""

    def __init__(self, variables: Sequence[Any], decay: float) -> None:
        import tensorflow as tf

        self.decay = decay
        self._variables = list(variables)
        self._shadow = [tf.Variable(v, trainable=False) for v in self._variables]

        @tf.function
        def swap() -> None:
            for s, v in zip(self._shadow, self._variables, strict=True):
                held = tf.identity(v)
                v.assign(s)
                s.assign(held)

        self._swap = swap

    def fold(self, step: Any) -> None:
        """Fold the weights after update ``step`` (0-based; an integer or an integer tensor) into
        the average, with :func:`ema_decay_at`'s ramp. The training step calls it inside its graph
        after applying its gradients, so the average costs no dispatch of its own; it also runs
        eagerly."""
        import tensorflow as tf

        s = tf.cast(step, tf.float32)
        d = tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + s) / (10.0 + s))
        for shadow, v in zip(self._shadow, self._variables, strict=True):
            shadow.assign(d * shadow + (1.0 - d) * v)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The average in the model's variables inside the block, the training weights after."""
        self._swap()
        try:
            yield
        finally:
            self._swap()
