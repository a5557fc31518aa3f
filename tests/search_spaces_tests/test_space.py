from __future__ import annotations

from pathlib import Path

import pytest

from mcnn_base.errors import ConfigError
from search_spaces.space import load_space

SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.parametrize("name", ["seed_bbbc021.yaml", "tiny.yaml"])
def test_shipped_spaces_load(name):
    space = load_space(SHIPPED / name)
    assert space.dimensions and space.name == name.removesuffix(".yaml")


def test_seed_space_spans_the_seed_choices():
    space = load_space(SHIPPED / "seed_bbbc021.yaml")
    assert {"peak_lr", "per_node_batch", "linear_scaling", "nodes", "ranks_per_node",
            "threads_per_rank", "inter_op_threads", "binding", "kmp_blocktime",
            "kmp_affinity", "precision"} <= set(space.dimensions)
    assert space.constraints.min_updates_per_epoch == 150
    assert space.constraints.max_global_batch == 2048
    assert space.dimensions["peak_lr"].log


def _space(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("dimensions:\n  peak_lr: {float: [0.1, 0.01]}\n",
         r"s.yaml:2: dimensions.peak_lr.float: low must be <= high"),
        ("dimensions:\n  peak_lr: {float: [0, 0.1], log: true}\n", "log range needs low > 0"),
        ("dimensions:\n  bogus: {int: [1, 2]}\n",
         r"s.yaml:2: dimensions.bogus: unknown dimension 'bogus'"),
        ("dimensions:\n  nodes: {int: [1, 2.5]}\n", "bounds must be integers"),
        ("dimensions:\n  nodes: {int: [1, x]}\n", "bound must be a number, got 'x'"),
        ("dimensions:\n  binding: {choices: []}\n", "non-empty list"),
        ("dimensions:\n  binding: [none, core]\n", "expected a mapping"),
        ("dimensions:\n  nodes: {int: [1, 2], choices: [1]}\n", "exactly one of"),
        ("dimension:\n  nodes: {int: [1, 2]}\n", r"s.yaml:1: dimension: unknown key"),
        ("dimensions: {}\n", "non-empty mapping"),
        ("dimensions:\n  nodes: {int: [1, 2]}\nconstraints: {max_global_batch: -1}\n",
         "constraints.max_global_batch: expected a positive integer"),
        ("dimensions:\n  nodes: {int: [1, 2]}\nconstraints: {cap: 3}\n", "unknown constraint"),
        ("dimensions:\n  nodes: {int: [1, 2]\n", r"s.yaml:3: invalid YAML"),
    ],
)
def test_bad_spaces_name_key_and_line(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load_space(_space(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")
