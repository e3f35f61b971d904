"""Engine and session setup. SQLite gets WAL, a busy timeout and foreign keys on every connection."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 30_000
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    # Let SQLAlchemy's BEGIN reach SQLite so transactions take the write lock when they write.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn) -> None:  # noqa: ANN001
    # IMMEDIATE: take the write lock at BEGIN, so a read-then-write transaction never fails on a stale
    # snapshot (SQLite answers "database is locked" at the upgrade to write, without waiting). Read-only
    # sessions (``read_scope``) use a plain BEGIN: in WAL mode they never wait for a writer.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("hala_read_only") else "BEGIN IMMEDIATE")


def get_engine(url: str) -> Engine:
    """One engine per URL and process."""
    with _lock:
        if url in _engines:
            return _engines[url]
        u = make_url(url)
        if u.get_backend_name() == "sqlite":
            if u.database and u.database != ":memory:":
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _lock:
        for e in _engines.values():
            e.dispose()
        _engines.clear()


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (on SQLite it holds the write lock)."""
    s = session_factory(url)()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A read-only session: never takes the write lock, so polling the db never waits behind a writer."""
    s = Session(get_engine(url).execution_options(hala_read_only=True), expire_on_commit=False)
    try:
        yield s
    finally:
        s.close()  # ends the read transaction; loaded objects stay usable (detached, not expired)


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Serialise schema upgrades between processes that share one SQLite file."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        yield
        return
    lock_path = Path(u.database + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
