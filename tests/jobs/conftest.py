
from tests.support.workspace import (  # noqa: F401  # noqa: F401
    both_backends,
    db_url,
    db_workspace,
    pg_server,
    workers,
    workspace_on_both_backends,
)
