"""Fixtures for tests that need a real workspace: a temp HALA_HOME with a real database, and real worker
processes.

``workspace`` is on SQLite (a file in the workspace). A test folder or module that wants both back ends defines
``db_backend`` as ``pytest.fixture(params=DB_BACKENDS)`` and ``workspace`` as ``db_workspace`` (tests/db,
tests/jobs and tests/corpus do). The ``postgresql`` param runs against the server named by ``HALA_TEST_PG_URL``
(``HALA_TEST_PG_URL=$(scripts/postgres-up) pytest ...``): every test gets a fresh database of its own, made in
a few milliseconds from a template that is migrated once per test session. Without ``HALA_TEST_PG_URL`` those
params are skipped; with it set and the server unreachable they fail."""

from __future__ import annotations

import os
import secrets
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

PG_ENV = "HALA_TEST_PG_URL"
PG_SKIP_REASON = (f"PostgreSQL tests need a server: run them with {PG_ENV}=$(scripts/postgres-up) "
                  ".venv/bin/python -m pytest ... (scripts/postgres-down stops it)")
# test ids end in [sqlite] / [postgresql]: ``-k postgresql`` picks the PostgreSQL runs
DB_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(not os.environ.get(PG_ENV),
                                                                               reason=PG_SKIP_REASON))]


class PgServer:
    """The test server of ``HALA_TEST_PG_URL``: a migrated template database, and fresh databases made from it."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        self.url = make_url(url)
        if self.url.get_backend_name() != "postgresql":
            pytest.fail(f"{PG_ENV}={url!r} is not a postgresql URL (scripts/postgres-up prints one)")
        self._text = text
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with self.admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - any connection failure is the same message
            self.admin.dispose()
            pytest.fail(f"{PG_ENV} is set but the PostgreSQL server does not answer ({self.safe(url)}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} — start it with "
                        "scripts/postgres-up, or unset the variable to skip the PostgreSQL tests", pytrace=False)
        self.prefix = f"hala_t_{os.getpid()}_{secrets.token_hex(3)}"
        self.template: str | None = None
        self.created: list[str] = []

    @staticmethod
    def safe(url: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)

    def url_of(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    def _exec(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(self._text(sql))

    def create(self, *, migrated: bool = True) -> str:
        """A new database (at the head revision when ``migrated``, else empty); returns its URL."""
        if migrated and self.template is None:
            from db.migrate import upgrade

            name = f"{self.prefix}_tmpl"
            self._exec(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            upgrade(self.url_of(name))
            dispose_engines()  # a template must have no connections when it is copied
            self.template = name
        name = f"{self.prefix}_{len(self.created)}"
        # STRATEGY FILE_COPY: copies the template's few files (WAL_LOG, PG 15's default, writes every page to
        # the WAL: slower for a small database)
        self._exec(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{self.template}" STRATEGY FILE_COPY'
                                                    if migrated else ""))
        self.created.append(name)
        return self.url_of(name)

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        for name in reversed(self.created):
            self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(PG_SKIP_REASON)
    server = PgServer(url)
    yield server
    dispose_engines()
    server.close()


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database at the head revision, of the back end ``db_backend`` names; its URL."""
    if db_backend == "sqlite":
        yield f"sqlite:///{(tmp_path / 'hala_home').resolve() / 'hala.db'}"
        return
    assert db_backend == "postgresql", db_backend
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create()
    yield url
    dispose_engines()
    server.drop(url)


@pytest.fixture
def empty_db_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database (no tables) of the back end ``db_backend`` names; its URL."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create(migrated=False)
    yield url
    dispose_engines()
    server.drop(url)


def _open(home: Path, monkeypatch: pytest.MonkeyPatch, db_url: str | None) -> Settings:
    monkeypatch.setenv("HALA_HOME", str(home))
    if db_url is None or db_url.startswith("sqlite"):
        monkeypatch.delenv("HALA_DB_URL", raising=False)  # the default: hala.db in HALA_HOME
    else:
        monkeypatch.setenv("HALA_DB_URL", db_url)  # subprocesses (cli, workers, jobs) get it too
    settings = open_workspace(load_settings())
    assert db_url is None or settings.db_url == db_url, (settings.db_url, db_url)
    return settings


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A workspace on SQLite (a conftest that wants both back ends overrides it with ``db_workspace``)."""
    settings = _open(tmp_path / "hala_home", monkeypatch, None)
    yield settings
    dispose_engines()


@pytest.fixture
def db_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[Settings]:
    """A workspace on the back end ``db_backend`` names (its database from ``db_url``)."""
    settings = _open(tmp_path / "hala_home", monkeypatch, db_url)
    yield settings
    dispose_engines()


@pytest.fixture(params=DB_BACKENDS, name="db_backend")
def both_backends(request: pytest.FixtureRequest) -> str:
    """Import into a folder's conftest (with ``workspace_on_both_backends``) to run its tests on SQLite and on
    PostgreSQL (the PostgreSQL params are skipped without HALA_TEST_PG_URL)."""
    return request.param


@pytest.fixture(name="workspace")
def workspace_on_both_backends(db_workspace: Settings) -> Settings:
    """``workspace`` on the back end of ``db_backend``; import it into a conftest to override the SQLite one."""
    return db_workspace


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
