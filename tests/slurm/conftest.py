"""A real single-node Slurm cluster (``scripts/slurm-up``) and a workspace whose ``hala.yaml`` enables it.

The cluster is brought up once per session: when it already answers, it is used; else, as root (or with
``HALA_TEST_SLURM=1``), ``scripts/slurm-up`` installs and starts it, and a failure there FAILS the tests with its
output; a non-root run without a cluster skips them with the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.session import dispose_engines, session_scope
from hala_core.settings import Settings, load_settings
from tests.support.slurm import slurm_partition
from tests.support.workspace import WorkerProcs, workers, workspace  # noqa: F401
from workbench.bootstrap import open_workspace


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The partition of a running single-node cluster (see tests/support/slurm.py)."""
    return slurm_partition()


def make_workspace(home: Path, poll_s: float = 0.2) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    (home / "hala.yaml").write_text(f"executors:\n  slurm:\n    enabled: true\n    poll_s: {poll_s}\n",
                                    encoding="utf-8")
    return open_workspace(load_settings(home, db_url=f"sqlite:///{home / 'hala.db'}"))


@pytest.fixture(scope="module")
def slurm_ws(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A workspace (real SQLite file) with Slurm enabled in its hala.yaml, shared by a module's tests."""
    settings = make_workspace(tmp_path_factory.mktemp("slurm") / "hala_home")
    yield settings
    # leave no job of ours on the cluster
    from sqlalchemy import select

    from db.models import Job

    with session_scope(settings.db_url) as s:
        handles = [h for h in s.scalars(select(Job.executor_handle)) if h and h.startswith("slurm:")]
    if handles:
        subprocess.run(["scancel", *[h.split(":", 1)[1] for h in handles]], capture_output=True, timeout=30)
    dispose_engines()


@pytest.fixture(scope="module")
def slurm_workers(slurm_ws: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcs]:
    procs = WorkerProcs(slurm_ws, tmp_path_factory.mktemp("worker_logs"))
    yield procs
    procs.stop_all()
