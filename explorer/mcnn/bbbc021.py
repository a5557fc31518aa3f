"""Read a BBBC021 v1 tree unchanged: ``BBBC021_v1_image.csv``, ``BBBC021_v1_moa.csv`` and the plate
folders ``<PathName>/<FileName>``.

MoA labels are joined on (compound, concentration as a float): quoted fields are unquoted and
``3.000000`` matches ``3``. Only images whose pair is in the MoA table carry a label. Classes are
the sorted MoA names (12 MoA + ``DMSO`` = 13), or 12 with ``drop_dmso``.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from mcnn_base.errors import DataError

__all__ = [
    "CHANNELS",
    "IMAGE_COLUMNS",
    "IMAGE_CSV",
    "MOA_COLUMNS",
    "MOA_CSV",
    "Dataset",
    "ImageRecord",
    "check_images",
    "conc_key",
    "load_metadata",
    "read_channels",
]

IMAGE_CSV = "BBBC021_v1_image.csv"
MOA_CSV = "BBBC021_v1_moa.csv"
CHANNELS = ("DAPI", "Tubulin", "Actin")
IMAGE_COLUMNS = (
    "TableNumber", "ImageNumber",
    "Image_FileName_DAPI", "Image_PathName_DAPI",
    "Image_FileName_Tubulin", "Image_PathName_Tubulin",
    "Image_FileName_Actin", "Image_PathName_Actin",
    "Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Replicate",
    "Image_Metadata_Compound", "Image_Metadata_Concentration",
)
MOA_COLUMNS = ("compound", "concentration", "moa")
DMSO = "DMSO"


def conc_key(value: str | float, *, where: str = "") -> float:
    """Normalise a concentration so ``'3.000000'``, ``'3'`` and ``3.0`` compare equal."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}concentration {value!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise DataError(f"{where}concentration {value!r} must be a finite number >= 0")
    return float(f"{x:.9g}")


@dataclass(frozen=True)
class ImageRecord:
    """One field of view: three single-channel TIFFs and its metadata.

    ``ImageNumber`` restarts in every ``TableNumber``; :attr:`uid` combines both into one key.
    """

    image_number: int
    plate: str
    well: str
    replicate: int
    compound: str
    concentration: float
    moa: str | None
    paths: tuple[Path, Path, Path]  # DAPI, Tubulin, Actin
    table: int = 0

    @property
    def uid(self) -> int:
        return self.table * 1_000_000 + self.image_number


@dataclass
class Dataset:
    """Everything the two CSVs say, with labels joined."""

    root: Path
    images: list[ImageRecord]
    moa_of: dict[tuple[str, float], str]
    classes: list[str] = field(default_factory=list)

    @property
    def annotated(self) -> list[ImageRecord]:
        return [r for r in self.images if r.moa is not None and r.moa in self.class_index]

    @property
    def class_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def summary(self) -> dict[str, object]:
        """Counts for ``mcnn-explore data summary`` (keys documented in docs/DATA.md)."""
        annotated = self.annotated
        per_class = Counter(r.moa for r in annotated)
        return {
            "root": str(self.root),
            "images": len(self.images),
            "annotated_images": len(annotated),
            "classes": len(self.classes),
            "compounds": len({r.compound for r in annotated}),
            "compound_concentration_pairs": len({(r.compound, r.concentration) for r in annotated}),
            "plates": len({r.plate for r in self.images}),
            "images_per_class": {c: per_class.get(c, 0) for c in self.classes},
        }


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"missing {path.name}: expected it at {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected columns "
                    f"{', '.join(required)}"
                )
            rows = []
            for lineno, row in enumerate(reader, start=2):
                if None in row or any(row.get(c) is None for c in required):
                    raise DataError(f"{path}:{lineno}: wrong number of fields")
                rows.append({k.strip(): (v or "").strip() for k, v in row.items()})
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 CSV file ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    return rows


