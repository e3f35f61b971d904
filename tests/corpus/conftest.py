"""Fixtures for the corpus tests: real sample data, workspaces with the demo translator registered, translation
runs made without a model (for the review tests), and helpers that read the db back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from db.models import Corpus, CorpusRow, Job, Metric, ReviewEvent, Segment, Translation, TranslationRun
from db.session import read_scope, session_scope
from hala_core.settings import Settings
from tests.support.app_server import register_demo_models
from tests.support.workspace import (  # noqa: F401  # noqa: F401
    both_backends,
    db_url,
    db_workspace,
    pg_server,
    workers,
    workspace_on_both_backends,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ALPACA = DATA / "alpaca_5000" / "alpaca_5000.json"
NTREX = DATA / "ntrex128_en_ar"
needs_data = pytest.mark.skipif(not (ALPACA.is_file() and (NTREX / "newstest2019-src.eng.txt").is_file()),
                                reason="the shared sample data (alpaca_5000, ntrex128_en_ar) is not present")

FINAL = ("succeeded", "failed", "cancelled", "interrupted")


def register_demo(settings: Settings, demo_models: dict[str, Path], names: tuple[str, ...] = ("demo-lfm2-a",)
                  ) -> None:
    register_demo_models(settings, demo_models, names)


@pytest.fixture
def demo_workspace(workspace: Settings, demo_models_dir: dict[str, Path]) -> Settings:  # noqa: F811
    register_demo(workspace, demo_models_dir)
    return workspace


def cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m workbench.cli ARGS`` against the workspace, as a real subprocess."""
    env = {**os.environ, "HALA_HOME": str(settings.home), "HALA_DB_URL": settings.db_url,
           "HALA_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def make_run(settings: Settings, corpus: str, name: str = "mt", *, double_share: float = 0.0,
             flagged: Callable[[int], bool] = lambda i: False, text: Callable[[int], str] | None = None,
             job_id: int | None = None) -> int:
    """A translation run of an imported corpus written straight through the job's store (no model): segment i gets
    ``text(i)`` and the flag ``wrong_script`` when ``flagged(i)``. Returns the run id."""
    from db.corpora import CorpusStore
    from hala_core.specs import SleepSpec
    from jobs.queue import enqueue

    if job_id is None:
        with session_scope(settings.db_url) as s:
            job_id = enqueue(s, SleepSpec()).id
    store = CorpusStore(settings.db_url)
    info = store.open_run(corpus, name, model_ref="hand-made", model_artifact_id=None, direction="en-ar",
                          template="chat", settings={}, job_id=job_id, double_share=double_share)
    text = text or (lambda i: f"ترجمة الجملة رقم {i}")
    pending = store.pending(info["run_id"], 0, 100_000, False)
    items = [{"segment_id": p.id, "text": text(i), "n_tokens": 3, "scores": {},
              "flags": ["wrong_script"] if flagged(i) else []} for i, p in enumerate(pending)]
    assert store.save(info["run_id"], job_id, items, double_share) == len(items)
    return info["run_id"]


def run_translations(settings: Settings, run_id: int) -> list[Translation]:
    with read_scope(settings.db_url) as s:
        return list(s.scalars(select(Translation).where(Translation.run_id == run_id).order_by(Translation.id)))


def snapshot(settings: Settings) -> dict[str, Any]:
    """Counts (and review states) of everything an import or a refused job must not touch."""
    with read_scope(settings.db_url) as s:
        return {
            "corpora": sorted(s.execute(select(Corpus.name, Corpus.n_rows, Corpus.n_segments, Corpus.source))
                              .all()),
            "rows": s.scalar(select(func.count(CorpusRow.id))),
            "segments": s.scalar(select(func.count(Segment.id))),
            "runs": s.scalar(select(func.count(TranslationRun.id))),
            "translations": sorted(s.execute(select(Translation.id, Translation.status, Translation.final_text,
                                                    Translation.version)).all()),
            "events": s.scalar(select(func.count(ReviewEvent.id))),
            "jobs": s.scalar(select(func.count(Job.id))),
        }


def metrics(settings: Settings, job_id: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with read_scope(settings.db_url) as s:
        for key, value in s.execute(select(Metric.key, Metric.value).where(Metric.job_id == job_id)
                                    .order_by(Metric.id)):
            out.setdefault(key, []).append(value)
    return out


def job_row(settings: Settings, job_id: int) -> Job:
    with read_scope(settings.db_url) as s:
        return s.get(Job, job_id)


def jobs_final(settings: Settings, ids: list[int]) -> bool:
    with read_scope(settings.db_url) as s:
        return all(s.get(Job, i).status in FINAL for i in ids)
