from __future__ import annotations

import json
import subprocess
import sys

from explorer.cli import main
from tests.conftest import real_metadata_dir, requires_real_metadata


def test_data_summary_json(synth_tree, capsys):
    assert main(["data", "summary", str(synth_tree), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 200 and out["classes"] == 5
    assert set(out) >= {"images", "annotated_images", "classes", "compounds",
                        "compound_concentration_pairs", "plates", "images_per_class"}


@requires_real_metadata
def test_metadata_only_summary_of_real_set(capsys):
    assert main(["data", "summary", str(real_metadata_dir()), "--metadata-only"]) == 0
    out = capsys.readouterr().out
    assert "13200" in out and "Microtubule stabilizers" in out


def test_user_errors_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "explorer.cli", "data", "summary", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: data root") and "Traceback" not in proc.stderr


def test_synth_cli(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["data", "synth", str(out), "--size", "16x20", "--images", "8", "--moas",
                 "1"]) == 0
    assert (out / "BBBC021_v1_image.csv").is_file()
    assert main(["data", "synth", str(tmp_path / "u"), "--size", "big"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
