from __future__ import annotations

import pytest

from explorer.mcnn.model import build_mcnn, mcnn_spec
from mcnn_base.errors import ConfigError


def test_full_size_parameter_count():
    model = build_mcnn((1024, 1280), 13)
    assert model.count_params() == 42_577_261
    assert model.get_layer("fc512").count_params() == 41_943_552
    assert tuple(model.get_layer("merge").output.shape[1:]) == (16, 20, 208)
    assert tuple(model.get_layer("merge_pool").output.shape[1:]) == (8, 10, 1024)


@pytest.mark.parametrize(
    ("size", "scales", "grid"),
    [((1024, 1280), (1, 2, 4, 8, 16, 32, 64), (16, 20)), ((64, 80), (1, 2, 4, 8, 16), (4, 5)),
     ((724, 724), (1, 2, 4, 8, 16, 32, 64), (12, 12)), ((8, 8), (1, 2), (4, 4))],
)
def test_input_size_rule(size, scales, grid):
    spec = mcnn_spec(*size)
    assert spec.scales == scales
    assert spec.merged_grid == grid


@pytest.mark.parametrize("size", [(64, 80), (724, 724), (100, 75)])
def test_small_and_odd_inputs_build(size):
    model = build_mcnn(size, 5)
    assert model.output.shape[-1] == 5
    merge = model.get_layer("merge").output.shape
    assert tuple(merge[1:3]) == mcnn_spec(*size).merged_grid


def test_bf16_switch_keeps_float32_logits_and_weights():
    model = build_mcnn((64, 80), 13, precision="mixed_bfloat16")
    assert model.get_layer("s1_conv1").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert model.output.dtype == "float32"


def test_bad_arguments():
    with pytest.raises(ConfigError, match="precision"):
        build_mcnn((64, 80), 13, precision="fp8")
    with pytest.raises(ConfigError, match="at least 8"):
        build_mcnn((4, 80), 13)
