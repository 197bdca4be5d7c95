"""Session-scoped fixture: one real single-node SLURM cluster for all tests in this folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from slurm_cluster import (  # noqa: E402
    ClusterUnavailable,
    SlurmCluster,
    skip_or_fail,
    slurm_cluster,
)


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture() -> SlurmCluster:
    """The running cluster; skips saying why if this machine cannot run one (fails if CI=true)."""
    try:
        with slurm_cluster() as cluster:
            yield cluster
            return
    except ClusterUnavailable as exc:
        reason = str(exc)
    skip_or_fail(reason)  # outside the except block: no chained traceback
