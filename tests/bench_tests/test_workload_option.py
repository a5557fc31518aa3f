"""``--workload``: every benchmark that reads a recorded table reads the table of the workload it
is given (and refuses, in one line and before it writes anything, a workload with no table), so
that figures recorded on an earlier bench workload stay reproducible after the default moves."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.bf16 import main as bf16_main
from bench.calibrate import main as calibrate_main
from bench.rehearsal_check import calibration_workload
from bench.replay import main as replay_main
from bench.search import main as search_main
from bench.signal import main as signal_main
from bench.table import REFERENCE_LAYOUT, WORKLOAD, grid_params, load_table
from explorer.cli_rehearse import default_calibration
from explorer.rehearsal.model import load_calibration
from explorer.workloads import WORKLOADS
from search_spaces.space import load_space

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



def _one_grid_run(path: Path, workload_id: str) -> Path:
    """A table holding a single completed grid run of ``workload_id`` (the bench space)."""
    params: dict[str, Any] = {**grid_params(load_space(WORKLOAD.space))[0], **REFERENCE_LAYOUT}
    record = {"workload": workload_id, "config_id": "one", "phase": "grid", "seed": 0,
              "params": params, "overrides": {}, "curve": [[0.5, 10.0, 0.5]], "n_train": 100,
              "images_per_sec": 100.0, "startup_s": 5.0, "job_wall_s": 20.0,
              "state": "completed", "machine": {"machine_class": "avx512", "cores": 2}}
    path.write_text(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(("name", "main"), [("search", search_main), ("calibrate", calibrate_main)])
def test_a_partial_table_is_refused_by_a_benchmark_that_picks_or_fits_from_it(
        name, main, tmp_path, monkeypatch):
    monkeypatch.setenv("MCNN_CACHE_DIR", str(tmp_path / "cache"))
    table = _one_grid_run(tmp_path / "table.jsonl", WORKLOAD.id)
    monkeypatch.chdir(tmp_path)
    argv = ["--table", str(table), "--workload", WORKLOAD.id]
    if name == "search":
        argv += ["--workdir", str(tmp_path / "work")]
    points = len(grid_params(load_space(WORKLOAD.space)))
    with pytest.raises(SystemExit, match=rf"^error: the table of {WORKLOAD.id} holds 1 of "
                                         rf"{points} grid points; finish it first"):
        main(argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.jsonl"]


def test_a_table_without_a_run_of_the_workload_is_refused(tmp_path):
    table = _one_grid_run(tmp_path / "table.jsonl", "bench-v2")
    with pytest.raises(SystemExit, match=r"^error: \S+table\.jsonl holds no run of bench-v3;"):
        signal_main(["--table", str(table), "--workload", "bench-v3"])


def test_only_bench_signal_reads_the_tables_phase_6_runs(tmp_path):
    table = _one_grid_run(tmp_path / "table.jsonl", "bench-v4")
    record = json.loads(table.read_text())
    with table.open("a") as f:
        f.write(json.dumps({**record, "phase": "signal", "seed": 3}) + "\n")
    workload = WORKLOADS["bench-v4"]
    _, records = load_table(str(table), quick=False, workload=workload)
    assert [r["phase"] for r in records] == ["grid"]
    _, records = load_table(str(table), quick=False, workload=workload, signal=True)
    assert [r["phase"] for r in records] == ["grid", "signal"]


def test_an_earlier_workloads_committed_table_is_still_read_by_its_id(capsys):
    assert signal_main(["--workload", "bench-v2", "--quick"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    result = json.loads(line.removeprefix("BENCH_JSON "))
    assert result["workload"] == "bench-v2" and result["table"].endswith(".jsonl")
    assert "/bench-v2." in result["table"] and result["targets"][0]["target"] == 0.8
