from __future__ import annotations

import itertools

import numpy as np
import pytest

from explorer.mcnn.config import AugmentConfig, DataConfig
from explorer.mcnn.pipeline import shuffle_buffer, train_dataset, val_dataset
from explorer.mcnn.shards import percentile_scale, prepare_shards


def _cfg(root, tmp_path, **kw):
    return DataConfig(root=root, image_size=(32, 40), cache_dir=tmp_path / "cache", **kw)


def test_percentile_scale_clips_to_unit_range():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4000, (50, 60, 3)).astype(np.uint16)
    img[0, 0] = 65535
    out = percentile_scale(img)
    assert out.min() == 0.0 and out.max() == 1.0
    assert out.dtype == np.float32


def test_shards_are_cached_by_options(synth_tree, tmp_path):
    a = prepare_shards(_cfg(synth_tree, tmp_path))
    again = prepare_shards(_cfg(synth_tree, tmp_path))
    other = prepare_shards(_cfg(synth_tree, tmp_path, illumination_correction=True))
    assert a.path == again.path != other.path
    assert a.n_train + a.n_val == 200
    assert a.image_size == (32, 40) and len(a.classes) == 5


def test_ranks_read_disjoint_shards_and_batches_are_augmented(synth_tree, tmp_path):
    shards = prepare_shards(_cfg(synth_tree, tmp_path))
    aug = AugmentConfig()
    seen = []
    for rank in range(2):
        labels = np.concatenate([y.numpy() for _, y in val_dataset(
            shards, rank=rank, size=2, batch=16, augment=aug)])
        seen.append(len(labels))
    assert sum(seen) == shards.n_val and abs(seen[0] - seen[1]) <= 1
    x, _ = next(iter(train_dataset(shards, rank=0, size=2, batch=4, seed=0, augment=aug)))
    assert x.shape == (4, 32, 40, 3) and x.dtype == "float32"
    assert float(np.max(x)) <= 1.0 and float(np.min(x)) >= 0.0


def test_random_crop_and_standardize(synth_tree, tmp_path):
    shards = prepare_shards(_cfg(synth_tree, tmp_path))
    aug = AugmentConfig(random_crop=(24, 24))
    x, _ = next(iter(train_dataset(shards, rank=0, size=1, batch=8, seed=0, augment=aug,
                                   normalize="standardize")))
    assert x.shape == (8, 24, 24, 3)
    v, _ = next(iter(val_dataset(shards, rank=0, size=1, batch=64, augment=aug,
                                 normalize="standardize")))
    assert v.shape[1:] == (24, 24, 3)
    assert abs(float(np.mean(v))) < 0.5  # roughly centred


def test_crop_must_fit(synth_tree, tmp_path):
    with pytest.raises(ValueError, match="must fit"):
        _cfg(synth_tree, tmp_path, augment=AugmentConfig(random_crop=(64, 64)))


def test_data_root_without_csvs_is_a_clear_error(tmp_path):
    from mcnn_base.errors import DataError

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"missing BBBC021_v1_image\.csv"):
        prepare_shards(_cfg(tmp_path / "empty", tmp_path))


def _first_batches(shards, seed, n=3):
    ds = train_dataset(shards, rank=1, size=2, batch=8, seed=seed,
                       augment=AugmentConfig(random_crop=(24, 24)))
    return [x.numpy() for x, _ in ds.take(n)]


def test_same_seed_gives_the_same_augmented_batches(synth_tree, tmp_path):
    shards = prepare_shards(_cfg(synth_tree, tmp_path))
    a, b, other = (_first_batches(shards, s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, other, strict=True))


def test_training_records_are_stored_in_a_random_order_not_class_by_class(synth_tree, tmp_path):
    import tensorflow as tf

    shards = prepare_shards(_cfg(synth_tree, tmp_path))
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    labels = [int(tf.io.parse_single_example(raw, spec)["label"])
              for raw in tf.data.TFRecordDataset([str(f) for f in shards.train_files[:1]])]
    changes = sum(a != b for a, b in itertools.pairwise(labels))
    # class by class, a file would change label at most once per class (5)
    assert len(set(labels)) == 5 and changes > 3 * 5, labels


@pytest.mark.parametrize(("per_rank", "size", "expected"), [
    (160, (64, 80), 160), (50_000, (64, 80), 10_000), (5_000, (1024, 1280), 273),
    (100, (1024, 1280), 100)])
def test_the_shuffle_buffer_is_a_ranks_share_up_to_10000_images_and_1_gib(per_rank, size,
                                                                          expected):
    assert shuffle_buffer(per_rank, size) == expected