def load_metadata(
    root: str | Path,
    *,
    drop_dmso: bool = False,
    check_files: bool = False,
) -> Dataset:
    """Read both CSVs of a BBBC021 tree and join the MoA labels.

    Args:
        root: the folder holding the two CSVs and the ``WeekN/...`` plate folders.
        drop_dmso: leave DMSO out of the classes (12 classes instead of 13).
        check_files: fail now if any annotated image's TIFF is missing.

    Raises:
        DataError: a missing CSV or column, a bad concentration, a MoA row whose compound never
            appears in the image table, or (with ``check_files``) a missing TIFF.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {str(root)!r} is not a folder")
    moa_path = root / MOA_CSV
    moa_rows = _read_csv(moa_path, MOA_COLUMNS)
    image_path = root / IMAGE_CSV
    image_rows = _read_csv(image_path, IMAGE_COLUMNS)

    moa_of: dict[tuple[str, float], str] = {}
    for lineno, row in enumerate(moa_rows, start=2):
        key = (row["compound"], conc_key(row["concentration"], where=f"{moa_path}:{lineno}: "))
        if not row["moa"]:
            raise DataError(f"{moa_path}:{lineno}: empty moa for compound {row['compound']!r}")
        if key in moa_of and moa_of[key] != row["moa"]:
            raise DataError(f"{moa_path}:{lineno}: {key} is labelled twice differently")
        moa_of[key] = row["moa"]

    images: list[ImageRecord] = []
    for lineno, row in enumerate(image_rows, start=2):
        where = f"{image_path}:{lineno}: "
        try:
            number = int(row["ImageNumber"])
            table = int(row["TableNumber"] or 0)
            replicate = int(row["Replicate"] or 0)
        except ValueError:
            raise DataError(f"{where}TableNumber/ImageNumber/Replicate must be integers, got "
                            f"{row['TableNumber']!r}/{row['ImageNumber']!r}/{row['Replicate']!r}"
                            ) from None
        compound = row["Image_Metadata_Compound"]
        conc = conc_key(row["Image_Metadata_Concentration"], where=where)
        dapi, tub, act = (
            root / row[f"Image_PathName_{ch}"] / row[f"Image_FileName_{ch}"] for ch in CHANNELS
        )
        images.append(ImageRecord(
            image_number=number, plate=row["Image_Metadata_Plate_DAPI"],
            well=row["Image_Metadata_Well_DAPI"], replicate=replicate, compound=compound,
            concentration=conc, moa=moa_of.get((compound, conc)),
            paths=(dapi, tub, act), table=table,
        ))
    numbers = Counter(r.uid for r in images)
    dupes = [n for n, c in numbers.items() if c > 1]
    if dupes:
        table, number = divmod(dupes[0], 1_000_000)
        raise DataError(f"{image_path}: TableNumber {table}, ImageNumber {number} appears "
                        f"{numbers[dupes[0]]} times")

    seen_pairs = {(r.compound, r.concentration) for r in images}
    seen_compounds = {r.compound for r in images}
    for compound, conc in moa_of:
        if compound not in seen_compounds:
            raise DataError(
                f"{moa_path}: unknown compound {compound!r}: no row of {IMAGE_CSV} names it "
                f"(compounds there: {len(seen_compounds)})"
            )
        if (compound, conc) not in seen_pairs:
            raise DataError(
                f"{moa_path}: compound {compound!r} at concentration {conc:g} appears in no row "
                f"of {IMAGE_CSV}"
            )
    classes = sorted({m for m in moa_of.values() if not (drop_dmso and m == DMSO)})
    dataset = Dataset(root=root, images=images, moa_of=moa_of, classes=classes)
    if check_files:
        for record in dataset.annotated:
            for p in record.paths:
                if not p.is_file():
                    raise DataError(f"missing TIFF {p} (ImageNumber {record.image_number})")
    return dataset


def read_channels(record: ImageRecord) -> np.ndarray:
    """Read the three channel TIFFs of ``record`` and stack them into an H×W×3 array.

    Raises:
        DataError: a missing or unreadable TIFF, a non-2-D or non-numeric image, NaN or infinite
            pixels, or channels of different shape.
    """
    planes = []
    for channel, path in zip(CHANNELS, record.paths, strict=True):
        if not path.is_file():
            raise DataError(f"missing TIFF {path} ({channel}, ImageNumber {record.image_number})")
        try:
            plane = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise DataError(f"cannot read TIFF {path}: {exc}") from None
        _check_plane(path, plane.shape, plane.dtype)
        if plane.dtype.kind == "f" and not np.isfinite(plane).all():
            raise DataError(f"TIFF {path} has NaN or infinite pixels; expected finite intensities")
        planes.append(plane)
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise DataError(
            f"channels of ImageNumber {record.image_number} differ in shape: {sorted(shapes)}"
        )
    return np.stack(planes, axis=-1)


def _check_plane(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if len(shape) != 2:
        raise DataError(f"TIFF {path} has shape {shape}; expected one 2-D greyscale plane")
    if dtype.kind not in "uif":
        raise DataError(f"TIFF {path} has dtype {dtype}; expected integer or float pixels")


def _tiff_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a TIFF's first image series, from its header (no pixel is decoded)."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    except FileNotFoundError:
        raise DataError(f"missing TIFF {path}") from None
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise DataError(f"cannot read TIFF {path}: {exc}") from None


def check_images(records: list[ImageRecord]) -> tuple[int, int]:
    """Check every TIFF header of ``records``: one 2-D integer/float plane, all the same size.

    Cheap (headers only), so a bad file is reported before any image is processed.

    Returns:
        The common (height, width).

    Raises:
        DataError: a missing or unreadable TIFF, a multi-channel or non-numeric one, or one whose
            size differs from the tree's (named with the first image, the reference).
    """
    size: tuple[int, ...] | None = None
    first: Path | None = None
    for record in records:
        for path in record.paths:
            shape, dtype = _tiff_header(path)
            _check_plane(path, shape, dtype)
            if size is None:
                size, first = shape, path
            elif shape != size:
                raise DataError(
                    f"TIFF {path} is {shape[0]}x{shape[1]} pixels, but {first} (the first image) "
                    f"is {size[0]}x{size[1]}; expected every TIFF of the tree to have the same size"
                )
    if size is None:
        raise DataError("no image to check: the split holds no annotated image")
    return size[0], size[1]
