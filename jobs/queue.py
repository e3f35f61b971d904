"""Enqueue, claim, cancel, retry and clone jobs. The db is the queue; claiming is one atomic UPDATE."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import ACTIVE_STATES, FINAL_STATES, Job, utcnow
from hala_core.specs import BaseSpec, parse_spec

# pg_advisory_xact_lock key that serialises claims under a global limit on PostgreSQL ("hala" in ASCII)
CLAIM_LOCK_KEY = 0x68616C61


def enqueue(s: Session, spec: BaseSpec | dict[str, Any], owner: str | None = None, parent_id: int | None = None,
            resume_of_id: int | None = None) -> Job:
    """Validate the spec and add a queued job. Raises ValueError if the spec is invalid."""
    if not isinstance(spec, BaseSpec):
        spec = parse_spec(spec)
    data = spec.model_dump(mode="json")
    job = Job(kind=data["kind"], status="queued", spec=data, owner=owner, parent_id=parent_id,
              resume_of_id=resume_of_id, executor=data.get("executor") or "local")
    s.add(job)
    s.flush()
    return job


def claim_next(s: Session, worker_id: str, host: str, executor: str = "local",
               global_limit: int | None = None) -> int | None:
    """Claim the oldest queued job for this worker, or return None.

    One UPDATE … WHERE status='queued' … RETURNING: two workers (threads or processes, on one SQLite
    file or a server database) can never both claim one job. ``global_limit`` caps the number of
    claimed/running jobs across all workers, checked in the same statement.

    On SQLite the transaction holds the write lock (``BEGIN IMMEDIATE``), so claims run one at a time. On
    PostgreSQL (READ COMMITTED) the picked row is locked ``FOR UPDATE SKIP LOCKED``: a claimer skips a job
    another one is taking, and a job claimed and committed meanwhile fails the re-check of ``status``, so the
    next queued job is taken instead, without waiting or erroring. The ``global_limit`` count, though, would
    see only what was committed when the statement began (two claimers could both see one slot free), so
    with a limit the claims are serialised by a transaction-level advisory lock first.
    """
    if global_limit is not None and s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))
    pick = (select(Job.id).where(Job.status == "queued", Job.executor == executor)
            .order_by(Job.id).limit(1).with_for_update(skip_locked=True).scalar_subquery())
    stmt = (update(Job).where(Job.id == pick, Job.status == "queued")
            .values(status="claimed", worker_id=worker_id, host=host, claimed_at=utcnow(),
                    attempt=Job.attempt + 1, cancel_requested=False)
            .returning(Job.id))
    if global_limit is not None:
        active = select(func.count(Job.id)).where(Job.status.in_(ACTIVE_STATES)).scalar_subquery()
        stmt = stmt.where(active < global_limit)
    row = s.execute(stmt).first()
    return row[0] if row else None


def get_job(s: Session, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise ValueError(f"no job {job_id}")
    return job


def request_cancel(s: Session, job_id: int) -> str:
    """Cancel a job: a queued one at once, a claimed/running one by flag (the worker signals it)."""
    job = get_job(s, job_id)
    if job.status == "queued":
        n = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                      .values(status="cancelled", finished_at=utcnow(), error="cancelled before it started")).rowcount
        if n:
            return "cancelled"
        s.refresh(job)
    if job.status in ACTIVE_STATES:
        job.cancel_requested = True
        return "cancel requested"
    raise ValueError(f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")


def retry(s: Session, job_id: int, owner: str | None = None) -> Job:
    """Queue the same spec again as a new job linked to the old one."""
    old = get_job(s, job_id)
    if old.status not in FINAL_STATES:
        raise ValueError(f"job {job_id} is {old.status}; retry is for finished jobs ({', '.join(FINAL_STATES)})")
    return enqueue(s, old.spec, owner=owner or old.owner, parent_id=old.id)


def clone(s: Session, job_id: int, edits: dict[str, Any] | str | None = None, owner: str | None = None) -> Job:
    """Queue a copy of a job's spec with edits: a dict of fields to change, or a whole spec as YAML."""
    old = get_job(s, job_id)
    if isinstance(edits, str):
        new_spec = parse_spec(edits)
    else:
        new_spec = parse_spec({**old.spec, **(edits or {})})
    if new_spec.kind != old.kind:  # type: ignore[attr-defined]
        raise ValueError(f"a clone keeps the kind of job {job_id} ({old.kind}), not {new_spec.kind}")  # type: ignore[attr-defined]
    return enqueue(s, new_spec, owner=owner or old.owner, parent_id=old.id)


