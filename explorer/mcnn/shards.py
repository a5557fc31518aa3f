"""Preprocess a BBBC021 split once into TFRecord shards, cached by source and options.

Per image: read the three TIFFs → (optional) divide by the plate's illumination function →
per-channel percentile scaling (0.1/99.9 → [0, 1]) → area resize to ``image_size`` → uint8.
The cache key hashes both CSVs, the data root and every option that changes the bytes, so trials
that share data and options share shards. Concurrent builders (ranks, parallel trials) take a file
lock; the first builds into a temporary folder and renames it into place, the others reuse it.

Record layout (``tf.train.Example``): ``image`` (raw uint8 H×W×3 bytes), ``label`` (int64),
``image_number`` (int64).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from explorer.errors import DataError
from explorer.mcnn.bbbc021 import IMAGE_CSV, MOA_CSV, ImageRecord, load_metadata, read_channels
from explorer.mcnn.config import DataConfig
from explorer.mcnn.splits import split

__all__ = ["ShardSet", "default_cache_dir", "percentile_scale", "prepare_shards"]

FORMAT_VERSION = 1
PERCENTILES = (0.1, 99.9)
RECORDS_PER_SHARD = 512


def default_cache_dir() -> Path:
    env = os.environ.get("MCNN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mcnn-explorer" / "shards"


@dataclass(frozen=True)
class ShardSet:
    """A built shard cache: file lists, counts and classes (from ``manifest.json``)."""

    path: Path
    train_files: list[Path]
    val_files: list[Path]
    n_train: int
    n_val: int
    classes: list[str]
    image_size: tuple[int, int]
    split: str
    channel_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    channel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def load(cls, path: Path) -> ShardSet:
        m = json.loads((path / "manifest.json").read_text())
        return cls(path, [path / f for f in m["train_files"]], [path / f for f in m["val_files"]],
                   m["n_train"], m["n_val"], m["classes"], tuple(m["image_size"]),
                   m["split"], tuple(m["channel_mean"]), tuple(m["channel_std"]))


def percentile_scale(img: np.ndarray, low: float = PERCENTILES[0], high: float = PERCENTILES[1]
                     ) -> np.ndarray:
    """Clip each channel to its [low, high] percentiles and scale it to [0, 1]."""
    img = img.astype(np.float32, copy=False)
    lo = np.percentile(img, low, axis=(0, 1))
    hi = np.percentile(img, high, axis=(0, 1))
    span = np.maximum(hi - lo, 1e-6)
    return np.clip((img - lo) / span, 0.0, 1.0)


def _box_blur(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean filter of size (2r+1)² per channel, edges clamped (cumulative sums, O(HW))."""
    out = a
    for axis in (0, 1):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=np.float64)
        n = out.shape[axis]
        hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        out = ((hi - lo) / (2 * radius + 1)).astype(np.float32)
    return out


