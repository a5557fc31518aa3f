"""Frozen workloads: the synthetic data, space, target and epochs a demo or benchmark runs on.

A workload is versioned: every benchmark record carries its id, and a change to any field is a
new id (the old one stays, so old records keep their meaning). Both are synthetic stand-ins for
BBBC021 (same tree layout, cell-like phenotypes; :mod:`explorer.mcnn.synth`), sized so that the
learning curves rise well above chance on this 2-core class of machine, with a validation set
where one image is at most 0.25 accuracy points. Figures measured on them are labelled
"synthetic stand-in".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from explorer.mcnn.synth import SynthOptions, synthesize

__all__ = ["WORKLOADS", "Workload"]

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


@dataclass(frozen=True)
class Workload:
    id: str
    images: int  # fields of view; 20 % go to validation (the random split's default)
    tiff_size: tuple[int, int]  # as written
    moas: int  # MoA classes besides DMSO (classes = moas + 1)
    seed: int  # generator seed
    space: Path  # its search space (the base sets the training image size and max epochs)
    target_accuracy: float
    skip_weakest_doses: int = 0  # SynthOptions.skip_weakest_doses

    @property
    def classes(self) -> int:
        return self.moas + 1

    def synthesize(self, root: Path) -> Path:
        """Write the workload's tree at ``root`` (deterministic for the workload)."""
        return synthesize(root, SynthOptions(size=self.tiff_size, images=self.images,
                                             moas=self.moas, seed=self.seed,
                                             skip_weakest_doses=self.skip_weakest_doses))

    @property
    def val_images(self) -> int:
        """The nominal validation count, a fifth of the images. The split rounds each class's fifth
        on its own, so its count can differ by a few (demo-v1: 401); the benchmarks use this
        figure for the training count their runs are planned with."""
        return self.images // 5

    def describe(self) -> str:
        # the split (explorer.mcnn.splits) rounds each class's fifth, so the counts are its own
        return (f"{self.id}: {self.images} synthetic images (a fifth of each class for "
                f"validation), {self.classes} classes, "
                f"{self.tiff_size[0]}×{self.tiff_size[1]} TIFFs, target {self.target_accuracy}, "
                f"space {self.space.name}")


WORKLOADS = {w.id: w for w in (
    # make demo: ~1 min per trial here, so a 5-trial study (baseline included) fits 10 minutes
    Workload("demo-v1", images=2000, tiff_size=(64, 80), moas=3, seed=0,
             space=SPACES / "demo.yaml", target_accuracy=0.7),
    # the search benchmarks (bench/): up to 12 epochs, about 2 minutes a run to max epochs here
    Workload("bench-v1", images=2400, tiff_size=(64, 80), moas=3, seed=1,
             space=SPACES / "bench.yaml", target_accuracy=0.75),
    # bench-v1 had too little signal (BENCHMARKS §5): more data, a 1,000-image validation split
    # evaluated twice an epoch, fewer epochs
    Workload("bench-v2", images=5000, tiff_size=(64, 80), moas=3, seed=2,
             space=SPACES / "bench_v2.yaml", target_accuracy=0.8),
    # bench-v2's seeds differed mostly on the weakest dose, a third of EC50, next to DMSO
    # (BENCHMARKS §5): without it, runs settle at 0.92-0.94, so the target sits at 0.9
    Workload("bench-v3", images=3750, tiff_size=(64, 80), moas=3, seed=2,
             space=SPACES / "bench_v3.yaml", target_accuracy=0.9, skip_weakest_doses=1),
    # bench-v3 with every evaluation on a moving average of the weights (horizon 0.5 epoch): the
    # raw weights' accuracy jumped between evaluations (BENCHMARKS §5); same data, target, grid
    Workload("bench-v4", images=3750, tiff_size=(64, 80), moas=3, seed=2,
             space=SPACES / "bench_v4.yaml", target_accuracy=0.9, skip_weakest_doses=1),
)}
