"""TensorFlow's native INFO lines stay out of user-facing output unless asked for (-v)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcnn_base.native_logs import VERBOSE_ENV, filter_native_info, is_native_info

INFO = (b"I0000 00:00:1795988246.920930   12291 port.cc:153] oneDNN custom operations are on.\n"
        b"WARNING: All log messages before absl::InitializeLog() is called are written to "
        b"STDERR\n")
REAL = b"W0000 00:00:1795988246.9 12291 loader.cc:10] a real warning\nE: and an error\n"


def test_info_lines_are_dropped_and_warnings_kept(capfd, monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with filter_native_info():
        os.write(2, INFO + REAL)
    err = capfd.readouterr().err
    assert "port.cc" not in err and "InitializeLog" not in err
    assert "a real warning" in err and "and an error" in err
    assert is_native_info(INFO.splitlines()[0]) and not is_native_info(REAL.splitlines()[0])


def test_verbose_keeps_everything(capfd, monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with filter_native_info():
        os.write(2, INFO)
    assert "port.cc:153" in capfd.readouterr().err


@pytest.mark.slow
def test_data_prepare_prints_no_native_info_lines(synth_tree: Path, tmp_path: Path):
    from tests.spaces import write_trial_config

    config = write_trial_config(tmp_path / "c.yaml", synth_tree, tmp_path / "cache")
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}
    argv = [sys.executable, "-m", "explorer.cli", "data", "prepare", "--config", str(config)]
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300,  # noqa: S603
                           check=True)
    assert "I0000" not in quiet.stderr and "port.cc" not in quiet.stderr, quiet.stderr
    assert "shards ready" in quiet.stdout
    fresh = write_trial_config(tmp_path / "d.yaml", synth_tree, tmp_path / "cache2")
    loud = subprocess.run([*argv[:3], "-v", *argv[3:-1], str(fresh)],  # noqa: S603
                          capture_output=True, text=True, env=env, timeout=300, check=True)
    assert "port.cc" in loud.stderr
