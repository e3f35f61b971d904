"""Translate and eval jobs on engine vllm through the real job machinery: the spec is prechecked and queued in a
workspace SQLite, ``hala run --inline`` runs it in a ``python -m jobs.run`` subprocess, and the results are read
back from the database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from db.models import EvalResult, EvalSample, Job, Translation, TranslationRun
from db.session import read_scope
from hala_core.settings import Settings
from tests.support.app_server import register_demo_models
from tests.support.workspace import workspace  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "exams_ar").is_dir() or not (DATA / "ntrex128_en_ar").is_dir(),
                                reason="the shared sample data (exams_ar, ntrex128_en_ar) is not present")
pytestmark = [needs_data, pytest.mark.slow]


def registered(settings: Settings, model: Path) -> str:
    """Copy the model into the workspace and register it (job inputs must lie under HALA_HOME)."""
    register_demo_models(settings, {"demo-llama": model})
    return "demo-llama"


def run_inline(settings: Settings, spec: dict, timeout: float = 300) -> int:
    path = settings.home / f"spec-{len(list(settings.home.glob('spec-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    env = {**os.environ, "HALA_HOME": str(settings.home), "HALA_DB_URL": settings.db_url}
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "run", str(path), "--inline", "--json"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-4000:]
    with read_scope(settings.db_url) as s:
        return s.scalars(select(Job.id).order_by(Job.id.desc())).first()


def translations(settings: Settings, name: str) -> dict[int, str]:
    with read_scope(settings.db_url) as s:
        run = s.scalars(select(TranslationRun).where(TranslationRun.name == name)).one()
        return {t.segment_id: t.text for t in s.scalars(select(Translation).where(Translation.run_id == run.id))}


def test_translate_job_on_vllm_equals_transformers(workspace: Settings, vllm_demo_model: Path):  # noqa: F811
    from workbench.corpus_ops import import_file

    import_file(workspace, str(DATA / "ntrex128_en_ar"), "ntrex24", limit=24)
    common = {"kind": "translate", "corpus": "ntrex24", "model": registered(workspace, vllm_demo_model), "max_new_tokens": 16,
              "batch_size": 8, "commit_every": 8, "device": "cpu", "dtype": "float32", "double_share": 0.0}
    vllm_job = run_inline(workspace, {**common, "name": "by-vllm", "engine": "vllm",
                                      "vllm": {"kv_cache_gb": 1, "max_model_len": 1024}})
    run_inline(workspace, {**common, "name": "by-hf", "engine": "transformers"})
    by_vllm, by_hf = translations(workspace, "by-vllm"), translations(workspace, "by-hf")
    assert len(by_vllm) >= 24 and by_vllm == by_hf
    with read_scope(workspace.db_url) as s:
        job = s.get(Job, vllm_job)
        assert job.status == "succeeded" and job.result["done"] == job.result["segments"] == len(by_vllm)
        assert job.spec["engine"] == "vllm"
    log = Path(job.log_path).read_text(encoding="utf-8", errors="replace") if job.log_path else ""
    assert not log or "engine vllm" in log


def test_eval_job_on_vllm_records_results(workspace: Settings, vllm_demo_model: Path):  # noqa: F811
    job_id = run_inline(workspace, {"kind": "eval", "models": [registered(workspace, vllm_demo_model)],
                                    "benchmarks": ["exams_ar", "ntrex_en_ar"], "limit": 6, "batch_size": 8,
                                    "translation_max_new_tokens": 12, "device": "cpu", "engine": "vllm",
                                    "vllm": {"max_model_len": 2048}})
    with read_scope(workspace.db_url) as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded", job.error
        rows = {(r.benchmark, r.task, r.metric): r for r in
                s.scalars(select(EvalResult).where(EvalResult.job_id == job_id))}
        samples = list(s.scalars(select(EvalSample).where(EvalSample.job_id == job_id)))
    acc = rows[("exams_ar", "exams_ar", "acc")]
    assert 0.0 <= acc.value <= 1.0 and acc.n_samples == 6 and acc.harness_version == "0.4.13"
    assert 0.0 <= rows[("ntrex_en_ar", "ntrex_en_ar", "chrf++")].value <= 100.0
    mcq = [x for x in samples if x.benchmark == "exams_ar"]
    assert len(mcq) == 6 and all(len(x.response) == len(x.choices) for x in mcq)
    assert len([x for x in samples if x.benchmark == "ntrex_en_ar"]) == 6
    models = job.result["models"]
    assert set(models[0]["scores"]) == {"exams_ar", "ntrex_en_ar"}
