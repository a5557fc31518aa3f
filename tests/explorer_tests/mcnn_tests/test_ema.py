"""Polyak averaging of the weights for evaluation (explorer/mcnn/ema.py)."""

from __future__ import annotations

import pytest

from explorer.mcnn.config import load_config
from explorer.mcnn.ema import WeightAverage, ema_decay, ema_decay_at
from explorer.mcnn.model import build_mcnn
from mcnn_base.errors import ConfigError


def test_decay_averages_the_same_epochs_at_every_batch():
    assert ema_decay(0.5, 200) == pytest.approx(0.99)
    assert ema_decay(0.5, 50) == pytest.approx(0.96)
    assert ema_decay(0.01, 50) == 0.0  # a horizon below one update: the raw weights


def test_decay_ramps_up_from_the_first_update():
    assert ema_decay_at(0.99, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.99, 8) == pytest.approx(0.5)
    assert ema_decay_at(0.99, 10_000) == 0.99


def test_config_takes_a_positive_horizon(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: /d}\n")
    assert load_config(path).optimizer.ema_epochs is None
    path.write_text("data: {root: /d}\noptimizer: {ema_epochs: 0.5}\n")
    assert load_config(path).optimizer.ema_epochs == 0.5
    path.write_text("data: {root: /d}\noptimizer: {ema_epochs: 0}\n")
    with pytest.raises(ConfigError, match="ema_epochs"):
        load_config(path)


def test_average_is_swapped_in_for_evaluation_and_out_after():
    import tensorflow as tf

    w = tf.Variable([0.0, 10.0])
    average = WeightAverage([w], decay=0.5)
    w.assign([4.0, 2.0])
    average.fold(100)  # decay 0.5: halfway from the initial weights
    with average.swapped():
        assert w.numpy().tolist() == [2.0, 6.0]
    assert w.numpy().tolist() == [4.0, 2.0]  # training goes on from its own weights
    w.assign([6.0, 6.0])
    average.fold(0)  # the first update's decay is 0.1, not 0.5
    with average.swapped():
        assert w.numpy() == pytest.approx([5.6, 6.0])


def test_a_bf16_models_average_is_float32_and_swaps_back_exactly():
    model = build_mcnn((48, 64), 4, precision="mixed_bfloat16", seed=0)
    weights = model.trainable_variables
    before = [v.numpy().copy() for v in weights]
    average = WeightAverage(weights, decay=0.9)
    assert {s.dtype.name for s in average._shadow} == {"float32"}
    for v in weights:
        v.assign(v + 1.0)
    average.fold(100)  # decay 0.9: the average moves a tenth of the way
    with average.swapped():
        inside = [v.numpy().copy() for v in weights]
    for v, b, i in zip(weights, before, inside, strict=True):
        assert i == pytest.approx(b + 0.1, abs=1e-5)
        assert (v.numpy() == b + 1.0).all()  # the training weights, bit for bit


def test_the_training_steps_graph_folds_in_each_update_with_its_ramped_decay():
    import tensorflow as tf

    w = tf.Variable([1.0, -2.0])
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.5)
    optimizer.build([w])
    average = WeightAverage([w], decay=0.2)

    @tf.function
    def step() -> None:  # as train.py's train_step: apply the gradients, then fold
        optimizer.apply_gradients([(tf.ones_like(w), w)])
        average.fold(optimizer.iterations - 1)

    expected = [1.0, -2.0]
    for k in range(3):  # decays 0.1, 0.1818..., then the cap 0.2 (the ramp would give 0.25)
        step()
        d = ema_decay_at(0.2, k)
        expected = [d * e + (1 - d) * x for e, x in zip(expected, w.numpy(), strict=True)]
    with average.swapped():
        assert w.numpy() == pytest.approx(expected, rel=1e-6)
