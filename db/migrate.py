"""Schema upgrades with Alembic, driven from Python (``hala db upgrade``; apps upgrade on start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select

from db.session import get_engine, migration_lock

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key that serialises schema upgrades on PostgreSQL ("hmig" in ASCII); SQLite files use
# ``migration_lock`` (a file lock) instead
MIGRATION_LOCK_KEY = 0x686D6967


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(url: str) -> str | None:
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database to ``revision``; returns (before, after). Safe to call on every start, from several
    processes at once."""
    with migration_lock(url):
        before = current_revision(url)
        if revision == "head" and before == head_revision(url):
            return before, before
        cfg = alembic_config(url)
        with get_engine(url).begin() as conn:
            if conn.dialect.name == "postgresql":
                # processes that start together (the app, workers) upgrade one at a time: the lock lasts until
                # this transaction (DDL included) commits; whoever waited finds the schema upgraded already
                conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                before = MigrationContext.configure(conn).get_current_revision()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return before, current_revision(url)
