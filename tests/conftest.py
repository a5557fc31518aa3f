from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, postgres_server, require_postgres

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REAL_METADATA = Path(__file__).resolve().parent / "data" / "bbbc021"  # shipped: tests/data/bbbc021


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for one test module (skips where PostgreSQL is missing)."""
    require_postgres()
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic BBBC021 tree (64x80, 5 classes), shared by the session."""
    from explorer.mcnn.synth import SynthOptions, synthesize

    root = tmp_path_factory.mktemp("synth") / "tree"
    synthesize(root, SynthOptions(size=(64, 80), images=200, moas=4, seed=1))
    return root


@pytest.fixture
def tree_copy(synth_tree: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic tree that a test may break."""
    dst = tmp_path / "tree"
    shutil.copytree(synth_tree, dst)
    return dst


@pytest.fixture
def study_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study's working directory: ``tmp_path`` as the cwd, with its own shard cache."""
    monkeypatch.setenv("MCNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def real_metadata_dir() -> Path:
    env = os.environ.get("MCNN_REAL_METADATA")
    return Path(env) if env else REAL_METADATA


requires_real_metadata = pytest.mark.skipif(
    not (real_metadata_dir() / "BBBC021_v1_image.csv").is_file(),
    reason="the real BBBC021 metadata (tests/data/bbbc021 or MCNN_REAL_METADATA) is missing",
)
requires_mpi = pytest.mark.skipif(
    shutil.which("mpirun") is None, reason="mpirun (openmpi-bin) is not installed"
)