def _illumination_functions(records: list[ImageRecord]) -> dict[str, np.ndarray]:
    """Per plate: the smoothed mean image, normalised to mean 1 per channel."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        img = read_channels(r).astype(np.float32)
        sums[r.plate] = sums[r.plate] + img if r.plate in sums else img
        counts[r.plate] += 1
    out = {}
    for plate, total in sums.items():
        mean = total / counts[plate]
        smooth = _box_blur(mean, max(1, min(mean.shape[:2]) // 8))
        smooth /= np.maximum(smooth.mean(axis=(0, 1)), 1e-6)
        out[plate] = np.maximum(smooth, 0.05)
    return out


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == tuple(size):
        return img
    h, w = img.shape[:2]
    fy, fx = h / size[0], w / size[1]
    if fy.is_integer() and fx.is_integer():  # exact area resize by block means
        return img.reshape(size[0], int(fy), size[1], int(fx), -1).mean(axis=(1, 3))
    import tensorflow as tf

    return tf.image.resize(img, size, method="area", antialias=True).numpy()


def _cache_key(cfg: DataConfig) -> str:
    h = hashlib.sha256()
    for name in (IMAGE_CSV, MOA_CSV):
        if not (cfg.root / name).is_file():
            raise DataError(f"missing {name}: expected it at {cfg.root / name}")
        h.update((cfg.root / name).read_bytes())
    opts: dict[str, Any] = {
        "v": FORMAT_VERSION, "root": str(cfg.root.resolve()), "size": list(cfg.image_size),
        "split": cfg.split.model_dump(), "drop_dmso": cfg.drop_dmso,
        "illum": cfg.illumination_correction, "pct": PERCENTILES,
    }
    h.update(json.dumps(opts, sort_keys=True).encode())
    return h.hexdigest()[:20]


def _example(img: np.ndarray, label: int, number: int) -> bytes:
    import tensorflow as tf

    feat = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "image": feat(bytes_list=tf.train.BytesList(value=[img.tobytes()])),
        "label": feat(int64_list=tf.train.Int64List(value=[label])),
        "image_number": feat(int64_list=tf.train.Int64List(value=[number])),
    })).SerializeToString()


def _write_part(out: Path, part: str, records: list[ImageRecord], class_index: dict[str, int],
                size: tuple[int, int], illum: dict[str, np.ndarray] | None
                ) -> tuple[list[str], np.ndarray]:
    """Write one part; return its file names and per-channel [sum, sum of squares, count]."""
    import tensorflow as tf

    n_files = max(1, -(-len(records) // RECORDS_PER_SHARD))
    names = [f"{part}-{i:05d}-of-{n_files:05d}.tfrecord" for i in range(n_files)]
    writers = [tf.io.TFRecordWriter(str(out / n)) for n in names]
    moments = np.zeros((3, 3))
    try:
        for i, r in enumerate(records):
            img = read_channels(r).astype(np.float32)
            if illum is not None:
                ifunc = illum[r.plate]
                if ifunc.shape != img.shape:
                    raise DataError(f"image {r.paths[0]} has shape {img.shape[:2]} but other "
                                    f"images of plate {r.plate} have {ifunc.shape[:2]}")
                img = img / ifunc
            img = _resize(percentile_scale(img), size)
            q = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
            f = q.reshape(-1, 3).astype(np.float64) / 255.0
            moments += (f.sum(axis=0), (f * f).sum(axis=0), np.full(3, len(f)))
            writers[i % n_files].write(_example(q, class_index[r.moa or ""], r.uid))
    finally:
        for w in writers:
            w.close()
    return names, moments


def prepare_shards(cfg: DataConfig, *, log: Any = None) -> ShardSet:
    """Return the shard cache for ``cfg``, building it first if needed (safe to call concurrently).

    Raises:
        DataError / ConfigError: from the loader and the split (missing CSV, TIFF, bad fold ...).
    """
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    key = _cache_key(cfg)
    final = cache / key
    if (final / "manifest.json").is_file():  # hit: no CSV parsing on the job's start-up path
        return ShardSet.load(final)
    dataset = load_metadata(cfg.root, drop_dmso=cfg.drop_dmso)
    parts = split(dataset, cfg.split.protocol, val_fraction=cfg.split.val_fraction,
                  fold=cfg.split.fold, seed=cfg.split.seed)
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "manifest.json").is_file():
            return ShardSet.load(final)
        if log:
            log(f"building shards {final} ({len(parts.train)} train / {len(parts.val)} val)")
        tmp = cache / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            illum = (_illumination_functions(parts.train + parts.val)
                     if cfg.illumination_correction else None)
            index = dataset.class_index
            train_files, m = _write_part(tmp, "train", parts.train, index, cfg.image_size, illum)
            val_files, _ = _write_part(tmp, "val", parts.val, index, cfg.image_size, illum)
            manifest = {
                "format": FORMAT_VERSION, "root": str(cfg.root), "split": parts.describe(),
                "classes": dataset.classes, "image_size": list(cfg.image_size),
                "n_train": len(parts.train), "n_val": len(parts.val),
                "train_files": train_files, "val_files": val_files,
                "channel_mean": (m[0] / m[2]).tolist(),
                "channel_std": np.sqrt(np.maximum(m[1] / m[2] - (m[0] / m[2]) ** 2, 1e-12)).tolist(),
                "options": cfg.model_dump(mode="json", exclude={"cache_dir", "augment", "normalize"}),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ShardSet.load(final)
