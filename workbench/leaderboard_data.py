"""The leaderboard table from the db, shared by the Leaderboard tab and ``hala leaderboard``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from db.evals import latest_scores
from db.session import read_scope
from hala_core.leaderboard import build_table
from hala_core.settings import Settings


@lru_cache(maxsize=512)
def _params_of(path: str, mtime_key: str) -> int | None:
    from hala_core.models import inspect_model

    try:
        return inspect_model(path).parameters
    except ValueError:
        return None


def parameters_of(model: str, info: dict[str, Any]) -> int | None:
    meta = info.get("model_meta") or {}
    if meta.get("parameters"):
        return int(meta["parameters"])
    path = info.get("model_path")
    if not path or meta.get("source") == "hub":
        return None
    from pathlib import Path

    p = Path(path)
    return _params_of(str(p), str((p / "config.json").stat().st_mtime) if (p / "config.json").exists() else "")


def leaderboard_rows(settings: Settings, benchmarks: list[str] | None = None, base_model: str | None = None,
                     category: str | None = None, include_reported: bool = False) -> list[dict[str, Any]]:
    with read_scope(settings.db_url) as s:
        scores = latest_scores(s)
    from hala_core.benchmarks import headline_metric

    return build_table(scores, benchmarks=benchmarks or None, headline=lambda b: headline_metric(b, settings.home),
                       base_model=base_model or None,
                       category=category or None, include_reported=include_reported, parameters=parameters_of)
