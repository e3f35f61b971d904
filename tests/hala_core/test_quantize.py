"""Quantization with real llm-compressor on the demo models: FP8_DYNAMIC, W8A8, W4A16, refusals, the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from hala_core.context import StopRequested
from hala_core.demo_models import DEMO_LABEL, build_demo_model
from hala_core.models import inspect_model
from hala_core.quantize import (
    CPU_NOTE,
    HEADLINE_KEYS,
    RECIPE_FILE,
    REPORT_JSON,
    REPORT_MD,
    check_quantizable,
    comparison_figure,
    comparison_rows,
    load_calibration,
    quantize_step,
    recipe_for,
    report_figures,
    report_table,
    suggest_group_size,
)
from hala_core.specs import QuantizeSpec
from tests.support.fake_context import FakeContext

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DATA_DIR = DATA if (DATA / "ntrex128_en_ar").is_dir() else None
DEMO_META = {"demo": True, "label": DEMO_LABEL, "licence": "Apache-2.0", "architecture": "Lfm2ForCausalLM"}
SMALL_VALIDATION = {"prompts": 8, "ppl_texts": 4, "translation_pairs": 2, "max_new_tokens": 4,
                    "throughput_prompts": 2, "throughput_tokens": 4}
CALIB_TEXTS = [
    {"messages": [{"role": "user", "content": en}, {"role": "assistant", "content": ar}]}
    for en, ar in zip(["Good morning.", "Where is the library?", "The weather is beautiful today.",
                       "I drink coffee every morning."] * 4,
                      ["صباح الخير.", "أين المكتبة؟", "الطقس جميل اليوم.", "أشرب القهوة كل صباح."] * 4, strict=True)
]
CPU_ONLY = pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="checks the CPU path")


@pytest.fixture(scope="module")
def demo128(demo_models_dir, tmp_path_factory) -> Path:
    """A demo model with hidden size 128 (a multiple of the W4A16 group size), sharing the demo tokenizer."""
    return build_demo_model(tmp_path_factory.mktemp("demo128") / "demo-lfm2-128", seed=5, hidden_size=128,
                            tokenizer_dir=demo_models_dir["demo-lfm2-a"])


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("calib") / "chat.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in CALIB_TEXTS) + "\n", encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def fp8_run(demo_models_dir, tmp_path_factory):
    """One FP8_DYNAMIC job on demo-lfm2-a, end to end, validated on 64 prompts; shared by several tests."""
    ws = tmp_path_factory.mktemp("fp8-workspace")
    ctx = FakeContext(workspace=ws, data_dir=DATA_DIR)
    src_id = ctx.register_model("demo-lfm2-a", demo_models_dir["demo-lfm2-a"], metadata=DEMO_META)
    spec = QuantizeSpec(model="demo-lfm2-a", scheme="FP8_DYNAMIC", output="demo-lfm2-a-fp8",
                        validation={"prompts": 64, "ppl_texts": 8, "translation_pairs": 4, "max_new_tokens": 8,
                                    "throughput_prompts": 4, "throughput_tokens": 8})
    quantize_step(spec, ctx)
    return ctx, src_id, ctx.artifact_path("model", "demo-lfm2-a-fp8")


def _run(scheme: str, source: Path, ctx: FakeContext, output: str, **kw) -> None:
    spec = QuantizeSpec(model=str(source), scheme=scheme, output=output, validation=SMALL_VALIDATION, **kw)
    quantize_step(spec, ctx)


# --------------------------------------------------------------------------- FP8_DYNAMIC (must-show)

def test_fp8_dynamic_output_is_float8_loads_and_agrees_with_the_original(fp8_run, demo_models_dir):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx, _, out = fp8_run
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    qcfg = config["quantization_config"]
    assert qcfg["quant_method"] == "compressed-tensors" and qcfg["format"] == "float-quantized"
    assert qcfg["ignore"] == ["lm_head"]

    # a Linear weight is stored as float8_e4m3fn with per-channel float32 scales
    info = inspect_model(out)
    name = "model.layers.0.feed_forward.w1"
    assert info.tensors[f"{name}.weight"][1] == "F8_E4M3"
    assert info.tensors[f"{name}.weight_scale"][1] == "F32"
    assert info.tensors[f"{name}.weight_scale"][0] == (info.tensors[f"{name}.weight"][0][0], 1)
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert fh.get_tensor(f"{name}.weight").dtype == torch.float8_e4m3fn
    assert info.tensors["model.embed_tokens.weight"][1] == "F32"  # embeddings are not Linear layers

    # transformers loads it and generates
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    ids = tok(["Good morning."], return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4

    # top-1 agreement over the 64 validation prompts (every position), at least 99 %
    agr = ctx.result["report"]["agreement"]
    assert agr["prompts"] == 64 and agr["positions"] >= 64
    assert agr["top1"] >= 0.99
    assert 0 <= agr["kl_mean"] < 1e-2 and 0 <= agr["max_abs_logit_diff"] < 0.5

    # an independent check: the next token after each of 64 prompts, original vs FP8, one prompt at a time
    original = AutoModelForCausalLM.from_pretrained(str(demo_models_dir["demo-lfm2-a"]))
    from hala_core.demo_corpus import corpus_lines

    same = 0
    with torch.inference_mode():
        for text in corpus_lines()[:64]:
            enc = tok(text, return_tensors="pt")
            same += int(original(**enc).logits[0, -1].argmax() == model(**enc).logits[0, -1].argmax())
    assert same / 64 >= 0.99


def test_quantize_step_end_to_end_artifacts_report_and_metrics(fp8_run, demo_models_dir):
    ctx, src_id, out = fp8_run
    rec = ctx.artifact("demo-lfm2-a-fp8")
    assert rec.path == out and rec.inputs == [src_id]
    meta = rec.metadata
    assert meta["scheme"] == "FP8_DYNAMIC" and meta["source"] == "demo-lfm2-a" and meta["licence"] == "Apache-2.0"
    assert meta["quant_method"] == "compressed-tensors" and meta["format"] == "float-quantized"
    assert meta["demo"] is True and meta["label"] == DEMO_LABEL
    assert meta["parameters"] == inspect_model(demo_models_dir["demo-lfm2-a"]).parameters
    assert 0 < meta["size_bytes"] < inspect_model(demo_models_dir["demo-lfm2-a"]).size_bytes
    assert meta["calibration"] is None and meta["llmcompressor_version"].startswith("0.14")
    assert set(meta["validation"]) == set(HEADLINE_KEYS)

    # recipe and card beside the model
    recipe = (out / RECIPE_FILE).read_text(encoding="utf-8")
    assert ctx.result["recipe"] == recipe
    mods = yaml.safe_load(recipe)["default_stage"]["default_modifiers"]
    assert mods["QuantizationModifier"]["scheme"] == "FP8_DYNAMIC" and mods["QuantizationModifier"]["ignore"] == ["lm_head"]
    card = (out / "README.md").read_text(encoding="utf-8")
    for needle in ("license: apache-2.0", "FP8_DYNAMIC", "demo-lfm2-a", "`lm_head`", DEMO_LABEL, "0.14.0",
                   "top-1 next-token agreement", "tokens/s", "QuantizationModifier", "data-free"):
        assert needle in card, needle

    # the report: an artifact of its own, fed by the model
    rep = ctx.artifact("demo-lfm2-a-fp8-validation", kind="report")
    assert rep.inputs == [rec.id]
    assert (rep.path / REPORT_JSON).is_file() and (rep.path / REPORT_MD).is_file()
    report = json.loads((rep.path / REPORT_JSON).read_text(encoding="utf-8"))
    assert report == json.loads(json.dumps(ctx.result["report"]))
    assert ctx.result["output_path"] == str(out)
    assert report["scheme"] == "FP8_DYNAMIC" and report["device"] == "cpu"
    size = report["size"]
    assert size["bytes_on_disk"]["quantized"] < size["bytes_on_disk"]["original"]
    assert size["parameter_bytes"]["quantized"] < size["parameter_bytes"]["original"] and 0 < size["ratio"] < 1
    assert report["perplexity"]["texts"] == 8 and report["perplexity"]["tokens"] > 8
    assert all(math.isfinite(report["perplexity"][k]) and report["perplexity"][k] > 1 for k in ("original", "quantized"))
    tr = report["translation"]
    assert tr["pairs"] == 4 and tr["direction"] == "en-ar" and tr["template"] == "chat"
    for k in ("chrf++", "bleu"):
        assert all(0 <= tr[k][r] <= 100 for r in ("original", "quantized"))
    assert len(tr["samples"]) == 4 and set(tr["samples"][0]) == {"source", "reference", "original", "quantized"}
    if DATA_DIR is not None:
        assert tr["reference_set"].startswith("NTREX") and tr["samples"][0]["source"].startswith("Welsh AMs")
    tp = report["throughput"]
    assert tp["original"] > 0 and tp["quantized"] > 0 and tp["tokens"]["original"] > 0
    # the CPU note says the quantized model is emulated and expected to be slower, instead of hiding it
    assert tp["note"] == CPU_NOTE.format(dtype="float32") and tp["note"] in report["notes"]
    assert "expected to be slower" in tp["note"] and "expected to be slower" in (rep.path / REPORT_MD).read_text()

    # every headline number logged as a metric
    logged = {k: v for k, v, _ in ctx.metrics}
    assert set(HEADLINE_KEYS) <= set(logged)
    assert logged["agreement_top1"] == report["agreement"]["top1"]
    assert logged["size_bytes_quantized"] == size["bytes_on_disk"]["quantized"]

    steps = [(d, t) for d, t, _ in ctx.progress_events]
    assert steps == [(i, 7) for i in range(8)]
    assert ctx.stop_checks >= 6


def test_report_table_figures_and_comparison(fp8_run):
    ctx, _, _ = fp8_run
    report = ctx.result["report"]
    rows = report_table(report)
    assert all(len(r) == 3 and all(isinstance(c, str) for c in r) for r in rows)
    labels = " | ".join(r[0] for r in rows)
    for needle in ("size on disk", "top-1", "KL", "perplexity", "chrF++", "BLEU", "tokens/s"):
        assert needle in labels
    figs = report_figures(report)
    assert len(figs) == 2
    assert len(figs[0].data) == 8  # chrF++, BLEU, perplexity, tokens/s × original/quantized
    figs[0].to_json(), figs[1].to_json()
    other = dict(report, output="demo-lfm2-a-w8", scheme="W8A8")
    cmp_rows = comparison_rows([report, other])
    assert [r["variant"] for r in cmp_rows] == ["demo-lfm2-a", "demo-lfm2-a-fp8", "demo-lfm2-a-w8"]
    assert cmp_rows[1]["scheme"] == "FP8_DYNAMIC"
    assert cmp_rows[1]["agreement_top1"] == pytest.approx(report["agreement"]["top1"], abs=1e-4)
    assert cmp_rows[0]["size_bytes"] > cmp_rows[1]["size_bytes"]
    assert all(list(r) == list(cmp_rows[0]) for r in cmp_rows)  # one set of columns
    fig = comparison_figure(cmp_rows)
    assert len(fig.data) == 4 and list(fig.data[0].x) == [f"{r['variant']} ({r['scheme']})" for r in cmp_rows]


# --------------------------------------------------------------------------- W8A8 and W4A16 (must-show)

@pytest.mark.parametrize(("scheme", "group_size", "fmt", "with_data"), [("W8A8", 128, "int-quantized", True),
                                                                      ("W4A16", 128, "pack-quantized", True),
                                                                      ("W4A16", 64, "pack-quantized", False)])
def test_w8a8_and_w4a16_load_and_generate(scheme, group_size, fmt, with_data, demo128, calib_file, tmp_path):
    from hala_core.engine import GenerationSettings, TransformersEngine

    ctx = FakeContext(workspace=tmp_path, data_dir=DATA_DIR if with_data else None)
    calib_id = ctx.register_dataset("chat-calib", calib_file)
    src_id = ctx.register_model("demo128", demo128, metadata=DEMO_META)
    out_name = f"demo128-{scheme.lower()}-{group_size}"
    validation = dict(SMALL_VALIDATION)
    ref_id = None
    if scheme == "W8A8":  # a reference set of our own (a registered TSV) instead of NTREX
        tsv = tmp_path / "pairs.tsv"
        tsv.write_text("Good morning.\tصباح الخير.\nWhere is the library?\tأين المكتبة؟\n", encoding="utf-8")
        ref_id = ctx.register_dataset("my-pairs", tsv)
        validation.update(reference_set="my-pairs", direction="ar-en", template="hala-translator")
    spec = QuantizeSpec(model="demo128", scheme=scheme, group_size=group_size, output=out_name,
                        calibration={"dataset": "chat-calib", "num_samples": 12, "max_seq_length": 64},
                        validation=validation)
    quantize_step(spec, ctx)
    out = ctx.artifact_path("model", out_name)
    rec = ctx.artifact(out_name)
    assert rec.inputs == [src_id, calib_id]
    assert rec.metadata["calibration"]["samples"] == 12 and rec.metadata["format"] == fmt

    qcfg = json.loads((out / "config.json").read_text(encoding="utf-8"))["quantization_config"]
    assert qcfg["quant_method"] == "compressed-tensors" and qcfg["format"] == fmt
    weights = qcfg["config_groups"]["group_0"]["weights"]
    info = inspect_model(out)
    if scheme == "W8A8":
        assert weights["num_bits"] == 8 and weights["type"] == "int" and weights["strategy"] == "channel"
        assert qcfg["config_groups"]["group_0"]["input_activations"]["dynamic"] is True
        assert info.tensors["model.layers.0.feed_forward.w1.weight"][1] == "I8"
        mods = yaml.safe_load((out / RECIPE_FILE).read_text())["default_stage"]["default_modifiers"]
        assert list(mods) == ["SmoothQuantModifier", "GPTQModifier"]
        assert any("operator_norm" in str(m) for m in mods["SmoothQuantModifier"]["mappings"])
    else:
        assert weights["num_bits"] == 4 and weights["strategy"] == "group" and weights["group_size"] == group_size
        assert info.tensors["model.layers.0.feed_forward.w1.weight_packed"][1] == "I32"
        gptq = yaml.safe_load((out / RECIPE_FILE).read_text())["default_stage"]["default_modifiers"]["GPTQModifier"]
        if group_size == 128:
            assert gptq["scheme"] == "W4A16"
        else:
            assert gptq["config_groups"]["group_0"]["weights"]["group_size"] == group_size

    # the saved recipe is plain YAML that llm-compressor reads back
    from llmcompressor.recipe import Recipe

    reloaded = Recipe.create_instance(str(out / RECIPE_FILE))
    assert type(reloaded.modifiers[-1]).__name__ == "GPTQModifier"

    with TransformersEngine(out) as engine:
        texts = engine.generate(["Good morning.", "صباح الخير."], GenerationSettings(max_new_tokens=5))
        assert len(texts) == 2 and engine.last_generated_tokens > 0
    report = ctx.result["report"]
    assert report["agreement"]["top1"] > 0.9 and report["size"]["ratio"] < 0.6
    if not with_data:  # no sample data folder: the built-in demo corpus serves prompts, texts and pairs
        assert "demo corpus" in report["text_source"] and report["translation"]["reference_set"] == "built-in demo corpus"
        assert report["translation"]["samples"][0]["source"] == "Good morning."
    if ref_id is not None:
        tr = report["translation"]
        assert tr["reference_set"] == "my-pairs" and tr["direction"] == "ar-en" and tr["template"] == "hala-translator"
        assert [s["source"] for s in tr["samples"]] == ["صباح الخير.", "أين المكتبة؟"]
    assert ctx.artifact(f"{out_name}-validation", kind="report").inputs == [i for i in (rec.id, ref_id) if i]


def test_recipes_per_scheme(demo128, demo_models_dir):
    info = inspect_model(demo128)
    [fp8] = recipe_for(QuantizeSpec(model="m", output="o"), info)
    assert type(fp8).__name__ == "QuantizationModifier" and fp8.scheme == "FP8_DYNAMIC" and fp8.ignore == ["lm_head"]
    sq, gptq = recipe_for(QuantizeSpec(model="m", output="o", scheme="W8A8", calibration={"dataset": "d"}), info)
    assert type(sq).__name__ == "SmoothQuantModifier" and gptq.scheme == "W8A8"
    assert sq.mappings[0][1] == r"re:.*layers\.(1)\.operator_norm$"  # layer 1 is the attention layer
    [w4] = recipe_for(QuantizeSpec(model="m", output="o", scheme="W4A16", calibration={"dataset": "d"}), info)
    assert w4.scheme == "W4A16" and w4.config_groups is None
    [w4g] = recipe_for(QuantizeSpec(model="m", output="o", scheme="W4A16", group_size=32,
                                    calibration={"dataset": "d"}), info)
    assert w4g.scheme is None and w4g.config_groups["group_0"].weights.group_size == 32


# --------------------------------------------------------------------------- refusals

def test_already_quantized_model_is_refused(fp8_run, tmp_path):
    _, _, out = fp8_run
    spec = QuantizeSpec(model=str(out), scheme="FP8_DYNAMIC", output="twice")
    with pytest.raises(ValueError, match=r"already quantized \(compressed-tensors, format float-quantized"):
        check_quantizable(spec, inspect_model(out))
    ctx = FakeContext(workspace=tmp_path)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_step(spec, ctx)
    assert not ctx.artifact_path("model", "twice").exists() and not ctx.artifacts


def test_w4a16_group_that_does_not_divide_the_hidden_size_is_refused_with_a_suggestion(demo_models_dir, demo128):
    spec = QuantizeSpec(model="m", output="o", scheme="W4A16", group_size=128, calibration={"dataset": "d"})
    with pytest.raises(ValueError, match=r"group size 128 does not divide the hidden size 64.*use group_size 64 "
                                         r"\(or a smaller power of two such as 32\)"):
        check_quantizable(spec, inspect_model(demo_models_dir["demo-lfm2-a"]))
    check_quantizable(spec, inspect_model(demo128))  # hidden 128 is fine
    assert suggest_group_size({64, 128}) == 64 and suggest_group_size({96, 192}) == 32 and suggest_group_size({1024}) == 128


def test_non_causal_lm_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "bert-classifier"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"],
                                                    "model_type": "bert", "hidden_size": 64}))
    save_file({"bert.encoder.layer.0.attention.self.query.weight": torch.zeros(64, 64)},
              str(folder / "model.safetensors"))
    spec = QuantizeSpec(model=str(folder), output="o")
    with pytest.raises(ValueError, match=r"architecture BertForSequenceClassification, which is not a causal "
                                         r"language model.*llm-compressor.*needs a causal LM with Linear layers"):
        check_quantizable(spec, inspect_model(folder))
    (folder / "config.json").write_text(json.dumps({"architectures": ["T5ForConditionalGeneration"],
                                                    "model_type": "t5", "d_model": 64}))
    with pytest.raises(ValueError, match="T5ForConditionalGeneration"):
        check_quantizable(spec, inspect_model(folder))


def test_calibration_without_text_is_refused_naming_the_fields(tmp_path, demo128):
    f = tmp_path / "numbers.jsonl"
    f.write_text('{"id": 1, "score": 0.5, "label": "x"}\n{"id": 2, "score": 0.1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"calibration dataset 'numbers.jsonl' has no text: fields found are id, "
                                         r"score, label; set calibration.text_field"):
        load_calibration(f)
    with pytest.raises(ValueError, match="no text in field 'body': fields found are id, score, label"):
        load_calibration(f, text_field="body")
    ctx = FakeContext(workspace=tmp_path / "ws")
    ctx.register_model("demo128", demo128)
    spec = QuantizeSpec(model="demo128", scheme="W8A8", output="w8", calibration={"dataset": str(f)})
    with pytest.raises(ValueError, match="has no text"):
        quantize_step(spec, ctx)
    assert not ctx.artifact_path("model", "w8").exists()


def test_existing_output_and_stop_are_respected(tmp_path, demo_models_dir):
    ctx = FakeContext(workspace=tmp_path)
    taken = ctx.artifact_path("model", "taken")
    taken.mkdir(parents=True)
    (taken / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="already exists"):
        quantize_step(QuantizeSpec(model=str(demo_models_dir["demo-lfm2-a"]), output="taken"), ctx)
    assert (taken / "config.json").read_text() == "{}"

    stopping = FakeContext(workspace=tmp_path / "ws2", stop=True)
    with pytest.raises(StopRequested):
        quantize_step(QuantizeSpec(model=str(demo_models_dir["demo-lfm2-a"]), output="never"), stopping)
    assert not stopping.artifact_path("model", "never").exists() and not stopping.artifacts


@CPU_ONLY
def test_cuda_without_a_gpu_is_refused(tmp_path, demo_models_dir):
    ctx = FakeContext(workspace=tmp_path)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        quantize_step(QuantizeSpec(model=str(demo_models_dir["demo-lfm2-a"]), output="o", device="cuda"), ctx)


# --------------------------------------------------------------------------- calibration formats

def test_load_calibration_formats(tmp_path, calib_file):
    import pyarrow as pa
    import pyarrow.parquet as pq

    chat = load_calibration(calib_file, num_samples=3)
    assert chat == ["Good morning.\nصباح الخير.", "Where is the library?\nأين المكتبة؟",
                    "The weather is beautiful today.\nالطقس جميل اليوم."]
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Translate", "input": "Good morning.", "output": "صباح الخير."},
                                  {"instruction": "Say hi", "input": "", "output": "hi"}]), encoding="utf-8")
    assert load_calibration(alpaca) == ["Translate\n\nGood morning.\n\nصباح الخير.", "Say hi\n\nhi"]
    txt = tmp_path / "lines.txt"
    txt.write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert load_calibration(txt) == ["first line", "second line"]
    pq.write_table(pa.table({"body": ["a text", "another"], "n": [1, 2]}), str(tmp_path / "t.parquet"))
    assert load_calibration(tmp_path / "t.parquet", text_field="body") == ["a text", "another"]
    sharegpt = tmp_path / "sg.jsonl"
    sharegpt.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"},
                                                      {"from": "gpt", "value": "hello"}]}) + "\n")
    assert load_calibration(sharegpt) == ["hi\nhello"]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "data.jsonl").write_text(json.dumps({"text": "from a folder"}) + "\n")
    assert load_calibration(folder) == ["from a folder"]
    if DATA_DIR is not None:
        texts = load_calibration(DATA_DIR / "alpaca_5000" / "alpaca_5000.json", num_samples=5)
        assert len(texts) == 5 and texts[0].startswith("Are the two sentences below grammatically correct?")
