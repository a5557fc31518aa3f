from __future__ import annotations

import pytest

from explorer.mcnn.config import load_config
from mcnn_base.errors import ConfigError


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_minimal_yaml_gets_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "data: {root: /data}\n"))
    assert cfg.per_worker_batch == 8
    assert cfg.schedule.piecewise.startswith("0.008;2;0.032")
    assert cfg.optimizer.weight_decay == 5e-5 and cfg.optimizer.label_smoothing == 0.1
    assert cfg.precision == "float32"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("data: {root: /d}\nper_worker_batch: 0\n", "per_worker_batch"),
        ("data: {root: /d}\nper_worker_batch: -4\n", "greater than 0"),
        ("data: {root: /d}\nschedule: {piecewise: '0.1;2'}\n", "odd count"),
        ("data: {root: /d}\nschedule: {piecewise: '0.1;3;0.2;1;0.3'}\n", "strictly increasing"),
        ("data: {root: /d}\nbatch: 8\n", "batch: Extra inputs are not permitted"),
        ("data: {root: /d}\nprecision: fp8\n", "precision"),
        ("per_worker_batch: 8\n", "data: Field required"),
        ("data: {root: /d}\ntarget_accuracy: 1.5\n", "target_accuracy"),
    ],
)
def test_invalid_values_are_named(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(_write(tmp_path, text))


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml:3: invalid YAML"):
        load_config(_write(tmp_path, "data:\n  root: /d\n bad: [\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_json_accepted(tmp_path):
    cfg = load_config(_write(tmp_path, '{"data": {"root": "/d"}, "seed": 3}', "c.json"))
    assert cfg.seed == 3
