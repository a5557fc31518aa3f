"""Fault 8: bad input gets one clear ``error:`` line naming the bad value and what was expected,
exit code 2 and no traceback — through the real CLI, in a subprocess.

Covered elsewhere, not repeated here: the CLI's in-process checks of ``study launch`` flags (bad
study name, ``--trials 0``, a missing space file or data root, no target accuracy) in
tests/explorer_tests/test_cli.py, and the loaders' unit tests (tests/search_spaces_tests,
tests/explorer_tests/mcnn_tests, tests/launchers_tests/test_mpirun_argv.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from explorer.mcnn.bbbc021 import IMAGE_CSV, MOA_CSV, load_metadata
from tests.faults.conftest import REPO, assert_user_error, run_cli

TINY = REPO / "search_spaces" / "tiny.yaml"
SECRET = "s3cr3t-pw"
PG_URL = f"postgresql://mcnn:{SECRET}@127.0.0.1:1/nodb"  # nothing listens on port 1
PG_SHOWN = "postgresql://mcnn:***@127.0.0.1:1/nodb"


def _launch(cwd: Path, data: Path, *extra: str | Path):
    """``study launch`` of the tiny space (later flags in ``extra`` win) with run files in ``cwd``."""
    return run_cli("study", "launch", "--space", TINY, "--data", data, "--study", "s",
                   "--target-accuracy", "0.5", "--workdir", cwd / "runs", *extra, cwd=cwd)


def _nothing_written(cwd: Path) -> None:
    for name in ("optuna.db", "mlflow.db", "runs"):
        assert not (cwd / name).exists(), f"{name} was written before the error"


def _config(path: Path, root: Path, **extra: object) -> Path:
    data = extra.pop("data", {})
    assert isinstance(data, dict)
    path.write_text(json.dumps({"data": {"root": str(root), **data}, **extra}))
    return path


# -- 1. malformed YAML ----------------------------------------------------------------------------
def test_malformed_space_yaml(synth_tree, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("name: x\ndimensions:\n  peak_lr: {float: [0.01, 0.1}\n")
    proc = _launch(tmp_path, synth_tree, "--space", space)
    assert_user_error(proc, f"{space}:3", "invalid YAML")
    _nothing_written(tmp_path)


@pytest.mark.parametrize("command", [["data", "prepare"], ["train", "--no-mlflow"]])
def test_malformed_train_config_yaml(tmp_path, command):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("data: {root: /data\nper_worker_batch: [8\n")
    proc = run_cli(*command, "--config", cfg, cwd=tmp_path)
    assert_user_error(proc, f"{cfg}:2", "invalid YAML")


@pytest.mark.parametrize("kind", ["missing", "invalid"])
def test_a_bad_baseline_file_is_refused_before_anything_is_written(synth_tree, tmp_path, kind):
    baseline = tmp_path / "mine.yaml"
    if kind == "invalid":
        baseline.write_text("data: {root: /x}\nper_worker_batch: 0\n")
    proc = _launch(tmp_path, synth_tree, "--baseline", baseline)
    what = "no such file" if kind == "missing" else "per_worker_batch"
    assert_user_error(proc, f"--baseline {str(baseline)!r}", what)
    _nothing_written(tmp_path)


def test_confirm_refuses_a_zero_top_and_a_study_with_nothing_reached(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    proc = run_cli("study", "confirm", "--study", "s", "--storage", storage, "--top", "0",
                   cwd=tmp_path)
    assert_user_error(proc, "--top and --repeats must be >= 1, got --top 0")
    proc = run_cli("study", "confirm", "--study", "s", "--storage", storage, cwd=tmp_path)
    assert_user_error(proc, "nothing to confirm: no searched trial reached the target",
                      "1 failed")
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 1  # none queued
    assert not (tmp_path / "mlflow.db").exists()


# -- 2. impossible search spaces ------------------------------------------------------------------
def test_space_with_low_above_high(synth_tree, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("name: x\ndimensions:\n  peak_lr: {float: [0.1, 0.01]}\n")
    proc = _launch(tmp_path, synth_tree, "--space", space)
    assert_user_error(proc, f"{space}:3", "peak_lr", "low must be <= high, got [0.1, 0.01]")
    _nothing_written(tmp_path)


def test_space_whose_layout_no_host_can_hold(synth_tree, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("name: big\ndimensions:\n  peak_lr: {float: [0.01, 0.02]}\n"
                     "  ranks_per_node: {choices: [16, 8]}\n  threads_per_rank: {int: [2, 4]}\n")
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=2\n")
    proc = _launch(tmp_path, synth_tree, "--space", space, "--hosts", hostfile)
    assert_user_error(proc, str(space), "8×2 = 16", "2 cores")
    _nothing_written(tmp_path)  # before: 50 infeasible trials were recorded, then an error


# -- 3. a host name a shell would run -------------------------------------------------------------
def test_hostfile_with_shell_metacharacters(synth_tree, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node0 slots=2\na;rm -rf / slots=2\n")
    proc = _launch(tmp_path, synth_tree, "--hosts", hostfile)
    assert_user_error(proc, f"{hostfile}:2", "invalid host name 'a;rm'", "'a;rm -rf / slots=2'")
    _nothing_written(tmp_path)


# -- 4. a data root without CSVs (a missing root: test_cli.py) ------------------------------------
@pytest.mark.parametrize("keep", [(), (IMAGE_CSV,)], ids=["empty", "image-csv-only"])
def test_data_root_without_csvs(synth_tree, tmp_path, keep):
    root = tmp_path / "tree"
    root.mkdir()
    for name in keep:
        (root / name).write_bytes((synth_tree / name).read_bytes())
    missing = MOA_CSV if keep else IMAGE_CSV
    assert_user_error(_launch(tmp_path, root), f"--data '{root}'", f"no {missing}")
    _nothing_written(tmp_path)
    prep = run_cli("data", "prepare", "--config", _config(tmp_path / "c.json", root), cwd=tmp_path)
    assert_user_error(prep, f"missing {missing}", str(root / missing))
    summary = run_cli("data", "summary", root, cwd=tmp_path)  # reads the MoA table first
    assert_user_error(summary, f"missing {MOA_CSV}", str(root / MOA_CSV))


# -- 5. a TIFF of the wrong size or dtype ---------------------------------------------------------
def _break_tiff(root: Path, kind: str) -> tuple[Path, str]:
    """Replace all three TIFFs of one annotated image; return one of them and the expected text."""
    record = load_metadata(root).annotated[7]
    if kind == "size":  # a consistent 48x48 image among 64x80 ones: was silently stretched
        plane, needle = np.full((48, 48), 100, np.uint16), "is 48x48 pixels"
    else:
        plane, needle = np.zeros((64, 80), np.complex64), "has dtype complex64"
    for path in record.paths:
        tifffile.imwrite(path, plane)
    return record.paths[0], needle


@pytest.mark.parametrize("kind", ["size", "dtype"])
def test_bad_tiff_is_named_by_data_prepare(tree_copy, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("MCNN_CACHE_DIR", str(tmp_path / "cache"))
    tiff, needle = _break_tiff(tree_copy, kind)
    proc = run_cli("data", "prepare", "--config", _config(tmp_path / "c.json", tree_copy),
                   cwd=tmp_path)
    assert "expected" in assert_user_error(proc, str(tiff), needle)
    assert not list((tmp_path / "cache").glob("*/*.tfrecord"))  # found from the headers alone


def test_bad_tiff_stops_study_launch_before_any_trial(tree_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("MCNN_CACHE_DIR", str(tmp_path / "cache"))
    tiff, needle = _break_tiff(tree_copy, "size")
    proc = _launch(tmp_path, tree_copy, "--storage", f"sqlite:///{tmp_path / 'o.db'}")
    assert_user_error(proc, f"cannot prepare the data of {tree_copy}", str(tiff), needle)
    assert not (tmp_path / "runs" / "trial-0000").exists()


# -- 6. a damaged shard cache ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_cache(synth_tree, tmp_path_factory):
    """A shard cache of the synthetic tree (32x40), built once by ``data prepare``."""
    work = tmp_path_factory.mktemp("shards")
    cfg = _config(work / "c.json", synth_tree, data={"image_size": [32, 40]})
    proc = run_cli("data", "prepare", "--config", cfg, "--json", cwd=work,
                   env={"MCNN_CACHE_DIR": str(work / "cache")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cfg, Path(json.loads(proc.stdout.splitlines()[-1])["path"])


@pytest.fixture
def damaged_cache(built_cache, tmp_path):
    """A private copy of the cache with one byte of the training shard flipped (same size)."""
    import shutil

    cfg, path = built_cache
    cache = tmp_path / "cache"
    shutil.copytree(path.parent, cache, ignore=shutil.ignore_patterns("*.lock"))
    shard = cache / path.name / "train-00000-of-00001.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return cfg, cache / path.name, shard


def test_data_prepare_rebuilds_a_damaged_shard(damaged_cache, tmp_path):
    from explorer.mcnn.shards import damage

    cfg, path, shard = damaged_cache
    assert damage(path) is None and "SHA-256" in str(damage(path, full=True))
    proc = run_cli("data", "prepare", "--config", cfg, cwd=tmp_path,
                   env={"MCNN_CACHE_DIR": str(path.parent)}, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"shard {shard} does not match its SHA-256 checksum" in proc.stdout
    assert "rebuilding it" in proc.stdout and f"shards ready: {path}" in proc.stdout
    assert damage(path, full=True) is None


def test_training_job_names_a_damaged_shard_and_the_fix(damaged_cache, tmp_path, no_orphans):
    cfg, path, _ = damaged_cache
    job = json.loads(cfg.read_text())
    job.update(comm="local", max_epochs=1, per_worker_batch=8, target_accuracy=0.99)
    job_cfg = tmp_path / "job.json"
    job_cfg.write_text(json.dumps(job))
    proc = run_cli("train", "--local", "--no-mlflow", "--config", job_cfg, "--workdir",
                   tmp_path / "job", cwd=tmp_path, env={"MCNN_CACHE_DIR": str(path.parent)},
                   timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "job ended FAILED (exit 2): bad_input: shard cache" in proc.stdout, proc.stdout[-3000:]
    assert f"{path} is damaged (corrupted record at" in proc.stdout
    assert "delete that folder" in proc.stdout and "mcnn-explore data prepare" in proc.stdout


@pytest.mark.parametrize("harm", ["truncate", "remove", "manifest"])
def test_cheap_check_finds_a_missing_or_truncated_shard(built_cache, tmp_path, harm):
    import shutil

    from explorer.mcnn.shards import damage

    _, path = built_cache
    copy = tmp_path / path.name
    shutil.copytree(path, copy)
    shard = copy / "val-00000-of-00001.tfrecord"
    if harm == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
        expected = f"shard {shard} has 100 bytes"
    elif harm == "remove":
        shard.unlink()
        expected = f"shard {shard} is missing"
    else:
        (copy / "manifest.json").write_text("{")
        expected = f"unreadable {copy / 'manifest.json'}"
    assert expected in str(damage(copy))  # the job's start-up check: sizes only


# -- 7. storage URLs of databases that do not exist -----------------------------------------------
def test_sqlite_storage_in_a_missing_folder(synth_tree, tmp_path):
    url = "sqlite:////nonexistent/dir/x.db"
    proc = _launch(tmp_path, synth_tree, "--storage", url)
    assert_user_error(proc, f"--storage {url}", "folder '/nonexistent/dir' does not exist")
    _nothing_written(tmp_path)
    tracking = "sqlite:////nonexistent/dir/m.db"
    proc = _launch(tmp_path, synth_tree, "--tracking-uri", tracking)
    assert_user_error(proc, f"--tracking-uri {tracking}", "does not exist")
    _nothing_written(tmp_path)


def test_storage_that_is_not_a_database(synth_tree, tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a database\n")
    proc = _launch(tmp_path, synth_tree, "--storage", f"sqlite:///{bogus}")
    assert_user_error(proc, str(bogus), "is not a SQLite database")


@pytest.mark.parametrize("command", [
    ["study", "launch", "--space", str(TINY), "--target-accuracy", "0.5"],
    ["study", "status"],
    ["study", "export", "--format", "mpirun"],
    ["dashboard", "--tracking-uri", "sqlite:///m.db"],
], ids=["launch", "status", "export", "dashboard"])
def test_unreachable_database_url_is_shown_with_its_password_masked(synth_tree, tmp_path,
                                                                    command):
    extra = ["--data", str(synth_tree)] if command[1] == "launch" else []
    proc = run_cli(*command, *extra, "--study", "s", "--storage", PG_URL, cwd=tmp_path)
    assert_user_error(proc, f"--storage {PG_SHOWN}", "cannot connect", "port 1")
    assert SECRET not in proc.stdout + proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_ui_checks_a_database_tracking_store_first(tmp_path):
    proc = run_cli("ui", "--tracking-uri", PG_URL, "--study", "s", cwd=tmp_path, timeout=60)
    assert_user_error(proc, f"--tracking-uri {PG_SHOWN}", "cannot connect")
    assert SECRET not in proc.stdout + proc.stderr
