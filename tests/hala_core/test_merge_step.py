"""merge_step end to end with the in-memory context: files, card, samples, lineage, stop, refusals."""

from __future__ import annotations

import json

import pytest
import yaml

from hala_core.context import StopRequested
from hala_core.demo_models import DEMO_LABEL
from hala_core.merge import MERGEKIT_CONFIG_FILE, SAMPLES_FILE, combined_licence, merge_step
from hala_core.specs import MergeSpec

DEMO_META = {"demo": True, "label": DEMO_LABEL, "licence": "Apache-2.0", "architecture": "Lfm2ForCausalLM"}


@pytest.fixture
def registered(fake_ctx, demo_models_dir):
    ctx = fake_ctx()
    ids = {name: ctx.register_model(name, path, metadata=DEMO_META) for name, path in demo_models_dir.items()}
    return ctx, ids


def test_merge_step_end_to_end(registered, demo_models_dir):
    from mergekit.config import MergeConfiguration

    ctx, ids = registered
    prompts = ("ما هي عاصمة مصر؟", "Translate to Arabic: Good morning.")
    spec = MergeSpec(base_model="demo-lfm2-a", model="demo-lfm2-b", t=[0.2, 0.8], output="hala-merge",
                     sample_prompts=prompts, sample_max_new_tokens=4)
    merge_step(spec, ctx)

    rec = ctx.artifact("hala-merge")
    out = ctx.artifact_path("model", "hala-merge")
    assert rec.path == out and rec.inputs == [ids["demo-lfm2-a"], ids["demo-lfm2-b"]]
    meta = rec.metadata
    assert meta["method"] == "slerp" and meta["t"] == [0.2, 0.8] and meta["layer_t"] == pytest.approx([0.2, 0.8])
    assert (meta["base_model"], meta["model"]) == ("demo-lfm2-a", "demo-lfm2-b")
    assert meta["licence"] == "Apache-2.0" and meta["demo"] is True and meta["label"] == DEMO_LABEL
    assert meta["architecture"] == "Lfm2ForCausalLM" and meta["parameters"] > 0
    assert [(k, v, s) for k, v, s in ctx.metrics if k == "t"] == [("t", 0.2, 0), ("t", 0.8, 1)]
    angles = [v for k, v, _ in ctx.metrics if k == "angle_deg"]
    assert len(angles) == 2 and all(0 < a < 180 for a in angles)

    # the model, its tokenizer and the exact mergekit YAML that ran, side by side
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MERGEKIT_CONFIG_FILE):
        assert (out / f).is_file(), f
    saved_yaml = (out / MERGEKIT_CONFIG_FILE).read_text(encoding="utf-8")
    assert saved_yaml == ctx.result["yaml"]
    MergeConfiguration.model_validate(yaml.safe_load(saved_yaml))
    assert yaml.safe_load(saved_yaml)["base_model"] == str(demo_models_dir["demo-lfm2-a"].resolve())

    card = (out / "README.md").read_text(encoding="utf-8")
    for needle in ("slerp", "demo-lfm2-a", "demo-lfm2-b", "[0.2, 0.8]", "Apache-2.0", DEMO_LABEL, "merge_method: slerp"):
        assert needle in card, needle

    samples = json.loads((ctx.job_dir / SAMPLES_FILE).read_text(encoding="utf-8"))
    assert [s["prompt"] for s in samples] == list(prompts)
    for s in samples:
        assert set(s) == {"prompt", "a", "b", "merge"}
        assert all(isinstance(s[k], str) for k in ("a", "b", "merge"))
    assert ctx.result["samples"] == samples
    assert ctx.result["output_path"] == str(out) and ctx.result["layer_t"] == pytest.approx([0.2, 0.8])

    steps = [(d, t) for d, t, _ in ctx.progress_events]
    assert steps == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert ctx.stop_checks >= 4  # checked between phases
    assert not any("different tokenizer" in line for line in ctx.logs)


def test_refuses_an_existing_output(registered):
    ctx, _ = registered
    out = ctx.artifact_path("model", "taken")
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="already exists"):
        merge_step(MergeSpec(base_model="demo-lfm2-a", model="demo-lfm2-b", output="taken", sample_prompts=()), ctx)
    assert (out / "config.json").read_text() == "{}"  # left alone


def test_stop_before_merge_writes_nothing(fake_ctx, demo_models_dir):
    ctx = fake_ctx(models=demo_models_dir, stop=True)
    with pytest.raises(StopRequested):
        merge_step(MergeSpec(base_model="demo-lfm2-a", model="demo-lfm2-b", output="m"), ctx)
    assert not ctx.artifact_path("model", "m").exists() and not ctx.artifacts


def test_stop_during_sampling_keeps_the_registered_merge(fake_ctx, demo_models_dir):
    ctx = fake_ctx(models=demo_models_dir, stop_after_checks=1)
    with pytest.raises(StopRequested):
        merge_step(MergeSpec(base_model="demo-lfm2-a", model="demo-lfm2-b", output="m"), ctx)
    assert ctx.artifact("m").path.is_dir() and ctx.result is None


def test_plain_folders_without_metadata(fake_ctx, demo_models_dir):
    """Local paths (not artifacts): no inputs to link; licence and demo label are read from the inputs' cards."""
    ctx = fake_ctx()
    a, b = str(demo_models_dir["demo-lfm2-a"]), str(demo_models_dir["demo-lfm2-b"])
    merge_step(MergeSpec(base_model=a, model=b, output="m", sample_prompts=()), ctx)
    rec = ctx.artifact("m")
    assert rec.inputs == [] and rec.metadata["licence"] == "apache-2.0"
    assert rec.metadata["demo"] is True  # recognised from the inputs' cards
    assert ctx.result["samples"] == []


def test_combined_licence():
    assert combined_licence("CC-BY-NC-4.0", "cc-by-nc-4.0") == "CC-BY-NC-4.0"
    both = combined_licence("CC-BY-NC-4.0", "Apache-2.0")
    assert "CC-BY-NC-4.0" in both and "Apache-2.0" in both and "both" in both
    assert "unknown" in combined_licence(None, None)


def test_tokenizer_difference_is_logged(tmp_path, fake_ctx, demo_models_dir):
    import shutil

    from hala_core.merge import same_tokenizer

    a, b = demo_models_dir["demo-lfm2-a"], tmp_path / "b"
    shutil.copytree(demo_models_dir["demo-lfm2-b"], b)
    assert same_tokenizer(a, b)
    tok = json.loads((b / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    first, second = next(k for k, v in vocab.items() if v == 300), next(k for k, v in vocab.items() if v == 301)
    vocab[first], vocab[second] = 301, 300  # same size, different ids
    (b / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    assert not same_tokenizer(a, b)
    ctx = fake_ctx()
    merge_step(MergeSpec(base_model=str(a), model=str(b), output="m", sample_prompts=()), ctx)
    assert any("different tokenizer" in line for line in ctx.logs)
