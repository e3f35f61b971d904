import pytest

from tests.support.workspace import DB_BACKENDS, db_url, db_workspace, empty_db_url, pg_server  # noqa: F401


@pytest.fixture(params=DB_BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """Every db test runs on SQLite and on PostgreSQL (skipped without HALA_TEST_PG_URL)."""
    return request.param


@pytest.fixture
def workspace(db_workspace):  # noqa: F811
    return db_workspace
