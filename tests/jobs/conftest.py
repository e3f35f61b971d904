import pytest

from tests.support.workspace import DB_BACKENDS, db_url, db_workspace, pg_server, workers  # noqa: F401


@pytest.fixture(params=DB_BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """The queue and worker tests run on SQLite and on PostgreSQL (skipped without HALA_TEST_PG_URL)."""
    return request.param


@pytest.fixture
def workspace(db_workspace):  # noqa: F811
    return db_workspace
