"""The demo tokenizer and the tiny random-weight LFM2 demo models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from hala_core.context import RunContext, StopRequested
from hala_core.demo_models import (
    CHAT_TEMPLATE,
    DEMO_LABEL,
    build_demo_model,
    build_tokenizer,
    demo_models_step,
)
from hala_core.specs import DemoModelsSpec

ROUND_TRIP = [
    "ما هي عاصمة مصر؟",
    "مُحَمَّدٌ رَسُولُ اللَّهِ",  # diacritics (harakat)
    "عدد الطلاب ٢٥ طالباً، والامتحان يوم ٣/٤.",  # Arabic-Indic digits and Arabic punctuation
    "Translate to Arabic: Good morning. → صباح الخير.",
    "Mixed نص عربي with English, 123 numbers and an emoji 🙂",
    "  leading and trailing spaces  \n\ttabs and\nnew lines\n",
    "ﻻ ﷲ ‏RLM‏ and ZWJ\u200d characters",  # presentation forms and bidi marks
    "",
]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def tokenizer(demo_models_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_models_dir["demo-lfm2-a"]))


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_tokenizer_round_trips_arabic_and_mixed_text(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_shape_and_special_tokens(tokenizer):
    assert 600 <= len(tokenizer) <= 900
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|pad|>", 0)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|startoftext|>", 1)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    # Arabic words are learnt as multi-byte merges, not left as raw bytes.
    assert len(tokenizer("ما هي عاصمة مصر؟")["input_ids"]) < len("ما هي عاصمة مصر؟".encode())


def test_build_tokenizer_is_deterministic(tmp_path, demo_models_dir):
    build_tokenizer(tmp_path / "tok")
    built = json.loads((tmp_path / "tok" / "tokenizer.json").read_text(encoding="utf-8"))
    saved = json.loads((demo_models_dir["demo-lfm2-a"] / "tokenizer.json").read_text(encoding="utf-8"))
    assert built["model"]["vocab"] == saved["model"]["vocab"]
    assert built["model"]["merges"] == saved["model"]["merges"]


def test_chat_template_applies_and_marks_assistant_text(tokenizer):
    assert tokenizer.chat_template == CHAT_TEMPLATE
    messages = [
        {"role": "system", "content": "أنت مساعد مفيد."},
        {"role": "user", "content": "ما هي عاصمة مصر؟"},
        {"role": "assistant", "content": "القاهرة."},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|startoftext|><|im_start|>system\nأنت مساعد مفيد.<|im_end|>\n"
        "<|im_start|>user\nما هي عاصمة مصر؟<|im_end|>\n"
        "<|im_start|>assistant\nالقاهرة.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")

    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == "القاهرة.<|im_end|>"  # what assistant-only loss trains on


def test_demo_model_config_files_and_card(demo_models_dir, tokenizer):
    path = demo_models_dir["demo-lfm2-a"]
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["Lfm2ForCausalLM"]
    assert cfg["layer_types"] == ["conv", "full_attention"]
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (64, 128, 2)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (4, 2)
    assert cfg["conv_dim"] == cfg["conv_dim_out"] == cfg["block_dim"] == 64
    assert cfg["tie_word_embeddings"] is True
    assert cfg["vocab_size"] == len(tokenizer)
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin"))
    assert all(t.dtype == torch.float32 for t in _tensors(path).values())
    card = (path / "README.md").read_text(encoding="utf-8")
    assert DEMO_LABEL in card
    assert "Apache-2.0" in card and "license: apache-2.0" in card


def test_demo_model_is_deterministic_per_seed(tmp_path, demo_models_dir):
    again = build_demo_model(tmp_path / "again", seed=0)
    a, a2, b = _tensors(demo_models_dir["demo-lfm2-a"]), _tensors(again), _tensors(demo_models_dir["demo-lfm2-b"])
    assert a.keys() == a2.keys() == b.keys()
    assert all(torch.equal(a[k], a2[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])


def test_demo_model_loads_and_generates(demo_models_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(demo_models_dir["demo-lfm2-b"]))
    assert type(model).__name__ == "Lfm2ForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    enc = tokenizer(["صباح الخير"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 5
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_demo_models_step_builds_registers_and_reuses(fake_ctx):
    ctx = fake_ctx()
    assert isinstance(ctx, RunContext)
    spec = DemoModelsSpec(names=("tiny-a", "tiny-b"), hidden_size=32)
    demo_models_step(spec, ctx)

    for seed, name in enumerate(("tiny-a", "tiny-b")):
        rec = ctx.artifact(name)
        assert rec.path == ctx.artifact_path("model", name)
        assert (rec.path / "config.json").is_file()
        meta = rec.metadata
        assert meta["demo"] is True and meta["label"] == DEMO_LABEL and meta["licence"] == "Apache-2.0"
        assert meta["architecture"] == "Lfm2ForCausalLM"
        assert (meta["hidden_size"], meta["num_layers"], meta["seed"]) == (32, 2, seed)
        assert isinstance(meta["parameters"], int) and meta["parameters"] > 0
    assert ctx.progress_events[-1][:2] == (2, 2)
    assert [m["name"] for m in ctx.result["models"]] == ["tiny-a", "tiny-b"]

    weights = ctx.artifact("tiny-a").path / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    demo_models_step(spec, ctx)  # second run: found, not rebuilt, registered again (idempotent)
    assert weights.stat().st_mtime_ns == mtime
    assert ctx.artifact("tiny-a").calls == 2 and len(ctx.artifacts) == 2
    assert all(m["reused"] for m in ctx.result["models"])

    demo_models_step(spec.model_copy(update={"overwrite": True}), ctx)
    assert not any(m["reused"] for m in ctx.result["models"])


def test_demo_models_step_stops_when_asked(fake_ctx):
    ctx = fake_ctx(stop=True)
    with pytest.raises(StopRequested):
        demo_models_step(DemoModelsSpec(names=("x",)), ctx)
    assert not ctx.artifacts


def test_demo_llama_defaults_fit_vllms_cpu_attention(fake_ctx):
    spec = DemoModelsSpec.model_validate({"arch": "llama"})
    assert (spec.names, spec.hidden_size) == (("demo-llama-a", "demo-llama-b"), 128)
    assert DemoModelsSpec.model_validate({"arch": "llama", "hidden_size": 256, "names": ["x"]}).hidden_size == 256
    ctx = fake_ctx()
    demo_models_step(DemoModelsSpec.model_validate({"arch": "llama", "names": ["ll"]}), ctx)
    meta = ctx.artifact("ll").metadata
    assert (meta["architecture"], meta["hidden_size"]) == ("LlamaForCausalLM", 128)
    config = json.loads((ctx.artifact("ll").path / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM CPU: head sizes 32, 64, …
