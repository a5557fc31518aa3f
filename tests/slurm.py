"""Skip or fail a test that needs the private SLURM cluster (devsupport/slurm_cluster.py)."""

from __future__ import annotations

import os

from devsupport.netns import netns_available
from devsupport.slurm_cluster import slurm_missing

__all__ = ["require_slurm"]


def require_slurm(nodes: int = 1) -> None:
    """Skip the calling test where the cluster cannot start (fail in CI, which installs it)."""
    import pytest

    why = slurm_missing() or (netns_available() if nodes > 1 else None)
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to run a private SLURM cluster: {why}")
        pytest.skip(why)
