from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from explorer.mcnn.bbbc021 import IMAGE_CSV, MOA_CSV, load_metadata, read_channels
from mcnn_base.errors import DataError
from tests.conftest import real_metadata_dir, requires_real_metadata


def _rewrite(path: Path, transform) -> None:
    rows = list(csv.reader(path.open(newline="")))
    rows = transform(rows)
    with path.open("w", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_MINIMAL).writerows(rows)


def test_synthetic_tree_loads_with_labels(synth_tree):
    ds = load_metadata(synth_tree, check_files=True)
    assert ds.classes[0] == "Actin disruptors" and "DMSO" in ds.classes
    assert len(ds.classes) == 5
    assert len(ds.annotated) == len(ds.images) == 200
    img = read_channels(ds.annotated[0])
    assert img.shape == (64, 80, 3) and img.dtype == np.uint16
    for r in ds.images[:8]:
        assert r.paths[0].parent.parent.name.startswith("Week")
        assert r.paths[0].name.startswith(f"{r.well}_s") and "_w1" in r.paths[0].name
        assert "_w2" in r.paths[1].name and "_w4" in r.paths[2].name


def test_drop_dmso(synth_tree):
    ds = load_metadata(synth_tree, drop_dmso=True)
    assert "DMSO" not in ds.classes and len(ds.classes) == 4
    assert all(r.moa != "DMSO" for r in ds.annotated)


def test_concentration_join_ignores_number_format_and_quotes(tree_copy):
    # write the image table's concentrations as 3 -> "3.0000" and quote every field
    def reformat(rows):
        head, body = rows[0], rows[1:]
        i = head.index("Image_Metadata_Concentration")
        for r in body:
            r[i] = f"{float(r[i]):.4f}"
        return [head, *body]

    _rewrite(tree_copy / IMAGE_CSV, reformat)
    text = (tree_copy / MOA_CSV).read_text().replace(".000000", "")
    (tree_copy / MOA_CSV).write_text(text)
    ds = load_metadata(tree_copy)
    assert len(ds.annotated) == 200


def test_missing_column_is_named(tree_copy):
    _rewrite(tree_copy / IMAGE_CSV, lambda rows: [[c for j, c in enumerate(r)
                                                   if j != rows[0].index("Replicate")]
                                                  for r in rows])
    with pytest.raises(DataError, match=r"missing column.*Replicate"):
        load_metadata(tree_copy)


def test_missing_csv(tree_copy):
    (tree_copy / MOA_CSV).unlink()
    with pytest.raises(DataError, match=r"missing BBBC021_v1_moa\.csv"):
        load_metadata(tree_copy)


def test_missing_tiff_is_named(tree_copy):
    ds = load_metadata(tree_copy)
    victim = ds.annotated[3].paths[1]
    victim.unlink()
    with pytest.raises(DataError, match=f"missing TIFF .*{re.escape(victim.name)}"):
        load_metadata(tree_copy, check_files=True)
    with pytest.raises(DataError, match="missing TIFF"):
        read_channels(ds.annotated[3])


def test_unknown_compound_in_moa_csv(tree_copy):
    with (tree_copy / MOA_CSV).open("a") as fh:
        fh.write('"nonexistium",1.000000,"Actin disruptors"\n')
    with pytest.raises(DataError, match="unknown compound 'nonexistium'"):
        load_metadata(tree_copy)


def test_bad_concentration_is_named(tree_copy):
    with (tree_copy / MOA_CSV).open("a") as fh:
        fh.write('"cmpd-A01",lots,"Actin disruptors"\n')
    with pytest.raises(DataError, match="concentration 'lots' is not a number"):
        load_metadata(tree_copy)


def test_broken_csv_row(tree_copy):
    with (tree_copy / IMAGE_CSV).open("a") as fh:
        fh.write("1,2,3\n")
    with pytest.raises(DataError, match="wrong number of fields"):
        load_metadata(tree_copy)


def test_wrong_tiff_shape(tree_copy):
    import tifffile

    ds = load_metadata(tree_copy)
    tifffile.imwrite(ds.annotated[0].paths[2], np.zeros((10, 10, 3), np.uint16))
    with pytest.raises(DataError, match="expected one 2-D greyscale plane"):
        read_channels(ds.annotated[0])


@requires_real_metadata
def test_real_metadata_join():
    ds = load_metadata(real_metadata_dir())
    summary = ds.summary()
    assert summary["images"] == 13200
    assert summary["classes"] == 13
    assert summary["compound_concentration_pairs"] == 104  # 103 + DMSO
    assert summary["compounds"] == 39  # 38 + DMSO
    assert summary["plates"] == 55
    per_class = summary["images_per_class"]
    assert isinstance(per_class, dict)
    assert per_class["DMSO"] == 1320
    assert sum(per_class.values()) == summary["annotated_images"]
