"""``--workload``: every benchmark that reads a recorded table reads the table of the workload it
is given (and refuses, in one line and before it writes anything, a workload with no table), so
that figures recorded on an earlier bench workload stay reproducible after the default moves."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from bench.bf16 import main as bf16_main
from bench.calibrate import main as calibrate_main
from bench.rehearsal_check import calibration_workload
from bench.replay import main as replay_main
from bench.search import main as search_main
from bench.signal import main as signal_main
from explorer.cli_rehearse import default_calibration
from explorer.rehearsal.model import load_calibration
from explorer.workloads import WORKLOADS

WITH_WORKDIR: list[tuple[str, Callable[[list[str]], int]]] = [
    ("replay", replay_main), ("search", search_main), ("bf16", bf16_main)]
WITHOUT: list[tuple[str, Callable[[list[str]], int]]] = [
    ("signal", signal_main), ("calibrate", calibrate_main)]


@pytest.mark.parametrize(("name", "main"), WITH_WORKDIR + WITHOUT,
                         ids=[n for n, _ in WITH_WORKDIR + WITHOUT])
def test_a_benchmark_reads_the_table_of_the_workload_it_is_given(
        name, main, tmp_path, monkeypatch):
    monkeypatch.setenv("MCNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # calibrate's and the default workdirs are relative
    argv = ["--workload", "demo-v1"]  # a workload no table was recorded for
    if (name, main) in WITH_WORKDIR:
        argv += ["--workdir", str(tmp_path / "work")]
    with pytest.raises(SystemExit, match=r"^error: no table of demo-v1 for machine class \S+ "):
        main(argv)
    assert list(tmp_path.iterdir()) == []  # no data tree, no study, no calibration written


def test_an_unknown_workload_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        replay_main(["--workload", "bench-v0"])
    assert exc.value.code == 2
    assert "invalid choice: 'bench-v0'" in capsys.readouterr().err


def test_the_rehearsal_check_reads_the_table_of_its_calibrations_workload():
    cal = load_calibration(default_calibration()[0])
    assert calibration_workload(cal) is WORKLOADS[cal.name.rsplit(".", 1)[0]]
    with pytest.raises(SystemExit, match=r"^error: calibration nope\.avx512 names no workload"):
        calibration_workload(dataclasses.replace(cal, name="nope.avx512"))

