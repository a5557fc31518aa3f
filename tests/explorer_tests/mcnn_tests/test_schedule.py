from __future__ import annotations

import pytest

from explorer.mcnn.schedule import learning_rate, parse_piecewise
from mcnn_base.errors import ConfigError

SEED = "0.008;2;0.032;5;0.029;10;0.026;15;0.001;20;0.0001"


def test_parse_and_render_round_trip():
    s = parse_piecewise(SEED)
    assert s.lrs == (0.008, 0.032, 0.029, 0.026, 0.001, 0.0001)
    assert s.boundaries == (2, 5, 10, 15, 20)
    assert s.render() == SEED


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.008),
        (199, 0.008),  # last step of epoch 1 (steps_per_epoch = 100)
        (200, 0.032),  # first step of epoch 2 already uses LR1
        (499, 0.032),
        (500, 0.029),
        (1999, 0.001),
        (2000, 0.0001),
        (10**6, 0.0001),
    ],
)
def test_boundaries_integer_steps_per_epoch(step, expected):
    assert learning_rate(SEED, step, 100) == expected


def test_fractional_epochs_and_steps_per_epoch():
    # boundary step = int(E * steps_per_epoch): int(1.5 * 10.4) = int(15.6) = 15
    s = "0.1;1.5;0.01;2.25;0.001"
    assert learning_rate(s, 14, 10.4) == 0.1
    assert learning_rate(s, 15, 10.4) == 0.01
    # int(2.25 * 10.4) = int(23.4) = 23
    assert learning_rate(s, 22, 10.4) == 0.01
    assert learning_rate(s, 23, 10.4) == 0.001


def test_warmup_and_linear_scaling():
    # warm-up over 1 epoch of 10 steps: (step+1)/10 of the scaled LR
    assert learning_rate("0.1", 0, 10, warmup_epochs=1, scale=2.0) == pytest.approx(0.02)
    assert learning_rate("0.1", 4, 10, warmup_epochs=1, scale=2.0) == pytest.approx(0.1)
    assert learning_rate("0.1", 9, 10, warmup_epochs=1, scale=2.0) == pytest.approx(0.2)
    assert learning_rate("0.1", 10, 10, warmup_epochs=1, scale=2.0) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("0.1;2", "odd count"),
        ("0.1;x;0.2", "'x' is not a number"),
        ("0.1;5;0.2;3;0.3", "strictly increasing"),
        ("0.1;0;0.2", "strictly increasing"),
        ("0.1;2;-0.2", "must be > 0"),
        ("", "non-empty"),
        ("0.1;nan;0.2", "not finite"),
    ],
)
def test_malformed_strings_name_the_problem(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_piecewise(text)
