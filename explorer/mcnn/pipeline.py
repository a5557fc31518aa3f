"""``tf.data`` input pipelines over the shard cache.

Training: records are sharded per rank (``shard(size, rank)``, so ranks see disjoint images),
decoded, cached in memory when the split is small, shuffled with a per-rank seed (in a buffer of
at most 10,000 images and 1 GiB), augmented
(random flips/mirroring, 90° rotations — 180° only on non-square inputs so the shape is kept —
and optional random crops), batched with ``drop_remainder`` and prefetched. The augmentation draws
are stateless, keyed by seed, rank and stream position, and the order is deterministic: the same
seed gives the same batches. It repeats forever; the train loop decides where epochs end, so every
rank runs the same number of steps.

Validation: the same per-rank sharding, no augmentation (centre crop when training crops), finite.
"""

from __future__ import annotations

from typing import Any

from explorer.mcnn.config import AugmentConfig
from explorer.mcnn.shards import ShardSet

__all__ = ["IN_MEMORY_BYTES", "shuffle_buffer", "train_dataset", "val_dataset"]

IN_MEMORY_BYTES = 2 * 1024**3
SHUFFLE_IMAGES = 10_000  # a rank's shuffle buffer holds at most this many decoded images ...
SHUFFLE_BYTES = 1024**3  # ... and at most this many bytes of them (273 images at 1024×1280)


def shuffle_buffer(per_rank: int, image_size: tuple[int, int]) -> int:
    """Images in a rank's shuffle buffer: its whole share when that fits both limits. The shards
    store training records in a random order, so a smaller buffer still mixes the classes."""
    fit = max(1, SHUFFLE_BYTES // (image_size[0] * image_size[1] * 3))
    return max(1, min(per_rank, SHUFFLE_IMAGES, fit))


def _records(files: list[Any], rank: int, size: int, shards: ShardSet) -> Any:
    import tensorflow as tf

    h, w = shards.image_size
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(raw: Any) -> tuple[Any, Any]:
        ex = tf.io.parse_single_example(raw, spec)
        img = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), (h, w, 3))
        return img, tf.cast(ex["label"], tf.int32)

    ds = tf.data.TFRecordDataset([str(f) for f in files])
    if size > 1:
        ds = ds.shard(size, rank)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    n = shards.n_train + shards.n_val
    if n * h * w * 3 <= IN_MEMORY_BYTES:
        ds = ds.cache()
    return ds


def _normalizer(shards: ShardSet, mode: str) -> Any:
    import tensorflow as tf

    mean = tf.constant(shards.channel_mean if mode == "standardize" else (0.0,) * 3, tf.float32)
    inv = tf.constant([1.0 / s for s in shards.channel_std] if mode == "standardize"
                      else (1.0,) * 3, tf.float32)

    def to_float(img: Any) -> Any:
        return (tf.cast(img, tf.float32) * (1.0 / 255.0) - mean) * inv

    return to_float


def train_dataset(shards: ShardSet, *, rank: int, size: int, batch: int, seed: int,
                  augment: AugmentConfig, normalize: str = "unit") -> Any:
    """Infinite, shuffled, augmented batches of ``(images float32 [0,1], labels int32)``."""
    import tensorflow as tf

    h, w = shards.image_size
    crop = augment.random_crop
    to_float = _normalizer(shards, normalize)
    square = (crop or (h, w))[0] == (crop or (h, w))[1]

    def aug(index: Any, example: Any) -> tuple[Any, Any]:
        # stateless draws keyed by (seed, rank, position in the stream): the same seed gives the
        # same batches, whatever order the parallel map finishes in
        img, label = example
        key = tf.stack([tf.constant(seed + 7919 * rank, tf.int64), index])
        keys = tf.random.experimental.stateless_split(key, 4)
        if crop is not None:
            img = tf.image.stateless_random_crop(img, (crop[0], crop[1], 3), seed=keys[0])
        if augment.flips:
            img = tf.image.stateless_random_flip_left_right(img, seed=keys[1])
            img = tf.image.stateless_random_flip_up_down(img, seed=keys[2])
        if augment.rot90:
            turns = 4 if square else 2
            k = tf.random.stateless_uniform((), keys[3], 0, turns, dtype=tf.int32)
            img = tf.image.rot90(img, k * (4 // turns))
        return to_float(img), label

    per_rank = max(1, shards.n_train // size)
    ds = _records(shards.train_files, rank, size, shards)
    ds = ds.shuffle(shuffle_buffer(per_rank, (h, w)), seed=seed + 7919 * rank,
                    reshuffle_each_iteration=True)
    ds = ds.repeat().enumerate()
    ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    opts = tf.data.Options()
    opts.deterministic = True
    return ds.with_options(opts).prefetch(tf.data.AUTOTUNE)


def val_dataset(shards: ShardSet, *, rank: int, size: int, batch: int,
                augment: AugmentConfig, normalize: str = "unit") -> Any:
    """This rank's disjoint part of the validation images, in fixed order."""
    import tensorflow as tf

    crop = augment.random_crop
    to_float = _normalizer(shards, normalize)

    def prep(img: Any, label: Any) -> tuple[Any, Any]:
        if crop is not None:
            img = tf.image.resize_with_crop_or_pad(img, crop[0], crop[1])
        return to_float(img), label

    ds = _records(shards.val_files, rank, size, shards)
    return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)
