from __future__ import annotations

import pytest

from explorer.mcnn.bbbc021 import load_metadata
from explorer.mcnn.splits import loco_compounds, split
from mcnn_base.errors import ConfigError


def _ids(records):
    return {r.uid for r in records}


def test_random_split_is_stratified_seeded_and_disjoint(synth_tree):
    ds = load_metadata(synth_tree)
    a = split(ds, "random", val_fraction=0.25, seed=3)
    b = split(ds, "random", val_fraction=0.25, seed=3)
    c = split(ds, "random", val_fraction=0.25, seed=4)
    assert _ids(a.val) == _ids(b.val) and _ids(a.val) != _ids(c.val)
    assert not _ids(a.train) & _ids(a.val)
    assert _ids(a.train) | _ids(a.val) == _ids(ds.annotated)
    assert {r.moa for r in a.val} == set(ds.classes)


def test_loco_holds_out_one_compound(synth_tree):
    ds = load_metadata(synth_tree)
    compounds = loco_compounds(ds)
    assert "DMSO" not in compounds
    for fold, compound in enumerate(compounds):
        s = split(ds, "loco", fold=fold, seed=0)
        assert s.held_out == compound
        assert not _ids(s.train) & _ids(s.val)
        assert compound not in {r.compound for r in s.train}
        assert {r.compound for r in s.val} <= {compound, "DMSO"}
        assert any(r.compound == "DMSO" for r in s.val)
        assert _ids(s.train) | _ids(s.val) == _ids(ds.annotated)


def test_loco_fold_out_of_range(synth_tree):
    ds = load_metadata(synth_tree)
    with pytest.raises(ConfigError, match="loco fold must be in"):
        split(ds, "loco", fold=99)


def test_loco_refuses_the_only_compound_of_a_class(tree_copy):
    text = (tree_copy / "BBBC021_v1_moa.csv").read_text().splitlines()
    # relabel one compound into a class of its own
    out = [text[0]] + [line.replace('"Actin disruptors"', '"Solo"') if "cmpd-A01" in line
                       else line for line in text[1:]]
    (tree_copy / "BBBC021_v1_moa.csv").write_text("\n".join(out) + "\n")
    ds = load_metadata(tree_copy)
    fold = loco_compounds(ds).index("cmpd-A01")
    with pytest.raises(ConfigError, match="only compound of MoA 'Solo'"):
        split(ds, "loco", fold=fold)
