"""``DbRunContext``: the RunContext a step gets inside ``python -m jobs.run``, backed by the db."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import update

from db.artifacts import register_artifact
from db.models import Job, Metric, utcnow
from db.session import session_scope
from hala_core.context import ArtifactKind, ResolvedModel
from hala_core.settings import Settings
from jobs.resolve import resolve_dataset_ref, resolve_model_ref

_ARTIFACT_DIRS = {"model": "models_dir", "dataset": "datasets_dir", "report": "reports_dir"}


class DbRunContext:
    def __init__(self, job_id: int, settings: Settings, owner: str | None = None) -> None:
        self.job_id = job_id
        self.settings = settings
        self.workspace = settings.home
        self.job_dir = settings.job_dir(job_id)
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.owner = owner
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self._url = settings.db_url
        self._last_progress = 0.0

    # -- reporting -------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        with session_scope(self._url) as s:
            s.add(Metric(job_id=self.job_id, key=key, value=float(value), step=int(step or 0)))

    def progress(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        final = total > 0 and done >= total
        if not final and now - self._last_progress < 0.2:  # keep the db calm under tight loops
            return
        self._last_progress = now
        with session_scope(self._url) as s:
            s.execute(update(Job).where(Job.id == self.job_id).values(
                progress_done=int(done), progress_total=int(total), progress_message=message[:500] or None,
                heartbeat_at=utcnow()))
        if message:
            self.log(f"progress {done}/{total}: {message}")

    def set_result(self, result: dict[str, Any]) -> None:
        with session_scope(self._url) as s:
            s.execute(update(Job).where(Job.id == self.job_id).values(result=result))

    def record_eval(self, model_ref: str, model_artifact_id: int | None, results: list[dict[str, Any]],
                    samples: list[dict[str, Any]]) -> None:
        from db.evals import record_eval

        with session_scope(self._url) as s:
            record_eval(s, self.job_id, model_ref, model_artifact_id, results, samples)

    def enqueue(self, spec: dict[str, Any]) -> int:
        from jobs.queue import enqueue

        with session_scope(self._url) as s:
            job = enqueue(s, spec, owner=self.owner, parent_id=self.job_id)
            self.log(f"queued follow-up job {job.id} ({job.kind})")
            return job.id

    def corpus_store(self) -> Any:
        from db.corpora import CorpusStore

        return CorpusStore(self._url)

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            print(f"stop requested: {reason}", file=sys.stderr, flush=True)
            self.stop_event.set()

    # -- artifacts and models -------------------------------------------------------------------
    def artifact_path(self, kind: ArtifactKind, name: str) -> Path:
        from hala_core.specs import check_name

        check_name(name, f"{kind} name")
        return getattr(self.settings, _ARTIFACT_DIRS[kind]) / name

    def add_artifact(self, kind: ArtifactKind, name: str, path: Path, metadata: dict[str, Any] | None = None,
                     inputs: list[int] | tuple[int, ...] = ()) -> int:
        with session_scope(self._url) as s:
            art = register_artifact(s, kind, name, str(Path(path).resolve()), metadata, job_id=self.job_id,
                                    inputs=inputs, owner=self.owner)
            self.log(f"artifact {kind} {name!r} → {art.path}")
            return art.id

    def resolve_model(self, ref: str) -> ResolvedModel:
        with session_scope(self._url) as s:
            return resolve_model_ref(s, self.settings, ref, register_external=True)

    def resolve_dataset(self, ref: str) -> tuple[Path, int | None]:
        with session_scope(self._url) as s:
            return resolve_dataset_ref(s, self.settings, ref, register_external=True)

    @property
    def data_dir(self) -> Path | None:
        return self.settings.data_dir
