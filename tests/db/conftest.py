
from tests.support.workspace import (  # noqa: F401  # noqa: F401
    both_backends,
    db_url,
    db_workspace,
    empty_db_url,
    pg_server,
    workspace_on_both_backends,
)
