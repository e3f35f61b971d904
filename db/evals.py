"""Evaluation scores and per-sample records: writes from eval jobs, reads for the leaderboard and drill-down."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import Artifact, EvalResult, EvalSample

RESULT_FIELDS = ("benchmark", "task", "metric", "value", "stderr", "n_samples", "num_fewshot", "harness_version",
                 "task_version")
SAMPLE_FIELDS = ("benchmark", "task", "doc_id", "prompt", "choices", "response", "target", "correct", "score")


def record_eval(s: Session, job_id: int, model_ref: str, model_artifact_id: int | None,
                results: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
    """Store one model's scores and samples for a job (replacing what that job stored for it before)."""
    for r in results:  # check everything before anything is replaced
        missing = [f for f in ("benchmark", "task", "metric", "value") if r.get(f) is None]
        if missing:
            raise ValueError(f"evaluation result without {', '.join(missing)}: {r}")
    s.execute(delete(EvalResult).where(EvalResult.job_id == job_id, EvalResult.model_ref == model_ref))
    s.execute(delete(EvalSample).where(EvalSample.job_id == job_id, EvalSample.model_ref == model_ref))
    for r in results:
        s.add(EvalResult(job_id=job_id, model_ref=model_ref, model_artifact_id=model_artifact_id,
                         **{k: r.get(k) for k in RESULT_FIELDS}))
    s.add_all(EvalSample(job_id=job_id, model_ref=model_ref, **{k: x.get(k) for k in SAMPLE_FIELDS})
              for x in samples)
    s.flush()


def latest_scores(s: Session) -> list[dict[str, Any]]:
    """The newest score of every (model, benchmark, task, metric), with the model's artifact metadata."""
    newest = (select(EvalResult.model_ref, EvalResult.benchmark, EvalResult.task, EvalResult.metric,
                     func.max(EvalResult.id).label("id"))
              .group_by(EvalResult.model_ref, EvalResult.benchmark, EvalResult.task, EvalResult.metric).subquery())
    rows = s.execute(select(EvalResult, Artifact).join(newest, newest.c.id == EvalResult.id)
                     .outerjoin(Artifact, Artifact.id == EvalResult.model_artifact_id)).all()
    out = []
    for r, art in rows:
        out.append({"model": r.model_ref, "benchmark": r.benchmark, "task": r.task, "metric": r.metric,
                    "value": r.value, "stderr": r.stderr, "n_samples": r.n_samples, "num_fewshot": r.num_fewshot,
                    "harness_version": r.harness_version, "task_version": r.task_version, "job_id": r.job_id,
                    "model_path": art.path if art else None, "model_meta": dict(art.meta or {}) if art else {}})
    return out


def samples_for(s: Session, model_ref: str, benchmark: str, job_id: int | None = None,
                limit: int = 500) -> list[dict[str, Any]]:
    """Per-sample records of a model on a benchmark (from its newest eval job unless one is given)."""
    if job_id is None:
        job_id = s.scalar(select(func.max(EvalSample.job_id)).where(EvalSample.model_ref == model_ref,
                                                                     EvalSample.benchmark == benchmark))
    if job_id is None:
        return []
    q = (select(EvalSample).where(EvalSample.job_id == job_id, EvalSample.model_ref == model_ref,
                                  EvalSample.benchmark == benchmark)
         .order_by(EvalSample.task, EvalSample.doc_id).limit(limit))
    return [{"job_id": x.job_id, "task": x.task, "doc_id": x.doc_id, "prompt": x.prompt, "choices": x.choices,
             "response": x.response, "target": x.target, "correct": x.correct, "score": x.score}
            for x in s.scalars(q)]


def eval_job_models(s: Session, job_id: int) -> list[str]:
    # in the order they were recorded (SQLite's DISTINCT happens to keep it; PostgreSQL's does not)
    return list(s.scalars(select(EvalResult.model_ref).where(EvalResult.job_id == job_id)
                          .group_by(EvalResult.model_ref).order_by(func.min(EvalResult.id))))


def evaluated_models(s: Session) -> list[str]:
    return sorted(s.scalars(select(EvalResult.model_ref).distinct()))


def evaluated_benchmarks(s: Session) -> list[str]:
    return sorted(s.scalars(select(EvalResult.benchmark).distinct()))


def merge_artifacts(s: Session) -> list[dict[str, Any]]:
    """Slerp merges with their A, B and t (for the t-sweep view)."""
    arts = s.scalars(select(Artifact).where(Artifact.kind == "model"))
    return [{"name": a.name, "base_model": a.meta.get("base_model"), "model": a.meta.get("model"),
             "t": a.meta.get("t")} for a in arts if (a.meta or {}).get("method") == "slerp"]


