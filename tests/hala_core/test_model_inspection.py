"""Reading model folders from config.json and safetensors headers, and checking merge compatibility."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hala_core.demo_models import build_demo_model
from hala_core.models import check_compatible, inspect_model, looks_like_hub_id


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory, demo_models_dir) -> dict[str, Path]:
    """Models that differ from the demo pair in one way each."""
    root = tmp_path_factory.mktemp("odd_models")
    tok = demo_models_dir["demo-lfm2-a"]
    return {
        "hidden32": build_demo_model(root / "hidden32", seed=2, hidden_size=32, tokenizer_dir=tok),
        "layers4": build_demo_model(root / "layers4", seed=3, num_layers=4, tokenizer_dir=tok),
    }


def test_inspect_demo_model(demo_models_dir):
    from transformers import AutoModelForCausalLM

    path = demo_models_dir["demo-lfm2-a"]
    info = inspect_model(path)
    assert info.path == path.resolve()
    assert (info.architecture, info.model_type) == ("Lfm2ForCausalLM", "lfm2")
    assert (info.num_layers, info.hidden_size, info.dtype) == (2, 64, "float32")
    model = AutoModelForCausalLM.from_pretrained(str(path))
    assert info.parameters == sum(p.numel() for p in model.parameters())
    assert info.tensors["model.embed_tokens.weight"] == ((model.config.vocab_size, 64), "F32")
    assert info.tensors["model.layers.1.self_attn.k_proj.weight"] == ((32, 64), "F32")
    assert "lm_head.weight" not in info.tensors  # tied: stored once
    assert info.size_bytes == (path / "model.safetensors").stat().st_size


def test_inspect_sharded_model(tmp_path, demo_models_dir):
    from transformers import AutoModelForCausalLM

    src = demo_models_dir["demo-lfm2-a"]
    AutoModelForCausalLM.from_pretrained(str(src)).save_pretrained(str(tmp_path / "sharded"), max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    a, b = inspect_model(src), inspect_model(tmp_path / "sharded")
    assert b.tensors == a.tensors and b.parameters == a.parameters
    check_compatible(a, b)


def test_compatible_pair_passes(demo_models_dir):
    check_compatible(inspect_model(demo_models_dir["demo-lfm2-a"]), inspect_model(demo_models_dir["demo-lfm2-b"]))


def test_different_hidden_size_lists_shape_mismatches(demo_models_dir, odd_models):
    a, b = inspect_model(demo_models_dir["demo-lfm2-a"]), inspect_model(odd_models["hidden32"])
    with pytest.raises(ValueError) as err:
        check_compatible(a, b)
    msg = str(err.value)
    assert "tensor shapes differ" in msg
    vocab = a.tensors["model.embed_tokens.weight"][0][0]
    assert f"model.embed_tokens.weight: [{vocab}, 64] vs [{vocab}, 32]" in msg
    assert msg.count(" vs ") == 5 and "more)" in msg  # at most five listed


def test_different_layer_counts(demo_models_dir, odd_models):
    with pytest.raises(ValueError, match="different layer counts.*2 layers.*4"):
        check_compatible(inspect_model(demo_models_dir["demo-lfm2-a"]), inspect_model(odd_models["layers4"]))


def test_different_architectures_name_both(tmp_path, demo_models_dir):
    other = tmp_path / "other"
    shutil.copytree(demo_models_dir["demo-lfm2-b"], other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Lfm2ForCausalLM.*LlamaForCausalLM"):
        check_compatible(inspect_model(demo_models_dir["demo-lfm2-a"]), inspect_model(other))


def test_tensors_in_one_model_only(tmp_path, demo_models_dir):
    other = tmp_path / "other"
    shutil.copytree(demo_models_dir["demo-lfm2-b"], other)
    tensors = load_file(str(other / "model.safetensors"))
    tensors.pop("model.layers.1.self_attn.q_layernorm.weight")
    tensors["model.extra.weight"] = torch.zeros(3)
    save_file(tensors, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        check_compatible(inspect_model(demo_models_dir["demo-lfm2-a"]), inspect_model(other))
    msg = str(err.value)
    assert "only in A" in msg and "model.layers.1.self_attn.q_layernorm.weight" in msg
    assert "only in B" in msg and "model.extra.weight" in msg


def test_missing_folder_config_or_weights_are_clear_errors(tmp_path, demo_models_dir):
    with pytest.raises(ValueError, match="does not exist"):
        inspect_model(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no config\.json \(found: nothing\)"):
        inspect_model(empty)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(demo_models_dir["demo-lfm2-a"] / "config.json", no_weights)
    (no_weights / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no safetensors weights \(found: config\.json, pytorch_model\.bin\)"):
        inspect_model(no_weights)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("LiquidAI/LFM2-350M", True),
        ("hammh0a/Hala-1.2B", True),
        ("CohereLabs/command-a-translate-08-2025", True),
        ("/abs/path", False),
        ("./rel/path", False),
        ("../up/model", False),
        ("~/models/x", False),
        ("just-a-name", False),
        ("a/b/c", False),
        ("org/", False),
        ("", False),
    ],
)
def test_looks_like_hub_id(ref, expected):
    assert looks_like_hub_id(ref) is expected


def test_existing_relative_path_is_not_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert looks_like_hub_id("org/model") is False
