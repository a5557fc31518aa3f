"""Reading each host's hardware through the launcher, and caching it in the study."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from explorer.hardware import HARDWARE_ATTR, read_hosts, with_hardware
from launchers.base import JobHandle, Launcher, Resources
from launchers.hosts import HostInfo

optuna.logging.set_verbosity(optuna.logging.WARNING)


class EchoLauncher(Launcher):
    """Runs a real process that prints the records a probe of ``hosts`` would print, one per
    line (or, with ``joiner=""``, run into each other, as ``mpirun`` forwarded them once)."""

    def __init__(self, records: list[Any] | None, *, exit_code: int = 0,
                 joiner: str = "\n") -> None:
        self.records = records
        self.exit_code = exit_code
        self.joiner = joiner
        self.probes = 0

    def launch(self, config_path: Path, resources: Resources, *, workdir: Path,
               **options: Any) -> JobHandle:
        raise NotImplementedError

    def probe_argv(self, command: list[str], hosts: Sequence[str],
                   mca: Mapping[str, str]) -> list[str] | None:
        if self.records is None:
            return None
        self.probes += 1
        text = "".join(json.dumps(r) + self.joiner for r in self.records)
        return [sys.executable, "-c", f"import sys; sys.stdout.write({text!r}); "
                f"sys.stderr.write('orted: lost contact\\n'); sys.exit({self.exit_code})"]


def test_records_map_to_hosts_by_rank_or_by_slurm_node_name():
    launcher = EchoLauncher([
        {"rank": 1, "node": None, "isa": ["avx512f"], "memory_gib": 60.0},
        {"rank": 0, "node": None, "isa": ["avx512f", "amx_bf16", "amx_tile"],
         "memory_gib": 120.0},
        "not a record", {"rank": 7, "node": "n9", "isa": ["avx512f"]}])
    assert read_hosts(["a", "b"], launcher, {}) == {
        "a": {"isa": ["avx512f", "amx_bf16", "amx_tile"], "memory_gib": 120.0},
        "b": {"isa": ["avx512f"], "memory_gib": 60.0}}
    by_node = EchoLauncher([{"rank": 0, "node": "cn2", "isa": [], "memory_gib": 1.0}])
    assert read_hosts(["cn1", "cn2"], by_node, {}) == {"cn2": {"isa": [], "memory_gib": 1.0}}


def test_records_that_run_into_each_other_are_all_read():
    # the shape a CI run saw: '{"rank": 0, ...}{"rank": 1, ...}' on one line
    records = [{"rank": 0, "node": None, "isa": ["avx512f"], "memory_gib": 8.0},
               {"rank": 1, "node": None, "isa": ["avx512_bf16"], "memory_gib": 4.0}]
    launcher = EchoLauncher(["noise {not json", *records, "tail {"], joiner="")
    assert read_hosts(["a", "b"], launcher, {}) == {
        "a": {"isa": ["avx512f"], "memory_gib": 8.0},
        "b": {"isa": ["avx512_bf16"], "memory_gib": 4.0}}


def test_a_pool_is_read_once_and_cached_in_the_study():
    study = optuna.create_study()
    hosts = [HostInfo("a", 2), HostInfo("b", 2)]
    launcher = EchoLauncher([{"rank": 0, "isa": ["avx512f"], "memory_gib": 8.0},
                             {"rank": 1, "isa": ["avx512f", "avx512_bf16"], "memory_gib": 8.0}])
    first = with_hardware(study, hosts, launcher, {}, log=print)
    assert [h.bf16_hardware for h in first] == [False, True] and first[0].memory_gib == 8.0
    assert set(study.user_attrs[HARDWARE_ATTR]) == {"a", "b"}
    again = with_hardware(study, hosts, launcher, {}, log=print)  # a resumed study
    assert again == first and launcher.probes == 1


def test_hosts_that_cannot_be_read_stay_unknown_and_say_why():
    study = optuna.create_study()
    said: list[str] = []
    hosts = [HostInfo("a", 2)]
    assert with_hardware(study, hosts, EchoLauncher(None), {}, said.append) == hosts
    assert "batch jobs would queue" in said[-1] and "bf16 trials run there" in said[-1]
    out = with_hardware(study, hosts, EchoLauncher([], exit_code=1), {}, said.append)
    assert out[0].isa is None and "exited with 1: orted: lost contact" in said[-1]
    assert HARDWARE_ATTR not in study.user_attrs


class SilentOnceLauncher(EchoLauncher):
    """Its probe exits 0 and prints nothing on its first run (as ``mpirun`` under load inside
    an allocation did), then prints the records."""

    def __init__(self, records: list[Any], marker: Path) -> None:
        super().__init__(records)
        self.marker = marker

    def probe_argv(self, command: list[str], hosts: Sequence[str],
                   mca: Mapping[str, str]) -> list[str] | None:
        echo = super().probe_argv(command, hosts, mca)
        assert echo is not None
        return [sys.executable, "-c", f"import pathlib, sys; m = pathlib.Path({str(self.marker)!r})\n"
                "if not m.exists(): m.touch(); sys.exit(0)\n" + echo[2]]


def test_a_probe_that_printed_nothing_is_tried_once_more(tmp_path):
    records = [{"rank": 0, "isa": ["avx512f"], "memory_gib": 8.0}]
    assert read_hosts(["a"], SilentOnceLauncher(records, tmp_path / "m1"), {}) == {
        "a": {"isa": ["avx512f"], "memory_gib": 8.0}}
    once = read_hosts(["a"], SilentOnceLauncher(records, tmp_path / "m2"), {}, attempts=1)
    assert isinstance(once, str) and "printed no hardware record for them" in once
