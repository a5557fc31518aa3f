from __future__ import annotations

import hashlib

import numpy as np
import pytest

from explorer.mcnn import synth
from explorer.mcnn.bbbc021 import load_metadata, read_channels
from explorer.mcnn.synth import SynthOptions, synthesize, synthesize_from_metadata
from mcnn_base.errors import ConfigError
from tests.conftest import real_metadata_dir, requires_real_metadata


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    opts = SynthOptions(size=(32, 40), images=30, moas=2, seed=5)
    a = synthesize(tmp_path / "a", opts)
    b = synthesize(tmp_path / "b", opts)
    c = synthesize(tmp_path / "c", SynthOptions(size=(32, 40), images=30, moas=2, seed=6))
    assert _digest(a) == _digest(b) != _digest(c)


def test_phenotypes_depend_on_moa_and_dose(synth_tree):
    ds = load_metadata(synth_tree)
    mean: dict[tuple[str | None, float], list[np.ndarray]] = {}
    for r in ds.annotated:
        img = read_channels(r).astype(np.float64)
        mean.setdefault((r.moa, r.concentration), []).append(img.mean(axis=(0, 1)))
    dmso = np.mean(mean[("DMSO", 0.0)], axis=0)
    # the highest dose moves further from DMSO than the lowest, for most classes
    further = 0
    for moa in {m for m, _ in mean if m != "DMSO"}:
        doses = sorted(c for m, c in mean if m == moa)
        lo = np.abs(np.mean(mean[(moa, doses[0])], axis=0) - dmso).sum()
        hi = np.abs(np.mean(mean[(moa, doses[-1])], axis=0) - dmso).sum()
        further += hi > lo
    assert further >= 3


def test_refuses_non_empty_output(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        synthesize(tmp_path / "x", SynthOptions(images=4))
    assert (tmp_path / "x" / "f").read_text() == "keep me"


@requires_real_metadata
def test_from_metadata_uses_real_paths(tmp_path):
    out = synthesize_from_metadata(tmp_path / "real", real_metadata_dir(), plates=1,
                                   size=(32, 40))
    ds = load_metadata(out)
    first_plate = ds.images[0].plate
    on_plate = [r for r in ds.images if r.plate == first_plate]
    assert on_plate and all(all(p.is_file() for p in r.paths) for r in on_plate)
    assert ds.images[0].paths[0].relative_to(out).as_posix().startswith("Week4/Week4_27481/G10_s1_w1")
    assert not any(p.is_file() for r in ds.images if r.plate != first_plate for p in r.paths)
    assert read_channels(on_plate[0]).shape == (32, 40, 3)


def test_skipping_the_weakest_dose_leaves_the_other_doses_strengths_alone(tmp_path, monkeypatch):
    strengths: dict[str, dict[tuple[str, float], float]] = {}

    def capture(name):
        def render_all(jobs, size, seed, workers):  # record each image's strength, draw nothing
            strengths[name] = {(r.compound, r.concentration): s for r, s in jobs}
        return render_all

    for name, skip in (("full", 0), ("kept", 1)):
        monkeypatch.setattr(synth, "_render_all", capture(name))
        synth.synthesize(tmp_path / name, SynthOptions(size=(16, 20), images=48, moas=2, seed=3,
                                                       sites=1, skip_weakest_doses=skip))
    doses = {name: {c for (_, c) in v if c > 0} for name, v in strengths.items()}
    assert doses == {"full": {0.1, 0.3, 0.9}, "kept": {0.3, 0.9}}
    assert strengths["kept"] == {k: v for k, v in strengths["full"].items() if k[1] != 0.1}
    csv_doses = {float(line.split(",")[1]) for line in
                 (tmp_path / "kept" / "BBBC021_v1_moa.csv").read_text().splitlines()[1:]}
    assert 0.1 not in csv_doses


def test_skipping_every_dose_is_refused():
    with pytest.raises(ConfigError, match="skip_weakest_doses"):
        SynthOptions(concentrations=3, skip_weakest_doses=3)
