"""Preprocess a BBBC021 split once into TFRecord shards, cached by source and options.

Per image: read the three TIFFs → (optional) divide by the plate's illumination function →
per-channel percentile scaling (0.1/99.9 → [0, 1]) → area resize to ``image_size`` → uint8.
The cache key hashes both CSVs, the data root and every option that changes the bytes, so trials
that share data and options share shards. Concurrent builders (ranks, parallel trials) take a file
lock; the first builds into a temporary folder and renames it into place, the others reuse it.

Every TIFF header is checked first (one 2-D plane, the same size everywhere), so a bad file is named
before any image is processed. The manifest records each shard's size and SHA-256: a cache hit
checks the sizes (cheap, on every job's start-up), ``verify="full"`` (``mcnn-explore data
prepare``, run once by every ``study launch``) also the checksums, and a damaged cache — a missing,
truncated or altered shard, an unreadable manifest — is discarded and rebuilt.

Record layout (``tf.train.Example``): ``image`` (raw uint8 H×W×3 bytes), ``label`` (int64),
``image_number`` (int64).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from explorer.mcnn.bbbc021 import (
    IMAGE_CSV,
    MOA_CSV,
    ImageRecord,
    check_images,
    load_metadata,
    read_channels,
)
from explorer.mcnn.config import DataConfig
from explorer.mcnn.splits import split
from mcnn_base.errors import DataError

__all__ = ["ShardSet", "damage", "damaged_message", "default_cache_dir", "percentile_scale",
           "prepare_shards"]

FORMAT_VERSION = 3  # 2: the manifest records every shard's size and SHA-256; 3: shuffled order
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


def _read(record: ImageRecord, size: tuple[int, int]) -> np.ndarray:
    """The record's H×W×3 float32 image; its size must be the tree's (checked from the headers)."""
    img = read_channels(record).astype(np.float32)
    if img.shape[:2] != size:
        raise DataError(f"TIFF {record.paths[0]} is {img.shape[0]}x{img.shape[1]} pixels; expected "
                        f"{size[0]}x{size[1]} like the other images of the tree")
    return img


def _illumination_functions(records: list[ImageRecord], size: tuple[int, int]
                            ) -> dict[str, np.ndarray]:
    """Per plate: the smoothed mean image, normalised to mean 1 per channel."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        img = _read(r, size)
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
                size: tuple[int, int], illum: dict[str, np.ndarray] | None,
                source: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """Write one part; return its file names and per-channel [sum, sum of squares, count]."""
    import tensorflow as tf

    n_files = max(1, -(-len(records) // RECORDS_PER_SHARD))
    names = [f"{part}-{i:05d}-of-{n_files:05d}.tfrecord" for i in range(n_files)]
    writers = [tf.io.TFRecordWriter(str(out / n)) for n in names]
    moments = np.zeros((3, 3))
    try:
        for i, r in enumerate(records):
            img = _read(r, source)
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


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def damage(path: Path, *, full: bool = False) -> str | None:
    """What is wrong with the built cache at ``path``, or None when it is intact.

    Checks the manifest and every shard's size; with ``full`` also every shard's SHA-256.
    """
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        files: dict[str, dict[str, Any]] = manifest["files"]
        names = [*manifest["train_files"], *manifest["val_files"]]
        expected = {name: (int(files[name]["bytes"]), str(files[name]["sha256"]))
                    for name in names}
    except FileNotFoundError:
        return f"no {path / 'manifest.json'}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {path / 'manifest.json'} ({type(exc).__name__}: {exc})"
    for name, (size, digest) in expected.items():
        shard = path / name
        try:
            actual = shard.stat().st_size
        except OSError:
            return f"shard {shard} is missing"
        if actual != size:
            return f"shard {shard} has {actual} bytes, the manifest says {size}"
        if full and _sha256(shard) != digest:
            return f"shard {shard} does not match its SHA-256 checksum"
    return None


def damaged_message(path: Path, detail: str) -> str:
    """The one-line error of a job that read a damaged shard of the cache at ``path``."""
    return (f"shard cache {path} is damaged ({detail}); delete that folder, or run 'mcnn-explore "
            "data prepare' on this config (every study launch does): it checks each shard and "
            "rebuilds a damaged cache")


def _discard(final: Path) -> None:
    """Move a damaged cache out of the way (atomically), then delete it."""
    if not final.exists():
        return
    broken = final.with_name(f"{final.name}.damaged-{os.getpid()}")
    os.replace(final, broken)
    shutil.rmtree(broken, ignore_errors=True)


def prepare_shards(cfg: DataConfig, *, log: Any = None,
                   verify: Literal["size", "full"] = "size") -> ShardSet:
    """Return the shard cache for ``cfg``, building it first if needed (safe to call concurrently).

    A cache that fails the ``verify`` check (:func:`damage`) is rebuilt, with a message to ``log``.

    Raises:
        DataError / ConfigError: from the loader and the split (missing CSV, TIFF, bad fold ...).
    """
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    key = _cache_key(cfg)
    final = cache / key
    full = verify == "full"
    # hit: no CSV parsing on the job's start-up path
    if final.is_dir() and damage(final, full=full) is None:
        return ShardSet.load(final)
    dataset = load_metadata(cfg.root, drop_dmso=cfg.drop_dmso)
    parts = split(dataset, cfg.split.protocol, val_fraction=cfg.split.val_fraction,
                  fold=cfg.split.fold, seed=cfg.split.seed)
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem = damage(final, full=full) if final.is_dir() else None
        if final.is_dir() and problem is None:
            return ShardSet.load(final)
        if problem is not None and log:
            log(f"shard cache {final} is damaged ({problem}); rebuilding it")
        _discard(final)
        _build(cfg, dataset, parts, cache, key, log)
    return ShardSet.load(final)


def _build(cfg: DataConfig, dataset: Any, parts: Any, cache: Path, key: str, log: Any) -> None:
    """Write the shards of ``parts`` into ``cache/key`` (through a temporary folder)."""
    final = cache / key
    source = check_images(parts.train + parts.val)
    if log:
        log(f"building shards {final} ({len(parts.train)} train / {len(parts.val)} val)")
    tmp = cache / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        illum = (_illumination_functions(parts.train + parts.val, source)
                 if cfg.illumination_correction else None)
        index = dataset.class_index
        # training records in a seeded random order (the split lists them class by class), so
        # that a shuffle buffer smaller than a rank's share still mixes the classes
        order = sorted(parts.train, key=lambda r: r.uid)
        random.Random(f"shard-order-{cfg.split.seed}").shuffle(order)
        train_files, m = _write_part(tmp, "train", order, index, cfg.image_size, illum, source)
        val_files, _ = _write_part(tmp, "val", parts.val, index, cfg.image_size, illum, source)
        manifest = {
            "format": FORMAT_VERSION, "root": str(cfg.root), "split": parts.describe(),
            "classes": dataset.classes, "image_size": list(cfg.image_size),
            "n_train": len(parts.train), "n_val": len(parts.val),
            "train_files": train_files, "val_files": val_files,
            "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                      for name in [*train_files, *val_files]},
            "channel_mean": (m[0] / m[2]).tolist(),
            "channel_std": np.sqrt(np.maximum(m[1] / m[2] - (m[0] / m[2]) ** 2, 1e-12)).tolist(),
            "options": cfg.model_dump(mode="json", exclude={"cache_dir", "augment", "normalize"}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
