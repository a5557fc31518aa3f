"""Write synthetic BBBC021-layout trees (the embedded default dataset).

Two modes, same layout as the real set (``WeekN/WeekN_PPPPP/{Well}_s{site}_w{1,2,4}<UUID>.tif``,
16-bit greyscale TIFFs, ``BBBC021_v1_image.csv`` + ``BBBC021_v1_moa.csv`` with the real columns):

* :func:`synthesize`: invented compounds, ``compounds_per_moa`` per MoA at ``concentrations``
  doses each, plus DMSO wells; deterministic for a seed.
* :func:`synthesize_from_metadata`: the real metadata tables, for the first ``plates`` plates;
  TIFFs at exactly the paths the real ``BBBC021_v1_image.csv`` lists; both CSVs are copied.
"""

from __future__ import annotations

import csv
import shutil
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from explorer.mcnn.bbbc021 import (
    IMAGE_COLUMNS,
    IMAGE_CSV,
    MOA_CSV,
    ImageRecord,
    load_metadata,
)
from explorer.mcnn.phenotypes import (
    MOA_CLASSES,
    compound_phenotype,
    dose_strength,
    render_field,
    seeded_rng,
)
from mcnn_base.errors import ConfigError, DataError

__all__ = ["SynthOptions", "parse_size", "synthesize", "synthesize_from_metadata"]

WELL_ROWS = "BCDEFG"
WELL_COLS = range(2, 12)
WELLS_PER_PLATE = len(WELL_ROWS) * len(WELL_COLS)
PEAK = 5000.0  # uint16 value of intensity 1.0 (the real images are 12-bit-ish)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``'HxW'`` (e.g. ``'64x80'``) into ``(height, width)``."""
    try:
        h, w = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"image size must look like HEIGHTxWIDTH (e.g. 64x80), got {text!r}") \
            from None
    if h < 8 or w < 8:
        raise ConfigError(f"image size must be at least 8x8, got {text!r}")
    return h, w


@dataclass(frozen=True)
class SynthOptions:
    size: tuple[int, int] = (64, 80)
    images: int = 624
    seed: int = 0
    compounds_per_moa: int = 2
    concentrations: int = 3
    sites: int = 4
    workers: int = 2
    moas: int = 12  # how many of the 12 MoA classes get compounds (DMSO always)
    # wells skip the k weakest doses of every compound; the doses' strengths (EC50 from all of
    # them) stay as with every dose, so the images that remain look exactly as they would
    skip_weakest_doses: int = 0

    def __post_init__(self) -> None:
        for name in ("images", "compounds_per_moa", "concentrations", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.moas <= 12:
            raise ConfigError(f"moas must be in [1, 12], got {self.moas=}")
        if not 1 <= self.sites <= 4:
            raise ConfigError(f"sites must be in [1, 4], got {self.sites=}")
        if not 0 <= self.skip_weakest_doses < self.concentrations:
            raise ConfigError(f"skip_weakest_doses must be in [0, concentrations), got "
                              f"{self.skip_weakest_doses} with {self.concentrations} concentrations")


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4)).upper()


def _write_tiff(path: Path, plane: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, plane, photometric="minisblack")


def _render(record: ImageRecord, strength: float, size: tuple[int, int], seed: int) -> None:
    pheno = compound_phenotype(record.moa, record.compound, strength, seed)
    rng = seeded_rng("field", seed, record.uid)
    plate_rng = seeded_rng("plate", seed, record.plate)
    img = render_field(pheno, size[0], size[1], rng, plate_rng)
    planes = np.clip(img * PEAK, 0, 65535).astype(np.uint16)
    for c, path in enumerate(record.paths):
        _write_tiff(path, planes[..., c])


def _render_all(jobs: Iterable[tuple[ImageRecord, float]], size: tuple[int, int], seed: int,
                workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(_render, r, s, size, seed) for r, s in jobs]:
            future.result()


def _strengths(dataset_pairs: dict[str, list[float]]) -> dict[tuple[str, float], float]:
    """Dose strength per (compound, concentration): EC50 at the compound's geometric-mean dose."""
    out = {}
    for compound, concs in dataset_pairs.items():
        positive = [c for c in concs if c > 0]
        ec50 = float(np.exp(np.mean(np.log(positive)))) if positive else 1.0
        for c in concs:
            out[(compound, c)] = dose_strength(c, ec50)
    return out


