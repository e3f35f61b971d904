"""Checks that run before a job is queued, so that bad input is refused with a clear message up front."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.artifacts import find_artifact
from hala_core.settings import Settings
from hala_core.specs import BaseSpec, EvalSpec, MergeSpec, QuantizeSpec, TrainSpec, TranslateSpec, parse_spec
from jobs.resolve import resolve_dataset_ref, resolve_model_ref


def _check_output_free(s: Session, settings: Settings, name: str) -> None:
    from sqlalchemy import select

    from db.models import ACTIVE_STATES, Job

    for job_id, spec in s.execute(select(Job.id, Job.spec).where(Job.status.in_(("queued", *ACTIVE_STATES)))):
        if (spec or {}).get("output") == name:
            raise ValueError(f"job {job_id} is already writing the output {name!r}; choose another name")
    if find_artifact(s, "model", name) is not None:
        raise ValueError(f"output {name!r} is already a model artifact; choose another name")
    out_dir = settings.models_dir / name
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"output folder {out_dir} already exists and is not empty; choose another name")


def check_executor(settings: Settings, spec: BaseSpec) -> None:
    """Refuse an executor the workspace has not enabled: no worker would ever claim the job."""
    executor = getattr(spec, "executor", "local")
    if executor == "local":
        return
    from hala_core.executor_config import enabled_executors, load_executor_config

    if executor not in enabled_executors(load_executor_config(settings.home)):
        raise ValueError(f"executor {executor!r} is not enabled in this workspace: an admin enables it under "
                         f"Runs → Executors (saved in {settings.home / 'hala.yaml'}); executors enabled here: "
                         f"{', '.join(enabled_executors(load_executor_config(settings.home)))}")


def check_engine(spec: EvalSpec | TranslateSpec) -> None:
    """Refuse the vLLM engine up front where vLLM is not installed (the reason says how to get it). A job sent to
    Slurm runs with the compute nodes' Python (``hala.yaml``), which is not checked from here."""
    if spec.engine == "vllm" and spec.executor == "local":
        from hala_core.engine import vllm_available

        ok, reason = vllm_available()
        if not ok:
            raise ValueError(f"engine vllm: {reason}")


def precheck(s: Session, settings: Settings, spec: BaseSpec | dict[str, Any] | str) -> BaseSpec:
    """Validate a spec and the things it points at; raise ValueError saying what is wrong."""
    if not isinstance(spec, BaseSpec):
        spec = parse_spec(spec)
    check_executor(settings, spec)
    if isinstance(spec, MergeSpec):
        from hala_core.merge import validate_merge

        _check_output_free(s, settings, spec.output)
        validate_merge(spec, lambda ref: resolve_model_ref(s, settings, ref))
    elif isinstance(spec, QuantizeSpec):
        from hala_core.models import inspect_model
        from hala_core.quantize import check_quantizable

        _check_output_free(s, settings, spec.output)
        resolved = resolve_model_ref(s, settings, spec.model)
        if resolved.path is None:
            raise ValueError(f"model {spec.model!r} is a hub id that is not in the local cache, and no hub can be "
                             "reached from here: download it first or give a local folder")
        check_quantizable(spec, inspect_model(resolved.path))
        if spec.calibration is not None:
            resolve_dataset_ref(s, settings, spec.calibration.dataset)
        if spec.validation.reference_set:
            resolve_dataset_ref(s, settings, spec.validation.reference_set)
    elif isinstance(spec, EvalSpec):
        from hala_core.evaluate import prepare_benchmarks, resolve_eval_model

        check_engine(spec)
        for ref in spec.models:
            resolve_eval_model(ref, lambda r: resolve_model_ref(s, settings, r))
        prepare_benchmarks(spec.benchmarks, settings.home, settings.data_dir)
    elif isinstance(spec, TranslateSpec):
        from db.corpora import check_translation
        from hala_core.evaluate import resolve_eval_model

        check_engine(spec)
        check_translation(s, spec.corpus, spec.run_name(), model_ref=spec.model, direction=spec.direction,
                          template=spec.template, settings=spec.settings_key())
        resolve_eval_model(spec.model, lambda r: resolve_model_ref(s, settings, r), purpose="translation")
    elif isinstance(spec, TrainSpec):
        from hala_core.train import check_train

        _check_output_free(s, settings, spec.output)
        check_train(spec, lambda r: resolve_model_ref(s, settings, r),
                    lambda r: resolve_dataset_ref(s, settings, r), settings.home)
    return spec
