from tests.support.workspace import workspace  # noqa: F401
