from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.cli import build_parser, main
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


def test_help_lists_every_command_without_importing_its_module():
    """The parser imports a subcommand's module only when the command line names it (Optuna and
    MLflow take seconds to import); the help it prints is the same as with every module."""
    assert build_parser([]).format_help() == build_parser().format_help()
    code = ("import sys; from explorer.cli import build_parser; build_parser(['--help']); "
            "print(sorted({'optuna', 'mlflow', 'plotly', 'explorer.cli_study', 'explorer.demo'}"
            " & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code],  # noqa: S603
                          capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "tiny.yaml"


# More bad input — malformed YAML, impossible spaces, a hostfile naming 'a;rm -rf /', data roots
# without CSVs, bad TIFFs, damaged shards, unreachable storages — goes through a subprocess in
# tests/faults/test_bad_input.py.
@pytest.mark.parametrize(("extra", "message"), [
    (["--study", "bad;name"], "--study 'bad;name': expected letters"),
    (["--trials", "0"], "--trials must be > 0, got 0"),
    (["--target-accuracy", "1.5"], "--target-accuracy must be in (0, 1], got 1.5"),
    (["--space", "/nonexistent/space.yaml"], "search space '/nonexistent/space.yaml' does not"),
    (["--data", "/nonexistent/tree"], "--data '/nonexistent/tree': no BBBC021_v1_image.csv"),
    (["--target-accuracy", None], "a study needs a target accuracy"),
])
def test_study_launch_rejects_bad_input_before_anything_runs(synth_tree, tmp_path, capsys,
                                                             monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    args = {"--space": str(SPACE), "--data": str(synth_tree), "--study": "s",
            "--target-accuracy": "0.5"}
    flag, value = extra
    if value is None:
        del args[flag]
    else:
        args[flag] = value
    argv = ["study", "launch"] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
