"""Turn a model reference (artifact name, local path or hub id) into a ``ResolvedModel``."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from db.artifacts import find_artifact, find_artifact_by_path, list_artifacts, register_artifact
from hala_core.context import ResolvedModel
from hala_core.settings import Settings, resolve_inside


def _hub_cached(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # not in the local cache (or the id is malformed)
        return None


def resolve_model_ref(s: Session, settings: Settings, ref: str, register_external: bool = False) -> ResolvedModel:
    """Resolve ``ref``: a model artifact name first, then a local folder (inside the allowed roots), then a hub id.

    With ``register_external`` a local folder or hub id that is not an artifact yet is registered as one
    (metadata ``external: true``) so that what is made from it has lineage.
    """
    from hala_core.models import looks_like_hub_id

    ref = (ref or "").strip()
    if not ref:
        raise ValueError("no model given: choose a model artifact, or type a local folder or a hub id")
    art = find_artifact(s, "model", ref)
    if art is not None:
        path = Path(art.path)
        adapter = (art.meta or {}).get("adapter") and (path / "adapter_config.json").is_file()
        if not (path / "config.json").is_file() and not adapter:  # a LoRA checkpoint holds adapter weights only
            raise ValueError(f"model artifact {ref!r} points at {path}, which has no config.json any more")
        return ResolvedModel(ref=ref, path=path, artifact_id=art.id, metadata=dict(art.meta or {}))
    candidate = Path(ref).expanduser()
    if candidate.is_absolute() or ref.startswith(".") or candidate.exists():
        path = resolve_inside(candidate, settings.read_roots)
        if not path.is_dir():
            raise ValueError(f"model folder {ref!r} does not exist")
        if not (path / "config.json").is_file():
            raise ValueError(f"{ref!r} is a folder but not a model: it has no config.json")
        art = find_artifact_by_path(s, "model", str(path))
        if art is None and register_external:
            art = register_artifact(s, "model", str(path), str(path), {"external": True, "source": "path"})
        return ResolvedModel(ref=ref, path=path, artifact_id=art.id if art else None,
                             metadata=dict(art.meta or {}) if art else {})
    if looks_like_hub_id(ref):
        cached = _hub_cached(ref)
        art = find_artifact(s, "model", ref)
        if art is None and register_external:
            art = register_artifact(s, "model", ref, str(cached or ref), {"external": True, "source": "hub"})
        return ResolvedModel(ref=ref, path=cached, hub_id=ref, artifact_id=art.id if art else None,
                             metadata=dict(art.meta or {}) if art else {})
    raise ValueError(f"model {ref!r} is not a model artifact, an existing folder or a hub id (org/name)")


def resolve_dataset_ref(s: Session, settings: Settings, ref: str,
                        register_external: bool = False) -> tuple[Path, int | None]:
    """A dataset artifact name, or a file/folder inside the allowed roots → (path, artifact id or None)."""
    ref = (ref or "").strip()
    if not ref:
        raise ValueError("no dataset given: choose a dataset artifact or give a file path")
    art = find_artifact(s, "dataset", ref)
    if art is not None:
        path = Path(art.path)
        if not path.exists():
            raise ValueError(f"dataset artifact {ref!r} points at {path}, which does not exist any more")
        return path, art.id
    if not Path(ref).expanduser().exists():
        names = [a.name for a in list_artifacts(s, "dataset")][:20]
        raise ValueError(f"dataset {ref!r} is neither a dataset artifact nor an existing file or folder; dataset "
                         f"artifacts: {', '.join(names) or 'none yet'}")
    path = resolve_inside(Path(ref).expanduser(), settings.read_roots)
    art = find_artifact_by_path(s, "dataset", str(path))
    if art is None and register_external:
        art = register_artifact(s, "dataset", str(path), str(path), {"external": True, "source": "path"})
    return path, art.id if art else None
