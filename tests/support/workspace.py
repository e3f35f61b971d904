"""Fixtures for tests that need a real workspace: a temp HALA_HOME with a real SQLite file, and real
worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from db.session import dispose_engines, session_scope
from hala_core.settings import Settings, load_settings
from workbench.bootstrap import open_workspace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    home = tmp_path / "hala_home"
    monkeypatch.setenv("HALA_HOME", str(home))
    monkeypatch.delenv("HALA_DB_URL", raising=False)
    settings = open_workspace(load_settings())
    yield settings
    dispose_engines()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class WorkerProcs:
    """Start real ``hala worker`` processes against a workspace; all are stopped at teardown."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings, self.log_dir, self.procs = settings, log_dir, []

    def start(self, max_jobs: int = 1, poll: float = 0.05, extra_env: dict[str, str] | None = None,
              global_limit: int | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "HALA_HOME": str(self.settings.home), "HALA_DB_URL": self.settings.db_url,
               **(extra_env or {})}
        args = [sys.executable, "-m", "workbench.cli", "worker", "--max-jobs", str(max_jobs), "--poll", str(poll)]
        if global_limit is not None:
            args += ["--global-limit", str(global_limit)]
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def workers(workspace: Settings, tmp_path: Path) -> Iterator[WorkerProcs]:
    w = WorkerProcs(workspace, tmp_path)
    yield w
    w.stop_all()


def job_status(settings: Settings, job_id: int) -> str:
    from db.models import Job

    with session_scope(settings.db_url) as s:
        return s.get(Job, job_id).status
