"""Read-side queries for the Runs tab and the CLI: plain dicts, ready to show."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.artifacts import lineage
from db.models import FINAL_STATES, Artifact, Job, Metric, utcnow


def _fmt(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else ""


def progress_text(job: Job) -> str:
    if job.progress_total:
        pct = 100.0 * job.progress_done / job.progress_total
        return f"{job.progress_done}/{job.progress_total} ({pct:.0f}%)"
    return ""


def duration_s(job: Job) -> float | None:
    if not job.started_at:
        return None
    return ((job.finished_at or utcnow()) - job.started_at).total_seconds()


def jobs_table(s: Session, kind: str | None = None, status: str | None = None, owner: str | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
    q = select(Job).order_by(Job.id.desc()).limit(limit)
    if kind:
        q = q.where(Job.kind == kind)
    if status:
        q = q.where(Job.status == status)
    if owner:
        q = q.where(Job.owner == owner)
    out = []
    for j in s.scalars(q):
        d = duration_s(j)
        out.append({"id": j.id, "kind": j.kind, "status": j.status, "owner": j.owner or "",
                    "progress": progress_text(j), "created": _fmt(j.created_at),
                    "duration_s": round(d, 1) if d is not None else None,
                    "name": (j.spec or {}).get("output") or "", "where": where_text(j)})
    return out


def where_text(j: Job) -> str:
    """Where a job runs, for the Runs table: ``local``, or ``slurm 42 · RUNNING`` once submitted."""
    if j.executor != "slurm":
        return j.executor or "local"
    handle = j.executor_handle or ""
    slurm_id = handle.split(":", 1)[1] if handle.startswith("slurm:") else ""
    state = j.executor_state or ""
    if j.status in FINAL_STATES and state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
        state = ""  # the job has ended; the worker records Slurm's final word on its next look
    where = f"slurm {slurm_id}".strip()
    return f"{where} · {state}" if state else where


def job_artifacts(s: Session, job_id: int) -> list[dict[str, Any]]:
    arts = s.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id))
    return [{"id": a.id, "kind": a.kind, "name": a.name, "path": a.path, "metadata": a.meta,
             "lineage": lineage(s, a.id)} for a in arts]


def job_summary(s: Session, job_id: int, with_spec: bool = False) -> dict[str, Any]:
    j = s.get(Job, job_id)
    if j is None:
        raise ValueError(f"no job {job_id}")
    d = duration_s(j)
    info: dict[str, Any] = {
        "id": j.id, "kind": j.kind, "status": j.status, "owner": j.owner, "attempt": j.attempt,
        "progress": progress_text(j), "progress_done": j.progress_done, "progress_total": j.progress_total,
        "progress_message": j.progress_message, "created": _fmt(j.created_at), "started": _fmt(j.started_at),
        "finished": _fmt(j.finished_at), "duration_s": round(d, 1) if d is not None else None,
        "worker": j.worker_id, "executor": j.executor, "handle": j.executor_handle, "pid": j.pid,
        "executor_state": j.executor_state, "where": where_text(j),
        "exit_code": j.exit_code, "error": j.error, "log_path": j.log_path, "cancel_requested": j.cancel_requested,
        "parent_id": j.parent_id, "resume_of_id": j.resume_of_id, "result": j.result,
        "artifacts": job_artifacts(s, job_id),
    }
    if with_spec:
        info["spec"] = j.spec
    return info


def job_metrics(s: Session, job_id: int) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for m in s.scalars(select(Metric).where(Metric.job_id == job_id).order_by(Metric.key, Metric.step, Metric.id)):
        series.setdefault(m.key, []).append((m.step, m.value))
    return series


def job_owners(s: Session) -> list[str]:
    return sorted(o for o in s.scalars(select(Job.owner).distinct()) if o)


def finished_results(s: Session, kind: str, limit: int = 500) -> list[dict[str, Any]]:
    """Succeeded jobs of one kind with their spec and result, newest first (for comparison views)."""
    q = (select(Job).where(Job.kind == kind, Job.status == "succeeded").order_by(Job.id.desc()).limit(limit))
    return [{"id": j.id, "owner": j.owner, "spec": j.spec, "result": j.result or {},
             "finished": _fmt(j.finished_at)} for j in s.scalars(q)]


def _resumed_from_step(s: Session, job: Job) -> int | None:
    """The step a resumed training job started from: its checkpoint artifact's ``step``, else its first logged
    step minus one (None when neither is known yet)."""
    ref = (job.spec or {}).get("resume_from")
    if ref:
        art = s.scalar(select(Artifact).where(Artifact.kind == "model", Artifact.name == ref))
        step = (art.meta or {}).get("step") if art is not None else None
        if isinstance(step, int | float):
            return int(step)
    first = s.scalar(select(Metric.step).where(Metric.job_id == job.id).order_by(Metric.step).limit(1))
    return first - 1 if first is not None else None


def run_curves(s: Session, job_id: int) -> dict[str, list[tuple[int, float]]]:
    """A training run's metrics including its resume chain (``Job.resume_of_id``), oldest job first.

    Of each earlier job only the steps up to the one its successor resumed from are kept, so a resumed run's
    curve continues where the checkpoint left off (a later part of the old run that was thrown away is not
    drawn)."""
    job = s.get(Job, job_id)
    if job is None:
        raise ValueError(f"no job {job_id}")
    chain: list[tuple[int, int | None]] = []  # (job id, keep steps ≤ this; None = all), newest first
    limit: int | None = None
    seen: set[int] = set()
    while job is not None and job.id not in seen:
        seen.add(job.id)
        chain.append((job.id, limit))
        if job.resume_of_id is None:
            break
        step = _resumed_from_step(s, job)
        if step is not None:
            limit = step if limit is None else min(limit, step)
        job = s.get(Job, job.resume_of_id)
    series: dict[str, list[tuple[int, float]]] = {}
    for jid, keep in reversed(chain):
        for key, points in job_metrics(s, jid).items():
            series.setdefault(key, []).extend(p for p in points if keep is None or p[0] <= keep)
    for points in series.values():
        points.sort(key=lambda p: p[0])  # stable: within a step, the order they were logged in
    return series
