from __future__ import annotations

import ast
from pathlib import Path

import pytest

from explorer.mcnn.config import LayoutConfig
from launchers import Resources, build_mpirun_argv, read_hostfile, validate_hostname
from mcnn_base.errors import ConfigError
from mcnn_base.hostnames import validate_hostname as base_validate_hostname

MCNN = Path(__file__).resolve().parents[2] / "explorer" / "mcnn"

CMD = ["python", "-m", "explorer.mcnn.train"]


def _argv(**kw):
    is_root = kw.pop("is_root", False)
    return build_mpirun_argv(CMD, Resources(**kw), is_root=is_root)


def test_core_binding_with_pe_and_root():
    argv = _argv(ranks_per_node=2, threads_per_rank=1, is_root=True)
    assert argv[:3] == ["mpirun", "-np", "2"]
    assert argv[argv.index("--map-by") + 1] == "slot:PE=1"
    assert argv[argv.index("--bind-to") + 1] == "core"
    assert "--allow-run-as-root" in argv and "--oversubscribe" not in argv
    assert argv[-3:] == CMD


def test_none_and_socket_binding_are_explicit():
    none = _argv(binding="none")
    assert none[none.index("--bind-to") + 1] == "none"
    sock = _argv(binding="socket", ranks_per_node=2, threads_per_rank=2)
    assert sock[sock.index("--map-by") + 1] == "socket"
    assert sock[sock.index("--bind-to") + 1] == "socket"


def test_hosts_env_oversubscribe_non_root():
    argv = _argv(hosts=("n1", "n2"), ranks_per_node=2, env={"KMP_BLOCKTIME": "1"},
                 oversubscribe=True)
    assert argv[argv.index("-np") + 1] == "4"
    assert argv[argv.index("-H") + 1] == "n1:2,n2:2"
    assert "--oversubscribe" in argv and "--allow-run-as-root" not in argv
    assert argv[argv.index("KMP_BLOCKTIME") - 1:
                                          argv.index("KMP_BLOCKTIME") + 1] == ["-x", "KMP_BLOCKTIME"]


@pytest.mark.parametrize("bad", ["a;rm -rf /", "host name", "$(reboot)", "a`b`", "", "-H"])
def test_shell_metacharacters_rejected(bad):
    with pytest.raises(ConfigError, match="invalid host name"):
        validate_hostname(bad)
    with pytest.raises(ConfigError):
        Resources(hosts=(bad,))
    with pytest.raises(ValueError, match="invalid host name"):
        LayoutConfig(hosts=(bad,))


def test_one_host_name_rule_in_the_base_package():
    assert validate_hostname is base_validate_hostname


def test_the_job_package_never_imports_the_launchers():
    for path in MCNN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "launchers" for n in names), path.name


def test_hostfile_line_is_named(tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text("# pool\nnode01 slots=4\nnode02 slots=4\na;rm -rf / slots=2\n")
    with pytest.raises(ConfigError, match=r"hosts:4: invalid host name 'a;rm"):
        read_hostfile(hf)
    hf.write_text("node01 slots=4\nnode02 slots=x\n")
    with pytest.raises(ConfigError, match=r"hosts:2: slots must be a positive integer"):
        read_hostfile(hf)
    hf.write_text("node01 slots=4 # big\nnode02\n")
    hosts = read_hostfile(hf)
    assert [h.name for h in hosts] == ["node01", "node02"] and hosts[0].cores == 4
