"""Checks that run before a job is queued, so that bad input is refused with a clear message up front."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.artifacts import find_artifact
from hala_core.settings import Settings
from hala_core.specs import BaseSpec, MergeSpec, parse_spec
from jobs.resolve import resolve_model_ref


def precheck(s: Session, settings: Settings, spec: BaseSpec | dict[str, Any] | str) -> BaseSpec:
    """Validate a spec and the things it points at; raise ValueError saying what is wrong."""
    if not isinstance(spec, BaseSpec):
        spec = parse_spec(spec)
    if isinstance(spec, MergeSpec):
        from hala_core.merge import validate_merge

        if find_artifact(s, "model", spec.output) is not None:
            raise ValueError(f"output {spec.output!r} is already a model artifact; choose another name")
        out_dir = settings.models_dir / spec.output
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ValueError(f"output folder {out_dir} already exists and is not empty; choose another name")
        validate_merge(spec, lambda ref: resolve_model_ref(s, settings, ref))
    return spec
