from __future__ import annotations

import pytest

from launchers import HostInfo, detect_local, expand_nodelist, hosts_from_slurm, parse_cpus_per_node
from mcnn_base.errors import ConfigError


@pytest.mark.parametrize(("nodelist", "expected"), [
    ("gpu5", ["gpu5"]),
    ("node[01-03,07],gpu5", ["node01", "node02", "node03", "node07", "gpu5"]),
    ("a[1-2]-ib,b", ["a1-ib", "a2-ib", "b"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[008-010]", ["n008", "n009", "n010"]),
    ("rack[1-2]n[01-02]", ["rack1n01", "rack1n02", "rack2n01", "rack2n02"]),
    ("c[5]", ["c5"]),
    (" node1.cluster,node2.cluster ", ["node1.cluster", "node2.cluster"]),
])
def test_expand_nodelist(nodelist, expected):
    assert expand_nodelist(nodelist) == expected


@pytest.mark.parametrize(("bad", "message"), [
    ("node[1-", r"'node\[1-': '\[' is never closed"),
    ("node[3-1]", r"invalid range '3-1' in SLURM host 'node\[3-1\]': start 3 is greater than end 1"),
    ("a;rm", r"SLURM node list entry 'a;rm': invalid host name 'a;rm'"),
    ("node[1-2];reboot", r"invalid host name 'node1;reboot'"),
    ("node[1-x]", r"invalid range '1-x' in SLURM host 'node\[1-x\]'"),
    ("node[]", r"invalid range '' in SLURM host 'node\[\]'"),
    ("node1]", r"'node1\]': '\]' without '\['"),
    ("n[1-[2]]", r"nested '\['"),
    ("a,,b", r"'a,,b': empty entry between commas"),
    ("", r"invalid SLURM node list ''"),
    ("$(reboot)", r"invalid host name '\$\(reboot\)'"),
    ("n[1-99999999]", r"names 99999999 hosts; expected at most"),
])
def test_expand_nodelist_rejects(bad, message):
    with pytest.raises(ConfigError, match=message):
        expand_nodelist(bad)


def test_parse_cpus_per_node():
    assert parse_cpus_per_node("36(x2),18", 3) == [36, 36, 18]
    assert parse_cpus_per_node("4", 1) == [4]
    assert parse_cpus_per_node("8(x3)", 3) == [8, 8, 8]


@pytest.mark.parametrize(("value", "n", "message"), [
    ("36(x2),18", 2, r"'36\(x2\),18' describes more than the 2 node\(s\)"),
    ("36(x2)", 3, r"'36\(x2\)' describes 2 node\(s\), but the node list has 3"),
    ("36(2)", 1, r"invalid CPUs-per-node item '36\(2\)'"),
    ("0", 1, r"counts must be >= 1"),
    ("8(x0)", 1, r"counts must be >= 1"),
    ("", 1, r"invalid CPUs-per-node item ''"),
])
def test_parse_cpus_per_node_rejects(value, n, message):
    with pytest.raises(ConfigError, match=message):
        parse_cpus_per_node(value, n)


def test_hosts_from_slurm_job_cpus_per_node():
    env = {"SLURM_JOB_NODELIST": "node[01-02],gpu5", "SLURM_JOB_CPUS_PER_NODE": "36(x2),18"}
    assert hosts_from_slurm(env) == [HostInfo("node01", 36), HostInfo("node02", 36),
                                     HostInfo("gpu5", 18)]


def test_hosts_from_slurm_fallbacks():
    assert hosts_from_slurm({"SLURM_NODELIST": "a[1-2]", "SLURM_CPUS_ON_NODE": "12"}) == [
        HostInfo("a1", 12), HostInfo("a2", 12)]
    cores = detect_local().cores
    assert hosts_from_slurm({"SLURM_JOB_NODELIST": "b1"}) == [HostInfo("b1", cores)]


def test_hosts_from_slurm_reads_os_environ(monkeypatch):
    monkeypatch.delenv("SLURM_NODELIST", raising=False)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "c[7-8]")
    monkeypatch.setenv("SLURM_JOB_CPUS_PER_NODE", "4(x2)")
    assert hosts_from_slurm() == [HostInfo("c7", 4), HostInfo("c8", 4)]


@pytest.mark.parametrize(("env", "message"), [
    ({}, r"not inside a SLURM allocation: neither SLURM_JOB_NODELIST nor SLURM_NODELIST is set"),
    ({"SLURM_JOB_CPUS_PER_NODE": "4"}, r"not inside a SLURM allocation"),
    ({"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_CPUS_PER_NODE": "4(x3)"},
     r"SLURM_JOB_CPUS_PER_NODE with SLURM_JOB_NODELIST='n\[1-2\]': CPUs-per-node '4\(x3\)' "
     r"describes more than the 2 node\(s\)"),
    ({"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_JOB_CPUS_PER_NODE": "4"},
     r"describes 1 node\(s\), but the node list has 3"),
    ({"SLURM_JOB_NODELIST": "n[1-"}, r"SLURM_JOB_NODELIST: invalid SLURM node list 'n\[1-'"),
    ({"SLURM_NODELIST": "a;rm"}, r"SLURM_NODELIST: SLURM node list entry 'a;rm'"),
    ({"SLURM_JOB_NODELIST": "n1", "SLURM_CPUS_ON_NODE": "x"},
     r"SLURM_CPUS_ON_NODE must be a positive integer, got 'x'"),
])
def test_hosts_from_slurm_rejects(env, message):
    with pytest.raises(ConfigError, match=message):
        hosts_from_slurm(env)


def test_detect_local_describes_this_machine():
    import os

    here = detect_local()
    assert here.name == "localhost" and here.cores == len(os.sched_getaffinity(0))
    assert here.sockets >= 1 and here.numa_nodes >= 1
