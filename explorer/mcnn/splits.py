"""Train/validation splits of the annotated BBBC021 images.

* ``random``: image-level, stratified by class, seeded. ``val_fraction`` of each class (at least
  one image when the class has two or more) goes to validation.
* ``loco`` (leave-one-compound-out, Ljosa 2013): fold ``k`` holds out every image of the ``k``-th
  compound in sorted order of the annotated compounds other than DMSO. DMSO has no compound to hold
  out, so its images are split at random (seeded, ``val_fraction``) when DMSO is a class. The
  held-out compound's MoA must still have another compound in training, otherwise the fold is
  refused: it would test a class the model never saw.

No image is ever in both parts; :func:`split` checks it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from explorer.mcnn.bbbc021 import DMSO, Dataset, ImageRecord
from mcnn_base.errors import ConfigError

__all__ = ["Split", "loco_compounds", "split"]

Protocol = Literal["random", "loco"]


@dataclass(frozen=True)
class Split:
    protocol: str
    train: list[ImageRecord]
    val: list[ImageRecord]
    held_out: str | None = None

    def describe(self) -> str:
        if self.protocol == "loco":
            return f"loco(held_out={self.held_out})"
        return "random"


def loco_compounds(dataset: Dataset) -> list[str]:
    """Return the compounds a LOCO fold index refers to, in fold order."""
    return sorted({r.compound for r in dataset.annotated if r.compound != DMSO})


def _random_part(records: list[ImageRecord], val_fraction: float, rng: random.Random
                 ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_class[r.moa or ""].append(r)
    train: list[ImageRecord] = []
    val: list[ImageRecord] = []
    for moa in sorted(by_class):
        group = sorted(by_class[moa], key=lambda r: r.uid)
        rng.shuffle(group)
        n_val = round(len(group) * val_fraction)
        if len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def split(
    dataset: Dataset,
    protocol: Protocol = "random",
    *,
    val_fraction: float = 0.2,
    fold: int = 0,
    seed: int = 0,
) -> Split:
    """Split ``dataset.annotated`` into train and validation.

    Raises:
        ConfigError: an unknown protocol, a bad fraction, or a fold out of range / untestable.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction=}")
    records = dataset.annotated
    rng = random.Random(seed)
    held_out = None
    if protocol == "random":
        train, val = _random_part(records, val_fraction, rng)
    elif protocol == "loco":
        compounds = loco_compounds(dataset)
        if not 0 <= fold < len(compounds):
            raise ConfigError(
                f"loco fold must be in [0, {len(compounds) - 1}] ({len(compounds)} compounds), "
                f"got {fold=}"
            )
        held_out = compounds[fold]
        moa = next(r.moa for r in records if r.compound == held_out)
        if not any(r.moa == moa and r.compound != held_out for r in records):
            raise ConfigError(
                f"loco fold {fold} holds out {held_out!r}, the only compound of MoA {moa!r}: "
                "that class would have no training image"
            )
        val = [r for r in records if r.compound == held_out]
        train = [r for r in records if r.compound not in (held_out, DMSO)]
        dmso_train, dmso_val = _random_part(
            [r for r in records if r.compound == DMSO], val_fraction, rng
        )
        train += dmso_train
        val += dmso_val
    else:
        raise ConfigError(f"split protocol must be 'random' or 'loco', got {protocol!r}")
    train_ids = {r.uid for r in train}
    leaked = [r.uid for r in val if r.uid in train_ids]
    if leaked:  # pragma: no cover - guarded by construction
        raise AssertionError(f"images in both train and validation: {leaked[:5]}")
    if not train or not val:
        raise ConfigError(
            f"split {protocol!r} left {len(train)} training and {len(val)} validation images; "
            "both must be non-empty"
        )
    return Split(protocol=protocol, train=train, val=val, held_out=held_out)
