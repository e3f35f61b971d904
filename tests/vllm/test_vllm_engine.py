"""VllmEngine against TransformersEngine on the same tiny model: greedy float32 output is the same, string for
string; the rest of the Engine contract (order, empty input, zero tokens, sampling seed, close)."""

from __future__ import annotations

import pytest

from hala_core.engine import Engine, GenerationSettings, TransformersEngine, make_engine, vllm_available

PROMPTS = [
    "Translate to Arabic: Good morning, how are you today?", "ما هي عاصمة مصر؟", "hi",
    "The weather is beautiful today.", "اكتب قصة قصيرة عن قطة.", "The cat sat on the mat and looked outside.",
    "Hello world", "كيف حالك اليوم؟", "One two three four five six seven eight nine ten", "Arabic",
    "The market opens at nine in the morning.", "مرحبا", "Please translate this sentence into Arabic for me.", "x",
    "Numbers: 1 2 3", "السلام عليكم ورحمة الله",
]


@pytest.fixture(scope="module")
def hf_engine(vllm_demo_model):
    eng = TransformersEngine(vllm_demo_model, device="cpu", dtype="float32")
    yield eng
    eng.close()


def test_vllm_is_available_here():
    assert vllm_available() == (True, "")


def test_greedy_float32_equals_transformers(vllm_engine, hf_engine):
    settings = GenerationSettings(max_new_tokens=24, batch_size=5)
    expected = hf_engine.generate(PROMPTS, settings)
    got = vllm_engine.generate(PROMPTS, settings)
    assert got == expected
    assert vllm_engine.last_generated_tokens == hf_engine.last_generated_tokens > 0
    assert isinstance(vllm_engine, Engine)


def test_chat_prompts_and_repetition_penalty_equal_transformers(vllm_engine, hf_engine):
    from hala_core.translation import build_prompts

    prompts = build_prompts(PROMPTS[:6], "en-ar", "chat", vllm_engine.tokenizer)
    assert prompts == build_prompts(PROMPTS[:6], "en-ar", "chat", hf_engine.tokenizer)
    settings = GenerationSettings(max_new_tokens=16, repetition_penalty=1.3)
    assert vllm_engine.generate(prompts, settings) == hf_engine.generate(prompts, settings)


def test_empty_zero_tokens_and_sampling_seed(vllm_engine):
    assert vllm_engine.generate([], GenerationSettings()) == []
    assert vllm_engine.generate(PROMPTS[:2], GenerationSettings(max_new_tokens=0)) == ["", ""]
    s = GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    assert vllm_engine.generate(PROMPTS[:4], s) == vllm_engine.generate(PROMPTS[:4], s)


def test_make_engine_names():
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("onnx", "/nonexistent")


def test_cpu_refuses_a_head_size_it_cannot_run(demo_models_dir):
    from hala_core.engine_vllm import check_cpu_model

    with pytest.raises(ValueError, match="head size is 16"):
        check_cpu_model(demo_models_dir["demo-lfm2-a"])
