"""Artifacts (models, datasets, reports) and their lineage."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ARTIFACT_KINDS, Artifact, ArtifactInput


def register_artifact(
    s: Session,
    kind: str,
    name: str,
    path: str,
    metadata: dict[str, Any] | None = None,
    job_id: int | None = None,
    inputs: list[int] | tuple[int, ...] = (),
    owner: str | None = None,
) -> Artifact:
    """Add an artifact, or update the one of the same kind and name (its path, metadata and inputs)."""
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; kinds: {', '.join(ARTIFACT_KINDS)}")
    art = s.scalar(select(Artifact).where(Artifact.kind == kind, Artifact.name == name))
    if art is None:
        art = Artifact(kind=kind, name=name, path=path, meta=dict(metadata or {}), job_id=job_id, owner=owner)
        s.add(art)
        s.flush()
    else:
        art.path, art.meta = path, dict(metadata or {})
        if job_id is not None:
            art.job_id = job_id
    existing = set(s.scalars(select(ArtifactInput.input_id).where(ArtifactInput.artifact_id == art.id)))
    for input_id in dict.fromkeys(inputs):
        if input_id != art.id and input_id not in existing:
            s.add(ArtifactInput(artifact_id=art.id, input_id=input_id))
    s.flush()
    return art


def find_artifact(s: Session, kind: str, name: str) -> Artifact | None:
    return s.scalar(select(Artifact).where(Artifact.kind == kind, Artifact.name == name))


def find_artifact_by_path(s: Session, kind: str, path: str) -> Artifact | None:
    return s.scalar(select(Artifact).where(Artifact.kind == kind, Artifact.path == path))


def list_artifacts(s: Session, kind: str | None = None) -> list[Artifact]:
    q = select(Artifact).order_by(Artifact.kind, Artifact.name)
    if kind:
        q = q.where(Artifact.kind == kind)
    return list(s.scalars(q))


def lineage(s: Session, artifact_id: int, max_depth: int = 20) -> list[dict[str, Any]]:
    """Ancestors of an artifact, nearest first: ``[{"id", "kind", "name", "depth", "of", "job_id"}]``."""
    out: list[dict[str, Any]] = []
    seen = {artifact_id}
    frontier = [artifact_id]
    for depth in range(1, max_depth + 1):
        if not frontier:
            break
        rows = s.execute(
            select(ArtifactInput.artifact_id, Artifact)
            .join(Artifact, Artifact.id == ArtifactInput.input_id)
            .where(ArtifactInput.artifact_id.in_(frontier))
            .order_by(ArtifactInput.artifact_id, ArtifactInput.input_id)
        ).all()
        frontier = []
        for child_id, art in rows:
            out.append({"id": art.id, "kind": art.kind, "name": art.name, "depth": depth, "of": child_id,
                        "job_id": art.job_id})
            if art.id not in seen:
                seen.add(art.id)
                frontier.append(art.id)
    return out


def descendants(s: Session, artifact_id: int) -> list[Artifact]:
    ids = list(s.scalars(select(ArtifactInput.artifact_id).where(ArtifactInput.input_id == artifact_id)))
    return list(s.scalars(select(Artifact).where(Artifact.id.in_(ids)).order_by(Artifact.id))) if ids else []
