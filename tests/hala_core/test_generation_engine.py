"""The transformers generation engine on a tiny demo model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hala_core.engine import Engine, GenerationSettings, TransformersEngine

PROMPTS = [
    "Translate to Arabic: Good morning, how are you today?",
    "ما هي عاصمة مصر؟",
    "hi",
    "The weather is beautiful today.",
    "اكتب قصة قصيرة عن قطة.",
]


@pytest.fixture(scope="module")
def engine(demo_models_dir):
    eng = TransformersEngine(demo_models_dir["demo-lfm2-a"])
    yield eng
    eng.close()


def test_settings_defaults_and_frozen():
    s = GenerationSettings()
    assert (s.max_new_tokens, s.temperature, s.top_p, s.repetition_penalty, s.batch_size, s.seed) == (
        64, 0.0, 1.0, 1.0, 8, 0)
    assert s.greedy
    with pytest.raises(ValidationError):
        s.max_new_tokens = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        GenerationSettings(temperature=-1)


def test_engine_satisfies_protocol(engine):
    assert isinstance(engine, Engine)


def test_greedy_batched_equals_one_at_a_time_in_input_order(engine):
    settings = GenerationSettings(max_new_tokens=6, batch_size=2)
    batched = engine.generate(PROMPTS, settings)
    single = [engine.generate([p], settings)[0] for p in PROMPTS]
    assert batched == single
    assert len(batched) == len(PROMPTS)


def test_returns_only_new_text_within_the_token_budget(engine):
    outs = engine.generate(PROMPTS, GenerationSettings(max_new_tokens=4))
    tok = engine.tokenizer
    for prompt, out in zip(PROMPTS, outs, strict=True):
        assert isinstance(out, str)
        assert not out.startswith(prompt)
        assert len(tok(out, add_special_tokens=False)["input_ids"]) <= 4 + 1  # re-tokenising may split once
        assert "<|pad|>" not in out and "<|im_end|>" not in out


def test_zero_tokens_and_empty_input(engine):
    assert engine.generate(PROMPTS[:2], GenerationSettings(max_new_tokens=0)) == ["", ""]
    assert engine.generate([], GenerationSettings()) == []


def test_sampling_is_reproducible_with_a_seed(engine):
    s = GenerationSettings(max_new_tokens=6, temperature=1.0, seed=7)
    assert engine.generate(PROMPTS, s) == engine.generate(PROMPTS, s)


def test_close_frees_the_model(demo_models_dir):
    eng = TransformersEngine(demo_models_dir["demo-lfm2-b"])
    eng.close()
    assert eng.model is None
    with pytest.raises(RuntimeError, match="closed"):
        eng.generate(["x"], GenerationSettings())


def test_unknown_dtype_is_refused(demo_models_dir):
    with pytest.raises(ValueError, match="float32"):
        TransformersEngine(demo_models_dir["demo-lfm2-a"], dtype="int3")
