"""Open a workspace: folders made, database upgraded to the current schema."""

from __future__ import annotations

import logging

from db.migrate import upgrade
from hala_core.settings import Settings, load_settings

log = logging.getLogger("hala")


def open_workspace(settings: Settings | None = None) -> Settings:
    settings = (settings or load_settings()).ensure()
    before, after = upgrade(settings.db_url)
    if before != after:
        log.info("database %s upgraded %s → %s", settings.db_url, before or "empty", after)
    return settings