def synthesize(out: str | Path, options: SynthOptions | None = None) -> Path:
    """Write a synthetic BBBC021-layout tree with invented compounds into ``out``."""
    opts = options or SynthOptions()
    out = Path(out)
    _prepare_out(out)
    rng = np.random.default_rng(opts.seed)
    doses = [round(0.1 * 3.0**k, 6) for k in range(opts.concentrations)]
    pairs: list[tuple[str, float, str]] = []
    moas = [c for c in MOA_CLASSES if c != "DMSO"][: opts.moas]
    for m_i, moa in enumerate(moas):
        for k in range(opts.compounds_per_moa):
            name = f"cmpd-{chr(ord('A') + m_i)}{k + 1:02d}"
            pairs += [(name, dose, moa) for dose in doses]
    n_dmso_wells = max(1, opts.compounds_per_moa * opts.concentrations)
    kept = set(doses[opts.skip_weakest_doses:])
    entries = [p for p in pairs if p[1] in kept] + [("DMSO", 0.0, "DMSO")] * n_dmso_wells
    n_wells = -(-opts.images // opts.sites)
    plate_ids = [int(x) for x in rng.choice(np.arange(20000, 60000), size=n_wells, replace=False)]
    rows: list[dict[str, object]] = []
    records: list[tuple[ImageRecord, float]] = []
    strengths = _strengths({c: sorted({d for cc, d, _ in pairs if cc == c}) for c, _, _ in pairs})
    number = 0
    for w in range(n_wells):
        compound, conc, moa = entries[w % len(entries)]
        plate_index = w // WELLS_PER_PLATE
        week = plate_index // 4 + 1
        plate = f"Week{week}_{plate_ids[plate_index]}"
        slot = w % WELLS_PER_PLATE
        well = f"{WELL_ROWS[slot // len(WELL_COLS)]}{WELL_COLS[slot % len(WELL_COLS)]:02d}"
        for site in range(1, opts.sites + 1):
            if number >= opts.images:
                break
            number += 1
            names = [f"{well}_s{site}_w{ch}{_uuid(rng)}.tif" for ch in (1, 2, 4)]
            path_name = f"Week{week}/{plate}"
            rows.append({
                "TableNumber": week, "ImageNumber": number,
                "Image_FileName_DAPI": names[0], "Image_PathName_DAPI": path_name,
                "Image_FileName_Tubulin": names[1], "Image_PathName_Tubulin": path_name,
                "Image_FileName_Actin": names[2], "Image_PathName_Actin": path_name,
                "Image_Metadata_Plate_DAPI": plate, "Image_Metadata_Well_DAPI": well,
                "Replicate": w // len(entries) + 1,
                "Image_Metadata_Compound": compound, "Image_Metadata_Concentration": conc,
            })
            rec = ImageRecord(number, plate, well, 1, compound, conc, moa,
                              (out / path_name / names[0], out / path_name / names[1],
                               out / path_name / names[2]), table=week)
            records.append((rec, strengths.get((compound, conc), 0.0)))
    with (out / IMAGE_CSV).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=IMAGE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with (out / MOA_CSV).open("w", newline="") as fh:
        fh.write('"compound",concentration,"moa"\n')
        used = {(str(r["Image_Metadata_Compound"]), r["Image_Metadata_Concentration"]) for r in rows}
        for compound, conc, moa in [*pairs, ("DMSO", 0.0, "DMSO")]:
            if (compound, conc) in used:  # too few images leave some pairs without a well
                fh.write(f'"{compound}",{conc:.6f},"{moa}"\n')
    _render_all(records, opts.size, opts.seed, opts.workers)
    return out


def synthesize_from_metadata(out: str | Path, metadata_dir: str | Path, *,
                             plates: int | None = 2, size: tuple[int, int] = (64, 80),
                             seed: int = 0, workers: int = 2) -> Path:
    """Write synthetic TIFFs at the exact paths the real ``BBBC021_v1_image.csv`` lists.

    Only the first ``plates`` plates (in CSV order; ``None`` = all 55) get images; both real CSVs
    are copied unchanged, so the loader sees the real table and must cope with missing plates
    only through its ``check_files`` option.
    """
    out = Path(out)
    metadata_dir = Path(metadata_dir)
    for name in (IMAGE_CSV, MOA_CSV):
        if not (metadata_dir / name).is_file():
            raise DataError(f"--from-metadata {metadata_dir}: missing {name}")
    if plates is not None and plates < 1:
        raise ConfigError(f"plates must be >= 1, got {plates=}")
    _prepare_out(out)
    for name in (IMAGE_CSV, MOA_CSV):
        shutil.copyfile(metadata_dir / name, out / name)
    dataset = load_metadata(out)
    order: list[str] = []
    for r in dataset.images:
        if r.plate not in order:
            order.append(r.plate)
    keep = set(order if plates is None else order[:plates])
    by_compound: dict[str, set[float]] = {}
    for r in dataset.images:
        by_compound.setdefault(r.compound, set()).add(r.concentration)
    strengths = _strengths({c: sorted(v) for c, v in by_compound.items()})
    jobs = [(r, strengths[(r.compound, r.concentration)])
            for r in dataset.images if r.plate in keep]
    _render_all(jobs, size, seed, workers)
    return out


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"output folder {str(out)!r} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
