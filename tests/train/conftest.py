"""Fixtures for the training tests: NTREX-128 pairs in the Hala translator template (both directions), chat rows,
a workspace with the demo models registered, a real db-backed RunContext for in-process steps, and helpers that
read metrics and artifacts back from the db.

Everything is sized for a 2-core machine: a few dozen steps on the random-weight demo models, short sequences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db.artifacts import find_artifact, register_artifact
from db.models import Artifact, Job, Metric
from db.session import read_scope, session_scope
from hala_core.settings import Settings
from hala_core.translation import HALA_TRANSLATOR_TEMPLATE
from tests.support.app_server import register_demo_models
from tests.support.workspace import workers, workspace  # noqa: F401 — fixtures used by the tests of this folder

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
NTREX = DATA / "ntrex128_en_ar"
NTREX_EN, NTREX_AR = NTREX / "newstest2019-src.eng.txt", NTREX / "newstest2019-ref.arb.txt"
needs_ntrex = pytest.mark.skipif(not (NTREX_EN.is_file() and NTREX_AR.is_file()),
                                 reason="the shared NTREX-128 sample data (../shared/data/ntrex128_en_ar) is missing")
BASE = "demo-lfm2-a"
FINAL = ("succeeded", "failed", "cancelled", "interrupted")


# ----------------------------------------------------------------------------------------------- data

@pytest.fixture(scope="session")
def ntrex_lines() -> list[tuple[str, str]]:
    """The aligned (English, Arabic) lines of NTREX-128 newstest2019."""
    if not (NTREX_EN.is_file() and NTREX_AR.is_file()):
        pytest.skip("the shared NTREX-128 sample data is missing")
    en = NTREX_EN.read_text(encoding="utf-8").splitlines()
    ar = NTREX_AR.read_text(encoding="utf-8").splitlines()
    assert len(en) == len(ar) == 1997
    return list(zip(en, ar, strict=True))


def pair_rows(lines: list[tuple[str, str]], n_pairs: int, offset: int = 0) -> list[dict[str, str]]:
    """``n_pairs`` prompt/completion rows built with the translator template: EN→AR and AR→EN alternately."""
    rows = []
    for i, (en, ar) in enumerate(lines[offset:offset + n_pairs]):
        if i % 2 == 0:
            prompt = HALA_TRANSLATOR_TEMPLATE.format(src_lang="English", tgt_lang="Arabic", text=en)
            rows.append({"prompt": prompt, "completion": ar})
        else:
            prompt = HALA_TRANSLATOR_TEMPLATE.format(src_lang="Arabic", tgt_lang="English", text=ar)
            rows.append({"prompt": prompt, "completion": en})
    return rows


def message_rows(lines: list[tuple[str, str]], n: int, offset: int = 0, chars: int = 60) -> list[dict[str, Any]]:
    """Short conversations (system, user, assistant) made from NTREX lines."""
    return [{"messages": [{"role": "system", "content": "أنت مترجم دقيق."},
                          {"role": "user", "content": f"Translate to Arabic: {en[:chars]}"},
                          {"role": "assistant", "content": ar[:chars]}]}
            for en, ar in lines[offset:offset + n]]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- workspace

def register_demo(settings: Settings, demo_models: dict[str, Path], names: tuple[str, ...] = (BASE,)
                  ) -> None:
    register_demo_models(settings, demo_models, names)


@pytest.fixture
def train_ws(workspace: Settings, demo_models_dir: dict[str, Path]) -> Settings:  # noqa: F811
    """A fresh workspace (real SQLite file) with demo-lfm2-a registered."""
    register_demo(workspace, demo_models_dir)
    return workspace


def add_dataset(settings: Settings, name: str, rows: list[dict[str, Any]]) -> int:
    """Write rows as a JSONL under the workspace's datasets folder and register it; returns the artifact id."""
    path = write_jsonl(settings.datasets_dir / name / f"{name}.jsonl", rows)
    with session_scope(settings.db_url) as s:
        return register_artifact(s, "dataset", name, str(path), {"records": len(rows)}).id


def db_context(settings: Settings, spec: Any) -> Any:
    """A queued job for ``spec`` and the real db-backed RunContext for it, to run a step in this process."""
    from jobs.context import DbRunContext
    from jobs.queue import enqueue

    with session_scope(settings.db_url) as s:
        job_id = enqueue(s, spec).id
    return DbRunContext(job_id, settings)


def metric_points(settings: Settings, job_id: int, key: str) -> list[tuple[int, float]]:
    """(step, value) of one metric of a job, in the order they were written."""
    with read_scope(settings.db_url) as s:
        return [(st, v) for st, v in s.execute(select(Metric.step, Metric.value)
                                               .where(Metric.job_id == job_id, Metric.key == key)
                                               .order_by(Metric.id))]


def artifact(settings: Settings, name: str, kind: str = "model") -> Artifact | None:
    with read_scope(settings.db_url) as s:
        return find_artifact(s, kind, name)


def input_names(settings: Settings, artifact_id: int) -> set[str]:
    """The names of an artifact's direct inputs (its lineage one level up)."""
    from db.artifacts import lineage

    with read_scope(settings.db_url) as s:
        return {a["name"] for a in lineage(s, artifact_id, max_depth=1)}


def job(settings: Settings, job_id: int) -> Job:
    with read_scope(settings.db_url) as s:
        return s.get(Job, job_id)


def train_spec(**changes: Any) -> dict[str, Any]:
    """A small train spec on the demo model (full fine-tune, CPU-sized); ``changes`` override fields."""
    spec = {"kind": "train", "preset": "translator", "base_model": BASE, "datasets": ["ntrex-pairs"],
            "max_steps": 4, "learning_rate": 1e-3, "per_device_train_batch_size": 4, "max_length": 64,
            "logging_steps": 1, "save_steps": 1000, "warmup_steps": 0, "eval_split": 0.0, "output": "tiny-model"}
    return {**spec, **changes}
