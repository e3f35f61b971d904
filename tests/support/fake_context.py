"""An in-memory ``RunContext`` for hala_core unit tests: records everything a step reports.

Only for tests of hala_core steps; the real context (backed by the database) lives in ``jobs/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hala_core.context import ArtifactKind, ResolvedModel
from hala_core.models import looks_like_hub_id


@dataclass
class ArtifactRecord:
    id: int
    kind: str
    name: str
    path: Path
    metadata: dict[str, Any]
    inputs: list[int]
    calls: int = 1


@dataclass
class FakeContext:
    workspace: Path
    job_id: int = 1
    models: dict[str, Path] = field(default_factory=dict)  # extra names resolve_model knows (not artifacts)
    data_dir: Path | None = None  # the sample data folder (../shared/data) when a test wants it
    stop: bool = False  # what should_stop() answers; set it from a test to simulate a cancel
    stop_after_checks: int | None = None  # or: answer True once should_stop() was asked this many times
    logs: list[str] = field(default_factory=list)
    metrics: list[tuple[str, float, int | None]] = field(default_factory=list)
    progress_events: list[tuple[int, int, str]] = field(default_factory=list)
    artifacts: dict[tuple[str, str], ArtifactRecord] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    stop_checks: int = 0
    evals: list[dict[str, Any]] = field(default_factory=list)  # one entry per record_eval call
    queued: list[dict[str, Any]] = field(default_factory=list)  # follow-up specs given to enqueue()
    store: Any = None  # a corpus store (db.corpora.CorpusStore on a test database) for translation steps

    @property
    def job_dir(self) -> Path:
        d = self.workspace / "jobs" / str(self.job_id)
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- RunContext ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.logs.append(message)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.metrics.append((key, float(value), step))

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.progress_events.append((done, total, message))

    def should_stop(self) -> bool:
        self.stop_checks += 1
        if self.stop_after_checks is not None and self.stop_checks > self.stop_after_checks:
            return True
        return self.stop

    def add_artifact(
        self,
        kind: ArtifactKind,
        name: str,
        path: Path,
        metadata: dict[str, Any] | None = None,
        inputs: list[int] | tuple[int, ...] = (),
    ) -> int:
        key = (kind, name)
        if key in self.artifacts:  # idempotent on (kind, name), like the db-backed context
            rec = self.artifacts[key]
            rec.path, rec.metadata, rec.inputs = Path(path), dict(metadata or {}), list(inputs)
            rec.calls += 1
            return rec.id
        rec = ArtifactRecord(len(self.artifacts) + 1, kind, name, Path(path), dict(metadata or {}), list(inputs))
        self.artifacts[key] = rec
        return rec.id

    def resolve_model(self, ref: str) -> ResolvedModel:
        rec = self.artifacts.get(("model", ref))
        if rec is not None:
            return ResolvedModel(ref=ref, path=rec.path, artifact_id=rec.id, metadata=dict(rec.metadata))
        if ref in self.models:
            return ResolvedModel(ref=ref, path=Path(self.models[ref]))
        p = Path(ref).expanduser()
        if p.exists():
            return ResolvedModel(ref=ref, path=p.resolve())
        if looks_like_hub_id(ref):
            return ResolvedModel(ref=ref, path=None, hub_id=ref)
        known = sorted({n for k, n in self.artifacts if k == "model"} | set(self.models))
        raise ValueError(f"unknown model {ref!r}; known models: {', '.join(known) or 'none'}")

    def enqueue(self, spec: dict[str, Any]) -> int:
        self.queued.append(dict(spec))
        return 1000 + len(self.queued)

    def corpus_store(self) -> Any:
        if self.store is None:
            raise ValueError("this test context was given no corpus store (FakeContext(store=...))")
        return self.store

    def resolve_dataset(self, ref: str) -> tuple[Path, int | None]:
        """A registered dataset artifact name → (its path, its id); an existing file/folder → (path, the id of a
        dataset artifact at that path, else None)."""
        rec = self.artifacts.get(("dataset", ref))
        if rec is not None:
            return rec.path, rec.id
        p = Path(ref).expanduser()
        if p.exists():
            p = p.resolve()
            for (kind, _name), r in self.artifacts.items():
                if kind == "dataset" and Path(r.path).resolve() == p:
                    return p, r.id
            return p, None
        known = sorted(n for k, n in self.artifacts if k == "dataset")
        raise ValueError(f"dataset {ref!r} is neither a dataset artifact nor an existing file or folder; "
                         f"known datasets: {', '.join(known) or 'none'}")

    def artifact_path(self, kind: ArtifactKind, name: str) -> Path:
        return self.workspace / f"{kind}s" / name

    def set_result(self, result: dict[str, Any]) -> None:
        self.result = result

    def record_eval(self, model_ref: str, model_artifact_id: int | None, results: list[dict[str, Any]],
                    samples: list[dict[str, Any]]) -> None:
        """Keeps what it gets; like the db-backed context, a second call for a model replaces the first."""
        self.evals = [e for e in self.evals if e["model_ref"] != model_ref]
        self.evals.append({"model_ref": model_ref, "model_artifact_id": model_artifact_id,
                           "results": [dict(r) for r in results], "samples": [dict(x) for x in samples]})

    # -- test helpers -------------------------------------------------------------------------
    def register_model(self, name: str, path: Path, metadata: dict[str, Any] | None = None) -> int:
        return self.add_artifact("model", name, path, metadata=metadata)

    def register_dataset(self, name: str, path: Path, metadata: dict[str, Any] | None = None) -> int:
        return self.add_artifact("dataset", name, path, metadata=metadata)

    def artifact(self, name: str, kind: str = "model") -> ArtifactRecord:
        return self.artifacts[(kind, name)]

    def eval_of(self, model_ref: str) -> dict[str, Any]:
        return next(e for e in self.evals if e["model_ref"] == model_ref)
