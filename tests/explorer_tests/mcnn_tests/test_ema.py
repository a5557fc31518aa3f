"""Polyak averaging of the weights for evaluation (explorer/mcnn/ema.py)."""

from __future__ import annotations

import pytest

from explorer.mcnn.config import load_config
from explorer.mcnn.ema import WeightAverage, ema_decay, ema_decay_at
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
    tf = pytest.importorskip("tensorflow")
    w = tf.Variable([0.0, 10.0])
    average = WeightAverage([w], decay=0.5)
    w.assign([4.0, 2.0])
    average.update(step=100)  # decay 0.5: halfway from the initial weights
    with average.swapped():
        assert w.numpy().tolist() == [2.0, 6.0]
    assert w.numpy().tolist() == [4.0, 2.0]  # training goes on from its own weights
    w.assign([6.0, 6.0])
    average.update(step=0)  # the first update's decay is 0.1, not 0.5
    with average.swapped():
        assert w.numpy() == pytest.approx([5.6, 6.0])
