"""Cell-like synthetic phenotypes for the 12 BBBC021 MoA classes and DMSO.

Each class moves a few cell features away from the DMSO baseline (nucleus size and brightness,
micronuclei, tubulin fibres vs. diffuse tubulin, actin cortex vs. actin spots, cell size and
elongation, cell count). A compound's effect is its MoA's delta with a compound-specific jitter,
scaled by a Hill dose-response of the concentration, so low doses look almost like DMSO and a CNN
learns the classes gradually. Every cell also varies on its own, and plates carry their own uneven
illumination, so per-plate illumination correction has something to correct.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace

import numpy as np

__all__ = [
    "MOA_CLASSES",
    "Phenotype",
    "compound_phenotype",
    "dose_strength",
    "render_field",
    "seeded_rng",
]


@dataclass(frozen=True)
class Phenotype:
    cell_count: float = 1.0  # × baseline density
    cell_radius: float = 1.0  # × baseline radius
    elongation: float = 0.15  # cell ellipse aspect - 1
    nucleus_radius: float = 1.0  # × 0.45 cell radius
    nucleus_brightness: float = 1.0
    nucleus_ecc: float = 0.1
    micronuclei: float = 0.0  # expected count per cell
    actin_ring: float = 0.6
    actin_fill: float = 0.3
    actin_spots: float = 0.0  # expected bright actin puncta per cell (/4)
    tubulin_fibres: float = 1.0
    tubulin_length: float = 1.0  # × cell radius
    tubulin_width: float = 1.0
    tubulin_diffuse: float = 0.2
    clustering: float = 0.0  # 0 = uniform positions, 1 = tight colonies
    intensity: float = 1.0  # global gain of all channels


BASE = Phenotype()

# Deltas at full effect (added to BASE). Classes share features, so no single feature separates them.
_DELTAS: dict[str, dict[str, float]] = {
    "Actin disruptors": {"actin_ring": -0.45, "actin_spots": 1.2, "actin_fill": -0.1},
    "Aurora kinase inhibitors": {"nucleus_radius": 0.55, "cell_count": -0.4, "cell_radius": 0.3},
    "Cholesterol-lowering": {"actin_fill": 0.3, "cell_radius": 0.2, "tubulin_length": 0.3},
    "DMSO": {},
    "DNA damage": {"micronuclei": 2.5, "nucleus_brightness": 0.4},
    "DNA replication": {"nucleus_radius": 0.3, "nucleus_brightness": -0.3, "cell_count": -0.3},
    "Eg5 inhibitors": {"elongation": -0.12, "nucleus_brightness": 0.7, "nucleus_radius": -0.3,
                       "tubulin_length": -0.55},
    "Epithelial": {"clustering": 0.9, "cell_radius": 0.15, "actin_ring": 0.45},
    "Kinase inhibitors": {"elongation": 0.6, "tubulin_length": 0.35},
    "Microtubule destabilizers": {"tubulin_fibres": -0.8, "tubulin_diffuse": 0.7,
                                  "elongation": -0.1},
    "Microtubule stabilizers": {"tubulin_fibres": 0.9, "tubulin_width": 0.8,
                                "tubulin_diffuse": -0.1},
    "Protein degradation": {"nucleus_ecc": 0.35, "actin_spots": 0.6, "nucleus_brightness": -0.2},
    "Protein synthesis": {"cell_radius": -0.3, "intensity": -0.3, "cell_count": -0.2},
}
MOA_CLASSES = tuple(sorted(_DELTAS))


def seeded_rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def dose_strength(concentration: float, ec50: float, hill: float = 1.5) -> float:
    """Hill response in [0, 1): 0 at no dose, 0.5 at ``ec50``."""
    if concentration <= 0:
        return 0.0
    return float(concentration**hill / (concentration**hill + ec50**hill))


def compound_phenotype(moa: str | None, compound: str, strength: float, seed: int) -> Phenotype:
    """Return the phenotype of ``compound`` (of class ``moa``) at a dose of the given strength.

    Unannotated compounds (``moa=None``) get a stable random mix of two classes' effects.
    """
    rng = seeded_rng("compound", seed, compound)
    if moa is None:
        picks = rng.choice([m for m in MOA_CLASSES if m != "DMSO"], size=2, replace=False)
        delta: dict[str, float] = {}
        for m in picks:
            for k, v in _DELTAS[m].items():
                delta[k] = delta.get(k, 0.0) + 0.5 * v
    else:
        delta = dict(_DELTAS[moa])
    values = {}
    for f in fields(Phenotype):
        d = delta.get(f.name, 0.0) * float(1.0 + 0.2 * rng.standard_normal())
        values[f.name] = getattr(BASE, f.name) + strength * d
    return replace(BASE, **values)


def _cell_positions(rng: np.random.Generator, n: int, h: int, w: int, clustering: float
                    ) -> np.ndarray:
    uniform = rng.uniform((0, 0), (h, w), size=(n, 2))
    if clustering <= 0.05 or n < 2:
        return uniform
    centres = rng.uniform((0, 0), (h, w), size=(max(1, n // 6), 2))
    near = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.08 * min(h, w), (n, 2))
    mix = rng.random(n) < min(1.0, clustering)
    out = np.where(mix[:, None], near, uniform)
    return np.clip(out, 0, (h - 1, w - 1))


def _add(canvas: np.ndarray, y0: int, x0: int, patch: np.ndarray) -> None:
    h, w = canvas.shape
    ph, pw = patch.shape
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + ph), min(w, x0 + pw)
    if ye > ys and xe > xs:
        canvas[ys:ye, xs:xe] += patch[ys - y0 : ye - y0, xs - x0 : xe - x0]


def render_field(pheno: Phenotype, height: int, width: int, rng: np.random.Generator,
                 plate_rng: np.random.Generator) -> np.ndarray:
    """Render one field of view as float32 H×W×3 (DAPI, Tubulin, Actin), roughly in [0, 1.5]."""
    unit = min(height, width) / 12.0
    base_radius = max(3.0, unit)
    n_cells = max(1, int(rng.poisson(0.45 * height * width / (np.pi * base_radius**2)
                                      * max(pheno.cell_count, 0.1))))
    dapi = np.zeros((height, width), np.float32)
    tub = np.zeros_like(dapi)
    act = np.zeros_like(dapi)
    for cy, cx in _cell_positions(rng, n_cells, height, width, pheno.clustering):
        jitter = lambda s=0.15: float(np.exp(s * rng.standard_normal()))  # noqa: E731
        rc = base_radius * max(pheno.cell_radius, 0.3) * jitter()
        half = int(np.ceil(2.2 * rc)) + 1
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u, v = c * xx + s * yy, -s * xx + c * yy
        aspect = 1.0 + max(pheno.elongation, 0.0) * jitter(0.3)
        r_cell = np.sqrt((u / (rc * np.sqrt(aspect))) ** 2 + (v * np.sqrt(aspect) / rc) ** 2)
        body = 1.0 / (1.0 + np.exp((r_cell - 1.0) * 8.0))
        # nucleus
        rn = 0.45 * rc * max(pheno.nucleus_radius, 0.2) * jitter(0.1)
        e = 1.0 + max(pheno.nucleus_ecc, 0.0)
        r_nuc = (u / (rn * e)) ** 2 + (v * e / rn) ** 2
        nucleus = np.exp(-r_nuc * 1.5) * max(pheno.nucleus_brightness, 0.1) * jitter(0.15)
        for _ in range(rng.poisson(max(pheno.micronuclei, 0.0))):
            my, mx = rng.normal(0, 0.8 * rc, 2)
            nucleus += 0.8 * np.exp(-((yy - my) ** 2 + (xx - mx) ** 2) / (0.12 * rn) ** 2 / 2)
        # actin: cortex ring + fill + puncta
        actin = body * max(pheno.actin_fill, 0.0) + max(pheno.actin_ring, 0.0) * np.exp(
            -(((r_cell - 0.92) / 0.12) ** 2))
        for _ in range(rng.poisson(4 * max(pheno.actin_spots, 0.0))):
            sy, sx = rng.normal(0, 0.5 * rc, 2)
            actin += 1.2 * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (0.1 * rc + 0.5) ** 2 / 2)
        # tubulin: radial fibres + diffuse body
        tubulin = body * max(pheno.tubulin_diffuse, 0.0)
        n_fib = 8
        length = rc * max(pheno.tubulin_length, 0.15)
        width_px = max(0.6, 0.06 * rc * max(pheno.tubulin_width, 0.2))
        for phi in rng.uniform(0, 2 * np.pi, n_fib):
            dx, dy = np.cos(phi), np.sin(phi)
            along = np.clip(xx * dx + yy * dy, 0, length)
            dist2 = (xx - along * dx) ** 2 + (yy - along * dy) ** 2
            tubulin += (max(pheno.tubulin_fibres, 0.0) * 0.5) * np.exp(-dist2 / (2 * width_px**2))
        tubulin *= body
        y0, x0 = int(cy) - half, int(cx) - half
        _add(dapi, y0, x0, nucleus)
        _add(tub, y0, x0, tubulin)
        _add(act, y0, x0, actin)
    img = np.stack([dapi, tub, act], axis=-1) * max(pheno.intensity, 0.1)
    # plate-level uneven illumination (same for every field of a plate) and camera noise
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
    oy, ox, strength = plate_rng.uniform(0.2, 0.8), plate_rng.uniform(0.2, 0.8), \
        plate_rng.uniform(0.2, 0.45)
    vignette = 1.0 - strength * (((gy / height - oy) ** 2 + (gx / width - ox) ** 2) / 0.5)
    img = img * vignette[..., None] + 0.04
    img += rng.normal(0, 0.015, img.shape).astype(np.float32)
    return np.clip(img, 0, None).astype(np.float32)
