"""The memory model: counted activations, the evaluation batch, the parts of a prediction."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from explorer.mcnn.memory import (
    MemoryCalibration,
    MemoryEstimate,
    activation_elements,
    eval_batch,
    predict_peak,
)
from explorer.mcnn.memory import _layer_outputs as layer_outputs

CAL = MemoryCalibration(runtime_mib=600.0, activation_factor=2.0)
FULL = (1024, 1280)


@pytest.mark.parametrize("size", [(64, 80), (100, 130), (256, 320)])
def test_counted_layer_outputs_are_the_models_layer_outputs(size):
    from explorer.mcnn.model import build_mcnn

    model = build_mcnn(size, 13)
    counted = 0
    for layer in model.layers:
        if type(layer).__name__ in ("InputLayer", "Flatten"):  # the input; a view
            continue
        counted += math.prod(layer.output.shape[1:])
    assert sum(layer_outputs(size[0], size[1], 13, 3)[0]) == counted


def test_activations_grow_with_the_pixels():
    small, full = activation_elements(64, 80), activation_elements(*FULL)
    assert full[0] > 200 * small[0]  # 256× the pixels, minus the pathways 64×80 lacks
    assert all(train > evaluate for train, evaluate in (small, full))


@pytest.mark.parametrize(("batch", "size", "expected"), [
    (8, (64, 80), 32), (8, (256, 320), 32), (8, (512, 640), 8), (1, FULL, 2), (4, FULL, 4),
    (64, (64, 80), 64)])
def test_the_evaluation_batch_shrinks_with_large_images_but_not_below_the_training_batch(
        batch, size, expected):
    assert eval_batch(batch, size) == expected


def _peak(**over: object) -> MemoryEstimate:
    args: dict[str, object] = {"image_size": FULL, "per_rank_batch": 8,
                               "precision": "float32", "n_train": 10_000, "n_val": 2_000,
                               "world": 4, "calibration": CAL}
    return predict_peak(**{**args, **over})  # type: ignore[arg-type]


def test_a_prediction_adds_up_its_parts_and_names_the_phase():
    est = _peak()
    assert est.peak_bytes == pytest.approx(sum(est.parts.values()))
    assert est.phase == "training"
    assert est.describe() == f"{est.peak_gib:.1f} GiB ({est.breakdown()})"
    assert est.breakdown().startswith("training: activations ")
    small_batch = _peak(image_size=(64, 80), per_rank_batch=1, world=1, n_train=100, n_val=20)
    assert small_batch.phase == "evaluation"  # 32 images > 1


def test_the_shuffle_buffer_holds_each_ranks_share_of_decoded_images_up_to_1_gib():
    image = FULL[0] * FULL[1] * 3  # uint8
    full = _peak(world=1)  # 10,000 images per rank: capped at 1 GiB of them
    assert full.parts["input pipeline"] == pytest.approx(
        (1024**3 // image) * image + 2 * 8 * image * 4)  # and two float32 batches
    mid = 256 * 320 * 3
    one, four = _peak(image_size=(256, 320), world=1), _peak(image_size=(256, 320), world=4)
    assert one.parts["input pipeline"] - four.parts["input pipeline"] == pytest.approx(
        (1024**3 // mid - 2_500) * mid)
    # a split small enough is also cached in memory, each rank its share of train and val
    # (its shuffle buffer then shares the cached images)
    cached = _peak(image_size=(64, 80), n_train=800, n_val=200, world=2)
    float_batch = 64 * 80 * 3 * 4
    prefetched = 2 * 8 * float_batch + (2 * 32 * float_batch  # and evaluation's, batch 32
                                        if cached.phase == "evaluation" else 0)
    assert cached.parts["input pipeline"] == pytest.approx(prefetched + 500 * 64 * 80 * 3)


def test_bf16_halves_the_activations_and_batch_scales_them():
    fp32, bf16 = _peak(), _peak(precision="mixed_bfloat16")
    assert bf16.parts["activations"] == pytest.approx(fp32.parts["activations"] / 2)
    assert _peak(per_rank_batch=16).parts["activations"] == pytest.approx(
        2 * fp32.parts["activations"])


def test_peak_rss_follows_what_the_process_touched():
    code = ("from explorer.mcnn.memory import peak_rss_mib; a = peak_rss_mib(); "
            "b = bytearray(300 * 1024 * 1024); b[::4096] = bytes(len(b[::4096])) ; "
            "print(a, peak_rss_mib())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: S603 - argv list
                          timeout=60, check=True)
    before, after = map(float, done.stdout.split())
    assert before > 1 and after >= before + 250


def test_the_workspace_grows_with_the_image_not_the_batch():
    cal = MemoryCalibration(600.0, 1.0, workspace_images=50.0)
    one = predict_peak(image_size=FULL, per_rank_batch=1, precision="float32", n_train=100,
                       n_val=20, world=1, calibration=cal)
    two = predict_peak(image_size=FULL, per_rank_batch=2, precision="float32", n_train=100,
                       n_val=20, world=1, calibration=cal)
    assert one.parts["workspace"] == two.parts["workspace"] == pytest.approx(
        50.0 * FULL[0] * FULL[1] * 3 * 4)


def test_a_moving_average_of_the_weights_adds_one_float32_copy_of_them():
    plain, averaged = _peak(world=1), _peak(world=1, weight_average=True)  # no fusion buffer
    extra = averaged.parts["model state"] - plain.parts["model state"]
    assert extra == pytest.approx(plain.parts["model state"] / 5)  # 4 bytes to the 20 a weight
    assert averaged.parts["activations"] == plain.parts["activations"]