def resume(s: Session, job_id: int, checkpoint: str | None = None, edits: dict[str, Any] | None = None,
           owner: str | None = None) -> Job:
    """Continue a finished training run from one of its checkpoints (default: its latest) as a new job linked
    to the old one (``resume_of_id``), with optional spec edits such as more ``max_steps`` or epochs."""
    from sqlalchemy import select

    from db.models import Artifact

    old = get_job(s, job_id)
    if old.kind != "train":
        raise ValueError(f"job {job_id} is a {old.kind} job; only train jobs resume from checkpoints "
                         "(a stopped translation resumes with retry)")
    if old.status not in FINAL_STATES:
        raise ValueError(f"job {job_id} is {old.status}; stop it first, then resume")
    points = [a for a in s.scalars(select(Artifact).where(Artifact.kind == "model", Artifact.job_id == job_id))
              if (a.meta or {}).get("checkpoint")]
    if checkpoint is None:
        if not points:
            raise ValueError(f"job {job_id} saved no checkpoint to resume from; retry it instead")
        checkpoint = max(points, key=lambda a: (a.meta or {}).get("step", 0)).name
    elif points and checkpoint not in {a.name for a in points}:
        names = ", ".join(sorted(a.name for a in points))
        raise ValueError(f"{checkpoint!r} is not a checkpoint of job {job_id}; its checkpoints: {names}")
    chosen = next((a for a in points if a.name == checkpoint), None)
    step = (chosen.meta or {}).get("step") if chosen is not None else None
    data = {**old.spec, **(edits or {}), "resume_from": checkpoint}
    if step is not None and 0 < int(data.get("max_steps", -1)) <= int(step):
        raise ValueError(f"{checkpoint} is at step {step} and max_steps is {data['max_steps']}: raise max_steps "
                         "(e.g. --set max_steps=" + str(int(step) * 2) + ") to train further")
    if "output" not in (edits or {}) and s.scalar(select(Artifact.id).where(
            Artifact.kind == "model", Artifact.name == old.spec.get("output"))) is not None:
        # the run already produced its final model: the continuation gets its own name instead of overwriting it
        data["output"] = f"{old.spec['output']}-from-step{step if step is not None else 'ckpt'}"
    spec = parse_spec(data)
    return enqueue(s, spec, owner=owner or old.owner, parent_id=old.id, resume_of_id=old.id)


def finish(s: Session, job_id: int, status: str, error: str | None = None, exit_code: int | None = None,
           only_if_active: bool = True) -> bool:
    """Move a job to a final state (only from claimed/running unless told otherwise)."""
    assert status in FINAL_STATES, status
    stmt = update(Job).where(Job.id == job_id)
    if only_if_active:
        stmt = stmt.where(Job.status.in_(ACTIVE_STATES))
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if error is not None:
        values["error"] = error[-4000:]
    if exit_code is not None:
        values["exit_code"] = exit_code
    return s.execute(stmt.values(**values)).rowcount > 0


def stale_cutoff(seconds: float):
    return utcnow() - timedelta(seconds=seconds)


def claim_job(s: Session, job_id: int, worker_id: str, host: str) -> bool:
    """Claim one given job (for ``--inline`` runs); False if it is no longer queued."""
    n = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                  .values(status="claimed", worker_id=worker_id, host=host, claimed_at=utcnow(),
                          attempt=Job.attempt + 1, cancel_requested=False)).rowcount
    return n > 0
