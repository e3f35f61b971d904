from tests.support.workspace import workers, workspace  # noqa: F401
