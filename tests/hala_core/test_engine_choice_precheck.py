"""The engine choice on translate and eval specs: where vLLM is missing, engine vllm is refused before anything is
queued, with the reason (runs in the main environment, without vLLM; vLLM's absence is simulated where it exists)."""

from __future__ import annotations

import importlib.util

import pytest

from db.session import read_scope
from hala_core.engine import ENGINES, VLLM_MISSING, make_engine, vllm_available
from hala_core.settings import Settings
from hala_core.specs import EvalSpec, TranslateSpec, VllmOptions, parse_spec
from jobs.precheck import check_engine, precheck
from tests.support.workspace import workspace  # noqa: F401


@pytest.fixture
def no_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "vllm" else real(name, *a, **k))


def test_vllm_available_says_why_not(no_vllm):
    ok, reason = vllm_available()
    assert not ok and reason == VLLM_MISSING
    assert "scripts/ensure-vllm-env" in reason and "`vllm` extra" in reason
    assert ENGINES == ("transformers", "vllm")
    with pytest.raises(ValueError, match="vLLM is not installed"):
        make_engine("vllm", "/nonexistent")


@pytest.mark.parametrize("raw", [
    {"kind": "translate", "corpus": "nope", "model": "nope", "engine": "vllm"},
    {"kind": "eval", "models": ["nope"], "benchmarks": ["exams_ar"], "engine": "vllm"},
])
def test_precheck_refuses_vllm_when_missing(no_vllm, workspace: Settings, raw):  # noqa: F811
    with read_scope(workspace.db_url) as s, pytest.raises(ValueError) as err:
        precheck(s, workspace, raw)
    assert str(err.value) == f"engine vllm: {VLLM_MISSING}"  # the engine is checked first: nothing else matters


def test_transformers_engine_passes_the_engine_check(no_vllm):
    check_engine(TranslateSpec(corpus="c", model="m"))
    check_engine(EvalSpec(models=("m",)))


def test_spec_fields():
    t = TranslateSpec(corpus="c", model="m", engine="vllm", vllm={"tensor_parallel_size": 2, "kv_cache_gb": 4})
    assert t.vllm == VllmOptions(tensor_parallel_size=2, kv_cache_gb=4)
    assert t.vllm.engine_kwargs() == {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.9,
                                      "max_model_len": None, "enforce_eager": None, "kv_cache_gb": 4.0,
                                      "quantization": None}
    assert parse_spec(t.to_yaml()) == t
    assert "settings" not in t.settings_key() and "engine" not in t.settings_key()  # resumable across engines
    assert EvalSpec(models=("m",)).engine == "hf" and TranslateSpec(corpus="c", model="m").engine == "transformers"
    with pytest.raises(ValueError, match="engine"):
        parse_spec({"kind": "eval", "models": ["m"], "engine": "onnx"})
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        parse_spec({"kind": "translate", "corpus": "c", "model": "m", "vllm": {"gpu_memory_utilization": 1.5}})
