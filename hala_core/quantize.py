"""Model compression with llm-compressor ``oneshot`` (compressed-tensors checkpoints) and its validation report.

What runs for each scheme (llm-compressor 0.14, read from its source and checked on CPU):

- ``FP8_DYNAMIC``: ``QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=…)`` — FP8 E4M3 weights with
  per-channel scales, activations quantized per token at run time. Data-free: no calibration pass.
- ``W8A8``: ``SmoothQuantModifier(smoothing_strength=0.8)`` then ``GPTQModifier(targets="Linear", scheme="W8A8")`` —
  INT8 per-channel weights (GPTQ), INT8 dynamic per-token activations; SmoothQuant moves activation outliers
  into the weights first. Its norm → Linear mappings come from llm-compressor's registry for the architectures it
  knows; for LFM2 (not in that registry) they are built here from ``layer_types``; an architecture with neither
  (and without Llama-style names) runs GPTQ alone, and the log says so.
- ``W4A16``: ``GPTQModifier(targets="Linear", scheme="W4A16")`` — INT4 weights in groups of 128 (symmetric), packed
  (``pack-quantized``); any other ``group_size`` is written as an explicit ``config_groups`` scheme.

Calibration text (W8A8, W4A16) is tokenized here (truncated to ``max_seq_length``) and handed to ``oneshot`` as a
``datasets.Dataset`` with ``input_ids``/``attention_mask``, which llm-compressor uses as is, together with
``num_calibration_samples`` and ``max_seq_length``.

The validation report compares the original and the quantized model in the same job, one model loaded at a time:
size, next-token agreement (top-1 over **every** non-padding position of each prompt, mean KL(original‖quantized)
and max |Δlogit| over the same positions), perplexity, chrF++/BLEU of greedy translations, and tokens/s.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hala_core.context import ResolvedModel, RunContext, StopRequested
from hala_core.demo_models import DEMO_LABEL
from hala_core.models import ModelInfo, claim_output_dir, inspect_model, looks_like_hub_id
from hala_core.specs import CALIBRATED_SCHEMES, QuantizeSpec, ValidationSpec

if TYPE_CHECKING:
    import plotly.graph_objects as go

RECIPE_FILE = "recipe.yaml"
REPORT_JSON = "validation.json"
REPORT_MD = "validation.md"
SMOOTHING_STRENGTH = 0.8
W4A16_PRESET_GROUP = 128
PROMPT_MAX_TOKENS = 64  # agreement prompts are cut to this many tokens
PPL_MAX_TOKENS = 256  # perplexity texts are cut to this many tokens
TRANSLATION_SAMPLES = 5  # translations kept in the report, side by side
AGREEMENT_SCOPE = "all non-padding positions of each prompt (next-token distributions)"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")

CPU_NOTE = (
    "Measured on CPU, where this quantized model runs emulated: there are no CPU kernels for FP8/INT8/INT4 matmuls, "
    "so transformers decompresses the compressed-tensors weights to {dtype} and simulates the quantization with an "
    "on-the-fly quantize-dequantize in every forward pass. The quantized model is therefore expected to be slower "
    "here than the original. The speed-up of the Hala report (~2x for FP8) needs a GPU with FP8 support "
    "(Hopper/Ada) and a serving engine with low-precision kernels (vLLM)."
)
GPU_NOTE = (
    "Measured on {gpu} with the transformers engine, which (without its opt-in FP8 kernels) decompresses the "
    "compressed-tensors weights to {dtype} and simulates the quantization with an on-the-fly quantize-dequantize in "
    "every forward pass; the throughput gain of the checkpoint shows with vLLM's kernels, so read the quantized "
    "tokens/s here as a lower bound."
)

HEADLINE_KEYS = (
    "agreement_top1", "kl_mean", "max_abs_logit_diff", "ppl_original", "ppl_quantized", "chrf_original",
    "chrf_quantized", "bleu_original", "bleu_quantized", "tps_original", "tps_quantized", "size_bytes_original",
    "size_bytes_quantized",
)

_ST_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
             "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


# --------------------------------------------------------------------------- checks (cheap: config + headers)

def _quantization_config(info: ModelInfo) -> dict[str, Any] | None:
    cfg = info.config or {}
    q = cfg.get("quantization_config")
    if not q and isinstance(cfg.get("text_config"), dict):
        q = cfg["text_config"].get("quantization_config")
    return q if isinstance(q, dict) and q else None


@functools.lru_cache(maxsize=1)
def _causal_lm_classes() -> tuple[frozenset[str], frozenset[str]]:
    """transformers' causal-LM classes and model types (``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``).

    Read from the source of ``transformers.models.auto.modeling_auto`` with ``ast`` (a literal there), because
    importing that module costs seconds; falls back to the import if the literal cannot be found.
    """
    import ast
    import importlib.util

    mapping: dict[str, Any] | None = None
    try:
        spec = importlib.util.find_spec("transformers")  # locates the package without importing it
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        source = Path(roots[0]) / "models" / "auto" / "modeling_auto.py" if roots else None
        if source is not None and source.is_file():
            tree = ast.parse(source.read_text(encoding="utf-8"))
            for node in tree.body:
                if (isinstance(node, ast.Assign) and len(node.targets) == 1
                        and getattr(node.targets[0], "id", None) == "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"
                        and isinstance(node.value, ast.Call) and node.value.args):
                    mapping = dict(ast.literal_eval(node.value.args[0]))
                    break
    except (OSError, SyntaxError, ValueError, TypeError):
        mapping = None
    if not mapping:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        mapping = dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    classes: set[str] = set()
    for v in mapping.values():
        classes.update(v if isinstance(v, list | tuple) else [v])
    return frozenset(classes), frozenset(mapping)


def _is_ignored(module: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """compressed-tensors matching, on names only: ``re:`` regexes, else the module name (or its last parts)."""
    for p in patterns:
        if p.startswith("re:"):
            if re.match(p[3:], module):
                return True
        elif module == p or module.endswith("." + p):
            return True
    return False


def _is_embedding(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return "embed" in last or last in ("wte", "wpe", "shared")


def linear_weights(info: ModelInfo, ignore: tuple[str, ...] | list[str] = ()) -> dict[str, tuple[int, int]]:
    """The 2-D weights llm-compressor's ``targets="Linear"`` would quantize: module name → (out, in) features.

    Read from the safetensors headers: every 2-D ``*.weight`` that is not an embedding and not ignored.
    """
    out: dict[str, tuple[int, int]] = {}
    for name, (shape, _dtype) in info.tensors.items():
        if not name.endswith(".weight") or len(shape) != 2:
            continue
        module = name[: -len(".weight")]
        if _is_embedding(module) or _is_ignored(module, ignore):
            continue
        out[module] = (int(shape[0]), int(shape[1]))
    return out


def suggest_group_size(widths: list[int] | set[int], limit: int = W4A16_PRESET_GROUP) -> int:
    """The largest power of two ≤ ``limit`` that divides every width (1 when none above 1 does)."""
    g = 0
    for w in widths:
        g = math.gcd(g, int(w))
    p = limit
    while p > 1 and (g == 0 or g % p):
        p //= 2
    return p


def check_quantizable(spec: QuantizeSpec, info: ModelInfo) -> None:
    """Refuse, before any heavy work, a model that ``spec`` cannot be applied to (ValueError saying why).

    Cheap: reads only what ``inspect_model`` read (config.json and the safetensors headers). The UI and the
    CLI call it before queueing; ``quantize_step`` calls it again first thing.
    """
    name = info.path.name
    qcfg = _quantization_config(info)
    if qcfg is not None:
        method = qcfg.get("quant_method") or "unknown method"
        extra = f", format {qcfg['format']}" if qcfg.get("format") else ""
        raise ValueError(f"model {name!r} is already quantized ({method}{extra}, per the quantization_config in its "
                         "config.json); quantize its full-precision original instead")
    packed = [n for n in info.tensors if n.endswith((".weight_scale", ".weight_packed", ".qweight", ".scales"))]
    if packed:
        raise ValueError(f"model {name!r} looks already quantized (tensors such as {packed[0]}); quantize its "
                         "full-precision original instead")
    classes, model_types = _causal_lm_classes()
    arch = info.architecture
    ok = (arch in classes or arch.endswith(("ForCausalLM", "LMHeadModel"))) if arch else info.model_type in model_types
    if not ok:
        what = f"architecture {arch}" if arch else f"model type {info.model_type or 'unknown'} (no architectures)"
        raise ValueError(f"model {name!r} has {what}, which is not a causal language model that AutoModelForCausalLM "
                         "can load; llm-compressor oneshot here needs a causal LM with Linear layers "
                         "(e.g. Lfm2ForCausalLM, LlamaForCausalLM, Gemma2ForCausalLM)")
    linear = linear_weights(info, spec.ignore)
    if not linear:
        raise ValueError(f"model {name!r} has no Linear layer weights left to quantize (ignore: "
                         f"{', '.join(spec.ignore) or 'nothing'}); llm-compressor quantizes Linear layers")
    if spec.scheme == "W4A16":
        g = spec.group_size
        bad = {m: cols for m, (_, cols) in linear.items() if cols % g}
        hidden = info.hidden_size
        if bad or (hidden and hidden % g):
            widths = {cols for _, cols in linear.values()} | ({int(hidden)} if hidden else set())
            p = suggest_group_size(widths)
            if hidden and hidden % g:
                what = f"the hidden size {hidden}"
            else:
                first = sorted(bad)[0]
                what = f"the input width of {len(bad)} Linear layer(s) (e.g. {first}: {bad[first]})"
            if p >= 8:
                alt = f" (or a smaller power of two such as {p // 2})" if p >= 16 else ""
                fix = f"use group_size {p}{alt}, which divides every Linear layer's input width"
            else:
                fix = "no group size of 8 or more divides every layer; ignore the odd layers or use W8A8 / FP8_DYNAMIC"
            raise ValueError(f"W4A16 group size {g} does not divide {what}: every quantized Linear layer's input width "
                             f"must be a multiple of the group size; {fix}")


# --------------------------------------------------------------------------- recipes

def _lfm2_smoothquant_mappings(info: ModelInfo) -> list[list[Any]] | None:
    """Norm → Linear mappings for LFM2: ``operator_norm`` feeds q/k/v (attention layers) or ``conv.in_proj``
    (conv layers), ``ffn_norm`` feeds ``feed_forward.w1``/``w3``. None when the names do not fit."""
    types = (info.config or {}).get("layer_types")
    names = set(info.tensors)
    if not isinstance(types, list) or not types:
        return None
    attn = [str(i) for i, t in enumerate(types) if t == "full_attention"]
    conv = [str(i) for i, t in enumerate(types) if t == "conv"]
    for i in attn:
        if not any(n.endswith(f"layers.{i}.self_attn.q_proj.weight") for n in names):
            return None
    for i in conv:
        if not any(n.endswith(f"layers.{i}.conv.in_proj.weight") for n in names):
            return None
    mappings: list[list[Any]] = []
    if attn:
        idx = "|".join(attn)
        mappings.append([[rf"re:.*layers\.({idx})\.self_attn\.{p}_proj$" for p in "qkv"],
                         rf"re:.*layers\.({idx})\.operator_norm$"])
    if conv:
        idx = "|".join(conv)
        mappings.append([[rf"re:.*layers\.({idx})\.conv\.in_proj$"], rf"re:.*layers\.({idx})\.operator_norm$"])
    mappings.append([[r"re:.*feed_forward\.w1$", r"re:.*feed_forward\.w3$"], r"re:.*ffn_norm$"])
    return mappings


def smoothquant_plan(info: ModelInfo) -> tuple[bool, list[list[Any]] | None, str]:
    """Whether W8A8 runs SmoothQuant first, with which mappings (None: llm-compressor infers them), and why."""
    from llmcompressor.modifiers.transform.smoothquant.dynamic_mappings import (
        SMOOTHQUANT_DYNAMIC_MAPPING_REGISTRY,
    )
    from llmcompressor.modifiers.transform.smoothquant.utils import MAPPINGS_REGISTRY

    arch = info.architecture or ""
    if arch in SMOOTHQUANT_DYNAMIC_MAPPING_REGISTRY or arch in MAPPINGS_REGISTRY:
        return True, None, f"SmoothQuant mappings for {arch} from llm-compressor's registry"
    if info.model_type == "lfm2" or arch == "Lfm2ForCausalLM":
        mappings = _lfm2_smoothquant_mappings(info)
        if mappings is not None:
            return True, mappings, "SmoothQuant mappings for LFM2 built from its layer_types"
    names = " ".join(info.tensors)
    if all(k in names for k in ("input_layernorm", "q_proj", "post_attention_layernorm", "gate_proj", "up_proj")):
        return True, None, "llm-compressor's default (Llama-style) SmoothQuant mappings"
    return False, None, (f"no SmoothQuant mappings are known for {arch or 'this architecture'}: W8A8 runs GPTQ "
                         "alone (no smoothing)")


def recipe_for(spec: QuantizeSpec, info: ModelInfo) -> list[Any]:
    """The llm-compressor modifiers for ``spec.scheme`` (a list, applied in order by ``oneshot``)."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    ignore = list(spec.ignore)
    if spec.scheme == "FP8_DYNAMIC":
        return [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=ignore)]
    if spec.scheme == "W8A8":
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        mods: list[Any] = []
        use_sq, mappings, _why = smoothquant_plan(info)
        if use_sq:
            mods.append(SmoothQuantModifier(smoothing_strength=SMOOTHING_STRENGTH, mappings=mappings))
        mods.append(GPTQModifier(targets="Linear", scheme="W8A8", ignore=ignore))
        return mods
    if spec.scheme == "W4A16":
        if spec.group_size == W4A16_PRESET_GROUP:
            return [GPTQModifier(targets="Linear", scheme="W4A16", ignore=ignore)]
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

        weights = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=spec.group_size,
                                   symmetric=True, dynamic=False)
        groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
        return [GPTQModifier(config_groups=groups, ignore=ignore)]
    raise ValueError(f"unknown scheme {spec.scheme!r}")  # the spec validates schemes; kept for direct callers


def recipe_yaml(modifiers: list[Any]) -> str:
    """The recipe as YAML in llm-compressor's layout (``default_stage`` → ``default_modifiers`` → modifier → args),
    with every value in plain YAML (llm-compressor 0.14 itself dumps an explicit ``config_groups`` with a Python
    enum tag for ``actorder``, which ``yaml.safe_load`` and its own recipe loader refuse)."""
    import yaml

    group: dict[str, Any] = {}
    for m in modifiers:
        args = {k: v for k, v in m.model_dump(mode="json").items()
                if v is not None and not k.endswith("_") and k != "group"}
        group[type(m).__name__] = args
    return yaml.safe_dump({"default_stage": {"default_modifiers": group}}, allow_unicode=True, sort_keys=False,
                          default_flow_style=None, width=88)


# --------------------------------------------------------------------------- calibration data

_TEXT_KEYS = ("text", "content", "document", "sentence")
_CHAT_KEYS = ("messages", "conversations", "conversation", "chat")


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        parts: list[str] = []
        for item in value:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, dict):
                c = item.get("content", item.get("value", item.get("text")))
                if isinstance(c, str):
                    parts.append(c)
                elif isinstance(c, list):  # multimodal-style content parts
                    parts.extend(p.get("text", "") for p in c if isinstance(p, dict))
        joined = "\n".join(p for p in parts if p)
        return joined or None
    return None


def record_text(record: Any, text_field: str | None = None) -> str | None:
    """The calibration text of one record: ``text_field`` if given, else found automatically."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return None
    if text_field:
        return _as_text(record.get(text_field))
    for key in _TEXT_KEYS:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key]
    for key in _CHAT_KEYS:
        t = _as_text(record.get(key))
        if t:
            return t
    if isinstance(record.get("instruction"), str):
        parts = [record.get(k) for k in ("instruction", "input", "output")]
        return "\n\n".join(p for p in parts if isinstance(p, str) and p.strip()) or None
    if isinstance(record.get("prompt"), str):
        parts = [record.get(k) for k in ("prompt", "response", "completion", "chosen")]
        return "\n\n".join(p for p in parts if isinstance(p, str) and p.strip()) or None
    return None


def _data_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                       and p.name.upper() not in ("README.TXT", "LICENSE.TXT"))
        if files:
            order = {s: i for i, s in enumerate(DATA_SUFFIXES)}
            return min(files, key=lambda p: (order[p.suffix.lower()], len(p.parts), str(p)))
        found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise ValueError(f"calibration dataset folder {str(path)!r} holds no JSONL/JSON/Parquet/TXT file "
                         f"(found: {found})")
    raise ValueError(f"calibration dataset {str(path)!r} does not exist")


def _iter_records(file: Path) -> Iterator[Any]:
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        with file.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{file.name}: line {lineno} is not valid JSON ({e})") from None
    elif suffix == ".json":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{file.name} is not valid JSON ({e})") from None
        if isinstance(data, dict):
            lists = [v for k, v in data.items() if isinstance(v, list) and k in ("data", "rows", "examples", "train")]
            data = lists[0] if lists else [data]
        if not isinstance(data, list):
            raise ValueError(f"{file.name}: expected a JSON list of records or texts, got {type(data).__name__}")
        yield from data
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(str(file))
        for batch in pf.iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    elif suffix == ".txt":
        with file.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip("\n")
    else:
        raise ValueError(f"calibration file {file.name!r} has an unsupported format {suffix!r}; use JSONL, JSON, "
                         "Parquet or TXT (one text per line)")


def load_calibration(path: str | Path, text_field: str | None = None, num_samples: int = 64) -> list[str]:
    """Up to ``num_samples`` non-empty calibration texts from a JSONL / JSON (list) / Parquet / TXT file (or a folder
    holding one). The text of a record is ``text_field`` when given, else found automatically: ``text`` (or
    ``content``…), ``messages``/``conversations`` (contents joined), Alpaca ``instruction``+``input``+``output``,
    or ``prompt``+``response``/``completion``."""
    src = Path(path).expanduser()
    file = _data_file(src)
    texts: list[str] = []
    fields: dict[str, None] = {}
    seen = 0
    for rec in _iter_records(file):
        seen += 1
        if isinstance(rec, dict) and len(fields) < 50:
            fields.update(dict.fromkeys(rec))
        t = record_text(rec, text_field)
        if t and t.strip():
            texts.append(t)
            if len(texts) >= num_samples:
                break
        elif not texts and seen >= 1000:
            break  # a thousand records without text: the field is not there
    if not texts:
        found = ", ".join(fields) if fields else ("no fields (plain values)" if seen else "no records")
        if text_field:
            raise ValueError(f"calibration dataset {src.name!r} has no text in field {text_field!r}: fields found are "
                             f"{found}; set calibration.text_field to the field that holds the text")
        raise ValueError(f"calibration dataset {src.name!r} has no text: fields found are {found}; set "
                         "calibration.text_field to the field that holds the text")
    return texts


def calibration_dataset(texts: list[str], tokenizer: Any, max_seq_length: int) -> Any:
    """Tokenized calibration data (``input_ids``, ``attention_mask``) as a ``datasets.Dataset`` for ``oneshot``."""
    from datasets import Dataset

    enc = tokenizer(list(texts), truncation=True, max_length=max_seq_length)
    keep = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > 0]
    return Dataset.from_dict({"input_ids": [enc["input_ids"][i] for i in keep],
                              "attention_mask": [enc["attention_mask"][i] for i in keep]})


# --------------------------------------------------------------------------- helpers

def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available here; use device 'auto' or 'cpu'")
    return device


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def parameter_bytes(info: ModelInfo) -> int:
    """Bytes of all tensors (from the headers): the weights as stored, packed and scales included."""
    return int(sum(math.prod(shape) * _ST_BYTES.get(dt, 4) for shape, dt in info.tensors.values()))


def _check_stop(ctx: RunContext, where: str) -> None:
    if ctx.should_stop():
        raise StopRequested(f"stopped {where}")


def _resolve_source(spec: QuantizeSpec, ctx: RunContext) -> tuple[ResolvedModel, ModelInfo]:
    ref = spec.model
    resolved = ctx.resolve_model(ref)
    if resolved.path is None or not Path(resolved.path).exists():
        if resolved.hub_id or looks_like_hub_id(ref):
            hub_id = resolved.hub_id or ref
            raise ValueError(f"model {ref!r} looks like a hub id ({hub_id}) that is not available locally, and no model "
                             "hub can be reached from this machine; download it where a hub is reachable (e.g. "
                             f"`hf download {hub_id} --local-dir DIR`), copy it here and give the local folder")
        raise ValueError(f"model {ref!r} was not found; give a model artifact name or a local model folder")
    try:
        info = inspect_model(resolved.path)
    except ValueError as e:
        raise ValueError(f"model {ref!r}: {e}") from None
    return resolved, info


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- validation

def _ntrex(data_dir: Path | None) -> Path | None:
    from hala_core.translation import ntrex_folder

    if data_dir is None:
        return None
    p = Path(data_dir)
    return ntrex_folder(p) if p.is_dir() else None


def validation_data(vspec: ValidationSpec, ctx: RunContext) -> dict[str, Any]:
    """The texts the report runs on: NTREX-128 from ``ctx.data_dir`` when present, else the built-in demo corpus;
    ``vspec.reference_set`` (a dataset artifact or a path) replaces the translation pairs."""
    from hala_core import demo_corpus
    from hala_core.translation import NTREX_LICENCE, load_parallel

    ntrex = _ntrex(getattr(ctx, "data_dir", None))
    need = max(vspec.prompts, vspec.ppl_texts)
    if ntrex is not None:
        en, ar = load_parallel(ntrex, need, "en-ar")
        prompts = en[: vspec.prompts]
        mixed = [t for pair in zip(ar, en, strict=True) for t in pair]
        text_source = "NTREX-128 (newstest2019 English sources; perplexity on Arabic references and English sources)"
    else:
        lines = demo_corpus.corpus_lines()
        prompts = lines[: vspec.prompts]
        mixed = [t for pair in zip(demo_corpus.ARABIC, demo_corpus.ENGLISH, strict=True) for t in pair] + lines
        text_source = "the built-in demo corpus (no sample data folder)"
    ppl_texts = mixed[: vspec.ppl_texts]

    n_pairs = max(vspec.translation_pairs, vspec.throughput_prompts)
    ref_id: int | None = None
    if vspec.reference_set:
        ref_path, ref_id = ctx.resolve_dataset(vspec.reference_set)
        sources, references = load_parallel(ref_path, n_pairs, vspec.direction)
        ref_desc, ref_licence = vspec.reference_set, None
    elif ntrex is not None:
        sources, references = load_parallel(ntrex, n_pairs, vspec.direction)
        ref_desc, ref_licence = "NTREX-128 (newstest2019)", NTREX_LICENCE
    else:
        sources, references = load_parallel(None, n_pairs, vspec.direction)
        ref_desc, ref_licence = "built-in demo corpus", "Apache-2.0"
    return {
        "prompts": prompts,
        "ppl_texts": ppl_texts,
        "text_source": text_source,
        "sources": sources[: vspec.translation_pairs],
        "references": references[: vspec.translation_pairs],
        "throughput_sources": sources[: vspec.throughput_prompts],
        "reference_set": ref_desc,
        "reference_licence": ref_licence,
        "reference_id": ref_id,
    }


def _encode(tokenizer: Any, texts: list[str], max_tokens: int) -> list[list[int]]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]
    return [list(ids) for ids in enc if len(ids) > 0]


def _right_padded(batch: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _forward_batches(engine: Any, seqs: list[list[int]], batch_size: int) -> Iterator[tuple[Any, Any, Any]]:
    """(input_ids, attention_mask, float32 logits on CPU) per batch; right padding, so a causal model's real tokens
    never see a pad token."""
    import torch

    tok = engine.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    for start in range(0, len(seqs), batch_size):
        ids, mask = _right_padded(seqs[start : start + batch_size], pad_id)
        with torch.inference_mode():
            logits = engine.model(input_ids=ids.to(engine.device), attention_mask=mask.to(engine.device)).logits
        yield ids, mask, logits.float().cpu()


def _perplexity(engine: Any, texts: list[str], batch_size: int) -> dict[str, Any]:
    import torch

    seqs = [s for s in _encode(engine.tokenizer, texts, PPL_MAX_TOKENS) if len(s) > 1]
    nll, count = 0.0, 0
    for ids, mask, logits in _forward_batches(engine, seqs, batch_size):
        target = ids[:, 1:]
        valid = mask[:, 1:].bool()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        nll -= float(tok_logp[valid].sum(dtype=torch.float64))
        count += int(valid.sum())
    return {"ppl": math.exp(nll / count) if count else None, "tokens": count, "texts": len(seqs)}


class _AgreementStore:
    """Keeps the original model's logits (one file per batch, in a temporary folder inside the job folder), so the
    quantized model can be compared position by position without both models in memory at once."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="agreement-", dir=str(root))
        self.dir = Path(self._tmp.name)
        self.batches = 0

    def save(self, engine: Any, seqs: list[list[int]], batch_size: int) -> None:
        import torch

        for i, (_ids, mask, logits) in enumerate(_forward_batches(engine, seqs, batch_size)):
            torch.save(logits[mask.bool()], self.dir / f"{i}.pt")
            self.batches = i + 1

    def compare(self, engine: Any, seqs: list[list[int]], batch_size: int) -> dict[str, Any]:
        import torch

        agree = positions = 0
        kl_sum = 0.0
        max_diff = 0.0
        for i, (_ids, mask, logits) in enumerate(_forward_batches(engine, seqs, batch_size)):
            lq = logits[mask.bool()]
            lo = torch.load(self.dir / f"{i}.pt")
            if lo.shape != lq.shape:
                raise ValueError(f"the quantized model's logits have shape {list(lq.shape)}, the original's "
                                 f"{list(lo.shape)}; the two models do not share a vocabulary")
            agree += int((lo.argmax(-1) == lq.argmax(-1)).sum())
            positions += int(lo.shape[0])
            lpo = torch.log_softmax(lo.double(), dim=-1)
            lpq = torch.log_softmax(lq.double(), dim=-1)
            kl_sum += float((lpo.exp() * (lpo - lpq)).sum(-1).clamp_min(0).sum())
            max_diff = max(max_diff, float((lo - lq).abs().max()))
        return {
            "top1": agree / positions if positions else None,
            "kl_mean": kl_sum / positions if positions else None,
            "max_abs_logit_diff": max_diff if positions else None,
            "positions": positions,
        }

    def close(self) -> None:
        self._tmp.cleanup()


def _throughput(engine: Any, prompts: list[str], vspec: ValidationSpec) -> dict[str, Any]:
    from hala_core.engine import GenerationSettings

    engine.generate(prompts[:2], GenerationSettings(max_new_tokens=2, batch_size=vspec.batch_size))  # warm-up
    settings = GenerationSettings(max_new_tokens=vspec.throughput_tokens, temperature=0.0,
                                  batch_size=vspec.batch_size)
    t0 = time.perf_counter()
    engine.generate(prompts, settings)
    seconds = time.perf_counter() - t0
    tokens = int(getattr(engine, "last_generated_tokens", 0))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds if seconds > 0 else None}


def _device_note(device: str, dtype: str) -> str:
    if device.startswith("cuda"):
        import torch

        return GPU_NOTE.format(gpu=torch.cuda.get_device_name(0), dtype=dtype)
    return CPU_NOTE.format(dtype=dtype)


def _measure(role: str, engine: Any, data: dict[str, Any], vspec: ValidationSpec, store: _AgreementStore,
             ctx: RunContext) -> dict[str, Any]:
    from hala_core.engine import GenerationSettings
    from hala_core.translation import build_prompts, clean_output, score

    out: dict[str, Any] = {}
    seqs = _encode(engine.tokenizer, data["prompts"], PROMPT_MAX_TOKENS)
    if seqs:
        if role == "original":
            store.save(engine, seqs, vspec.batch_size)
        else:
            out["agreement"] = store.compare(engine, seqs, vspec.batch_size)
    _check_stop(ctx, f"while validating the {role} model")
    if data["ppl_texts"]:
        out["perplexity"] = _perplexity(engine, data["ppl_texts"], vspec.batch_size)
        ctx.log(f"{role}: perplexity {out['perplexity']['ppl']:.3f} on {out['perplexity']['tokens']} tokens")
    _check_stop(ctx, f"while validating the {role} model")
    if data["sources"]:
        prompts = build_prompts(data["sources"], vspec.direction, vspec.template, engine.tokenizer)
        raw = engine.generate(prompts, GenerationSettings(max_new_tokens=vspec.max_new_tokens, temperature=0.0,
                                                          batch_size=vspec.batch_size))
        hyps = [clean_output(t, vspec.template) for t in raw]
        out["translations"] = hyps
        out["scores"] = score(hyps, data["references"])
        ctx.log(f"{role}: chrF++ {out['scores']['chrf++']:.2f}, BLEU {out['scores']['bleu']:.2f} on {len(hyps)} pairs")
    _check_stop(ctx, f"while validating the {role} model")
    if data["throughput_sources"]:
        prompts = build_prompts(data["throughput_sources"], vspec.direction, vspec.template, engine.tokenizer)
        out["throughput"] = _throughput(engine, prompts, vspec)
        ctx.log(f"{role}: {out['throughput']['tokens_per_s']:.1f} tokens/s")
    return out


def _size_section(original: Path, quantized: Path) -> dict[str, Any]:
    io, iq = inspect_model(original), inspect_model(quantized)
    po, pq = parameter_bytes(io), parameter_bytes(iq)
    return {
        "bytes_on_disk": {"original": io.size_bytes, "quantized": iq.size_bytes},
        "parameter_bytes": {"original": po, "quantized": pq},
        "ratio": iq.size_bytes / io.size_bytes if io.size_bytes else None,
        "parameter_ratio": pq / po if po else None,
        "parameters": io.parameters,
        "dtype_original": io.dtype,
    }


def headline(report: dict[str, Any]) -> dict[str, float | None]:
    """The report's headline numbers under their metric keys (None where a section was skipped)."""
    agr = report.get("agreement") or {}
    ppl = report.get("perplexity") or {}
    tr = report.get("translation") or {}
    tp = report.get("throughput") or {}
    size = report.get("size") or {}
    disk = size.get("bytes_on_disk") or {}
    return {
        "agreement_top1": agr.get("top1"),
        "kl_mean": agr.get("kl_mean"),
        "max_abs_logit_diff": agr.get("max_abs_logit_diff"),
        "ppl_original": ppl.get("original"),
        "ppl_quantized": ppl.get("quantized"),
        "chrf_original": (tr.get("chrf++") or {}).get("original"),
        "chrf_quantized": (tr.get("chrf++") or {}).get("quantized"),
        "bleu_original": (tr.get("bleu") or {}).get("original"),
        "bleu_quantized": (tr.get("bleu") or {}).get("quantized"),
        "tps_original": tp.get("original"),
        "tps_quantized": tp.get("quantized"),
        "size_bytes_original": disk.get("original"),
        "size_bytes_quantized": disk.get("quantized"),
    }


def validate(original_path: str | Path, quantized_path: str | Path, vspec: ValidationSpec, ctx: RunContext,
             device: str = "cpu", phase: Callable[[int, str], None] | None = None) -> dict[str, Any]:
    """Measure the original and the quantized model side by side (one loaded at a time) and return the report.

    Each headline number is also logged with ``ctx.log_metric`` (keys in ``HEADLINE_KEYS``). ``phase(k, message)``
    is called as the original (k=0) and the quantized (k=1) model are measured.
    """
    from hala_core.engine import TransformersEngine

    original_path, quantized_path = Path(original_path), Path(quantized_path)
    data = validation_data(vspec, ctx)
    results: dict[str, dict[str, Any]] = {}
    store = _AgreementStore(Path(ctx.job_dir))
    dtype = "auto"
    try:
        for k, (role, path) in enumerate((("original", original_path), ("quantized", quantized_path))):
            _check_stop(ctx, f"before validating the {role} model")
            if phase is not None:
                phase(k, f"validating: measuring the {role} model")
            engine = TransformersEngine(path, device=device, dtype=dtype)
            try:
                results[role] = _measure(role, engine, data, vspec, store, ctx)
                model_dtype = str(getattr(engine.model, "dtype", "float32")).removeprefix("torch.")
            finally:
                engine.close()
                _free(device)
    finally:
        store.close()

    o, q = results["original"], results["quantized"]
    report: dict[str, Any] = {
        "original_path": str(original_path),
        "quantized_path": str(quantized_path),
        "device": device,
        "engine": vspec.engine,
        "text_source": data["text_source"],
        "settings": vspec.model_dump(mode="json"),
        "size": _size_section(original_path, quantized_path),
        "notes": [],
    }
    if "agreement" in q:
        report["agreement"] = {"prompts": len(data["prompts"]), "scope": AGREEMENT_SCOPE,
                               "max_tokens_per_prompt": PROMPT_MAX_TOKENS, **q["agreement"]}
    else:
        report["agreement"] = None
    if "perplexity" in o:
        report["perplexity"] = {"texts": o["perplexity"]["texts"], "tokens": o["perplexity"]["tokens"],
                                "max_tokens_per_text": PPL_MAX_TOKENS,
                                "original": o["perplexity"]["ppl"], "quantized": q["perplexity"]["ppl"]}
    else:
        report["perplexity"] = None
    if "scores" in o:
        samples = [
            {"source": s, "reference": r, "original": ho, "quantized": hq}
            for s, r, ho, hq in zip(data["sources"], data["references"], o["translations"], q["translations"],
                                    strict=True)
        ][:TRANSLATION_SAMPLES]
        report["translation"] = {
            "pairs": len(data["sources"]), "direction": vspec.direction, "template": vspec.template,
            "reference_set": data["reference_set"], "reference_licence": data["reference_licence"],
            "reference_id": data["reference_id"], "max_new_tokens": vspec.max_new_tokens,
            "chrf++": {"original": o["scores"]["chrf++"], "quantized": q["scores"]["chrf++"]},
            "bleu": {"original": o["scores"]["bleu"], "quantized": q["scores"]["bleu"]},
            "samples": samples,
        }
    else:
        report["translation"] = None
    if "throughput" in o:
        to, tq = o["throughput"], q["throughput"]
        speedup = (tq["tokens_per_s"] / to["tokens_per_s"]) if to["tokens_per_s"] and tq["tokens_per_s"] else None
        note = _device_note(device, model_dtype)
        report["throughput"] = {
            "prompts": len(data["throughput_sources"]), "max_new_tokens": vspec.throughput_tokens,
            "batch_size": vspec.batch_size, "device": device, "order": "original, then quantized (after a warm-up each)",
            "original": to["tokens_per_s"], "quantized": tq["tokens_per_s"], "speedup": speedup,
            "tokens": {"original": to["tokens"], "quantized": tq["tokens"]},
            "seconds": {"original": to["seconds"], "quantized": tq["seconds"]},
            "note": note,
        }
        report["notes"].append(note)
    else:
        report["throughput"] = None
    report["headline"] = headline(report)
    for key in HEADLINE_KEYS:
        value = report["headline"].get(key)
        if value is not None:
            ctx.log_metric(key, float(value))
    return report


# --------------------------------------------------------------------------- presenting a report

def _fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "—"
    if kind == "bytes":
        v = float(value)
        for unit in ("B", "KB", "MB", "GB", "TB"):
            if v < 1024 or unit == "TB":
                return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.2f} {unit}"
            v /= 1024
    if kind == "pct":
        return f"{100 * float(value):.2f} %"
    if kind == "sci":
        return f"{float(value):.3g}"
    return f"{float(value):,.2f}"


def report_table(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Rows (metric, original, quantized) for a table in the UI."""
    rows: list[tuple[str, str, str]] = []
    size = report.get("size") or {}
    if size:
        disk, pb = size["bytes_on_disk"], size["parameter_bytes"]
        rows.append(("size on disk (weight files)", _fmt(disk["original"], "bytes"), _fmt(disk["quantized"], "bytes")))
        rows.append(("parameter bytes", _fmt(pb["original"], "bytes"), _fmt(pb["quantized"], "bytes")))
        rows.append(("size ratio (quantized / original)", "1.00", _fmt(size.get("ratio"))))
    agr = report.get("agreement")
    if agr:
        rows.append((f"top-1 next-token agreement ({agr['prompts']} prompts, {agr['positions']} positions)", "—",
                     _fmt(agr["top1"], "pct")))
        rows.append(("mean KL(original ‖ quantized)", "—", _fmt(agr["kl_mean"], "sci")))
        rows.append(("max abs logit difference", "—", _fmt(agr["max_abs_logit_diff"], "sci")))
    ppl = report.get("perplexity")
    if ppl:
        rows.append((f"perplexity ({ppl['texts']} texts, {ppl['tokens']} tokens)", _fmt(ppl["original"]),
                     _fmt(ppl["quantized"])))
    tr = report.get("translation")
    if tr:
        arrow = tr["direction"].replace("-", "→")
        rows.append((f"chrF++ ({arrow}, {tr['pairs']} pairs)", _fmt(tr["chrf++"]["original"]),
                     _fmt(tr["chrf++"]["quantized"])))
        rows.append((f"BLEU ({arrow}, {tr['pairs']} pairs)", _fmt(tr["bleu"]["original"]), _fmt(tr["bleu"]["quantized"])))
    tp = report.get("throughput")
    if tp:
        rows.append((f"tokens/s ({tp['device']}, transformers)", _fmt(tp["original"]), _fmt(tp["quantized"])))
    return rows


def report_figures(report: dict[str, Any]) -> list[go.Figure]:
    """Plotly figures: original vs quantized for chrF++ / BLEU / perplexity / tokens/s, and sizes."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colors = {"original": "#636EFA", "quantized": "#EF553B"}
    panels: list[tuple[str, float | None, float | None]] = []
    tr = report.get("translation")
    if tr:
        panels.append(("chrF++", tr["chrf++"]["original"], tr["chrf++"]["quantized"]))
        panels.append(("BLEU", tr["bleu"]["original"], tr["bleu"]["quantized"]))
    ppl = report.get("perplexity")
    if ppl:
        panels.append(("perplexity ↓", ppl["original"], ppl["quantized"]))
    tp = report.get("throughput")
    if tp:
        panels.append((f"tok/s ({tp['device']})", tp["original"], tp["quantized"]))
    figures: list[go.Figure] = []
    if panels:
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels],
                            horizontal_spacing=0.09)
        for i, (title, vo, vq) in enumerate(panels, start=1):
            for role, v in (("original", vo), ("quantized", vq)):
                fig.add_trace(go.Bar(x=[role], y=[v], name=role, marker_color=colors[role], showlegend=i == 1,
                                     legendgroup=role, hovertemplate=f"{title}<br>{role}: %{{y:.3f}}<extra></extra>"),
                              row=1, col=i)
        fig.update_layout(title="Original vs quantized", margin={"t": 70, "b": 40, "l": 50, "r": 20}, bargap=0.3)
        figures.append(fig)
    size = report.get("size")
    if size:
        mb = 1024 * 1024
        cats = ["on disk (weight files)", "parameter bytes"]
        fig = go.Figure()
        for role in ("original", "quantized"):
            vals = [size["bytes_on_disk"][role] / mb, size["parameter_bytes"][role] / mb]
            fig.add_trace(go.Bar(x=cats, y=vals, name=role, marker_color=colors[role],
                                 hovertemplate="%{x}<br>" + role + ": %{y:.3f} MB<extra></extra>"))
        ratio = size.get("ratio")
        title = "Size" + (f" (quantized is {ratio:.2f}x the original on disk)" if ratio else "")
        fig.update_layout(barmode="group", title=title, yaxis_title="MB", margin={"t": 50, "b": 40, "l": 50, "r": 20})
        figures.append(fig)
    return figures


def _round(value: Any, digits: int) -> Any:
    return round(float(value), digits) if isinstance(value, int | float) and math.isfinite(value) else value


def comparison_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for comparing several quantized variants of one source: the source first (one row per distinct
    source), then each variant with its scheme, size, agreement, chrF++, perplexity and tokens/s. Every row has
    the same keys; numbers are rounded for display (``size_bytes`` stays exact)."""
    rows: list[dict[str, Any]] = []
    seen_sources: set[str] = set()

    def row(variant: str, scheme: Any, source: str, size: Any, ratio: Any, agreement: Any, kl: Any, chrf: Any,
            bleu: Any, ppl: Any, tps: Any) -> dict[str, Any]:
        return {"variant": variant, "scheme": scheme, "size_bytes": size, "size_ratio": _round(ratio, 3),
                "agreement_top1": _round(agreement, 4), "kl_mean": _round(kl, 6), "chrf++": _round(chrf, 2),
                "bleu": _round(bleu, 2), "ppl": _round(ppl, 3), "tokens_per_s": _round(tps, 1), "source": source}

    for rep in reports:
        h = rep.get("headline") or headline(rep)
        size = rep.get("size") or {}
        source = str(rep.get("source") or rep.get("original_path") or "")
        if source not in seen_sources:
            seen_sources.add(source)
            rows.append(row(source or "original", f"original ({size.get('dtype_original') or '?'})", source,
                            h.get("size_bytes_original"), 1.0, None, None, h.get("chrf_original"),
                            h.get("bleu_original"), h.get("ppl_original"), h.get("tps_original")))
        rows.append(row(str(rep.get("output") or rep.get("quantized_path") or ""), rep.get("scheme"), source,
                        h.get("size_bytes_quantized"), size.get("ratio"), h.get("agreement_top1"), h.get("kl_mean"),
                        h.get("chrf_quantized"), h.get("bleu_quantized"), h.get("ppl_quantized"),
                        h.get("tps_quantized")))
    return rows


def comparison_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Bars per variant (rows from :func:`comparison_rows`): size, top-1 agreement, chrF++ and tokens/s."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = [("size (MB)", "size_bytes", 1 / (1024 * 1024)), ("top-1 agreement (%)", "agreement_top1", 100.0),
              ("chrF++", "chrf++", 1.0), ("tokens/s", "tokens_per_s", 1.0)]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
    names = [f"{r['variant']} ({r['scheme']})" for r in rows]
    for i, (title, key, scale) in enumerate(panels, start=1):
        ys = [r[key] * scale if isinstance(r.get(key), int | float) else None for r in rows]
        fig.add_trace(go.Bar(x=names, y=ys, name=title, showlegend=False,
                             hovertemplate="%{x}<br>" + title + ": %{y:.3f}<extra></extra>"), row=1, col=i)
    fig.update_layout(title="Quantized variants side by side", margin={"t": 70, "b": 40, "l": 50, "r": 20})
    fig.update_xaxes(showticklabels=False)
    return fig


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Validation: {report.get('output', '')} ({report.get('scheme', '')})", ""]
    if report.get("demo"):
        lines += [f"**Demo model: {DEMO_LABEL}.** These numbers measure mechanics, not quality.", ""]
    lines += [f"Source: `{report.get('source', report.get('original_path'))}` · device: {report.get('device')} · "
              f"texts: {report.get('text_source')}", "", "| metric | original | quantized |", "|---|---|---|"]
    lines += [f"| {m} | {a} | {b} |" for m, a, b in report_table(report)]
    agr = report.get("agreement")
    if agr:
        lines += ["", f"Agreement is measured over {agr['scope']}, prompts cut to {agr['max_tokens_per_prompt']} tokens."]
    for note in report.get("notes") or []:
        lines += ["", f"> {note}"]
    tr = report.get("translation")
    if tr and tr.get("samples"):
        lines += ["", f"## Translations ({tr['direction']}, template `{tr['template']}`, reference set: "
                  f"{tr['reference_set']})", ""]
        for s in tr["samples"]:
            lines += [f"- **source:** {s['source']}", f"  - reference: {s['reference']}",
                      f"  - original: {s['original']}", f"  - quantized: {s['quantized']}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the model card

def _card(spec: QuantizeSpec, name: str, licence: str, demo: bool, calibration: dict[str, Any] | None,
          recipe_text: str, qcfg: dict[str, Any], report: dict[str, Any] | None) -> str:
    lic_id = licence.lower() if re.fullmatch(r"[A-Za-z0-9.\-]+", licence) else "other"
    demo_line = f"\n**Demo model: {DEMO_LABEL}.** Its source has random weights.\n" if demo else ""
    if calibration:
        calib = (f"`{calibration['dataset']}`: {calibration['samples']} texts, up to {calibration['max_seq_length']} "
                 "tokens each")
    else:
        calib = "none (data-free scheme)"
    rows = [
        ("source model", f"`{spec.model}`"),
        ("scheme", spec.scheme),
        ("ignored layers", ", ".join(f"`{i}`" for i in spec.ignore) or "none"),
    ]
    if spec.scheme == "W4A16":
        rows.append(("group size", str(spec.group_size)))
    rows += [
        ("calibration", calib),
        ("format", f"compressed-tensors `{qcfg.get('format', '?')}`"),
        ("llm-compressor", _version("llmcompressor")),
        ("compressed-tensors", _version("compressed-tensors")),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    base = f"base_model: {json.dumps(spec.model)}\n" if looks_like_hub_id(spec.model) else ""
    if report is None:
        validation = "Validation has not run yet (it runs in the same job, after saving)."
    else:
        vt = "\n".join(f"| {m} | {a} | {b} |" for m, a, b in report_table(report))
        notes = "\n".join(f"\n> {n}" for n in report.get("notes") or [])
        validation = f"| metric | original | quantized |\n|---|---|---|\n{vt}\n{notes}"
    return f"""---
license: {lic_id}
library_name: transformers
{base}tags: [quantized, compressed-tensors, llm-compressor, {spec.scheme.lower()}, hala-workbench]
---

# {name}
{demo_line}
`{spec.model}` compressed to **{spec.scheme}** with [llm-compressor](https://github.com/vllm-project/llm-compressor)
`oneshot` by the Hala Workbench, saved as a compressed-tensors checkpoint (loads with transformers and vLLM).

| | |
|---|---|
{table}

## Validation (original vs quantized)

{validation}

## Licence

{licence} (carried over from the source model).

## Recipe

```yaml
{recipe_text.rstrip()}
```
"""


# --------------------------------------------------------------------------- the step

def _load_for_quantization(path: Path, device: str, offload: bool, ctx: RunContext) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    kwargs: dict[str, Any] = {"dtype": "auto"}
    if device == "cuda" and offload:
        kwargs["device_map"] = "auto"  # accelerate placement with CPU offload; llm-compressor converts it
        ctx.log("loading with device_map='auto' (layers that do not fit the GPU are offloaded to CPU)")
    elif offload:
        ctx.log("offload has no effect on CPU: the model is loaded into memory as usual")
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if device == "cuda" and not offload:
        model = model.to("cuda")
    return model.eval(), tokenizer


def _ensure_recipe(out: Path, modifiers: list[Any]) -> str:
    """``recipe.yaml`` beside the model: the one llm-compressor wrote when it is plain YAML, else ours."""
    import yaml

    f = out / RECIPE_FILE
    text = f.read_text(encoding="utf-8") if f.is_file() else ""
    try:
        ok = bool(text.strip()) and isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        ok = False
    if not ok:
        f.write_text(recipe_yaml(modifiers), encoding="utf-8")
    return f.read_text(encoding="utf-8")


def quantize_step(spec: QuantizeSpec, ctx: RunContext) -> None:
    """Check, load, quantize with ``oneshot``, save (compressed-tensors + tokenizer + recipe.yaml + card), register
    the model, validate it against the source, and register the validation report."""
    from hala_core.merge import _is_demo, _licence_of

    total = 7
    ctx.progress(0, total, "checking the model")
    resolved, info = _resolve_source(spec, ctx)
    check_quantizable(spec, info)
    device = resolve_device(spec.device)
    out = Path(ctx.artifact_path("model", spec.output))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {spec.output!r} already exists at {out}; choose another output name or delete "
                         "that model first")
    calibration: dict[str, Any] | None = None
    calib_texts: list[str] = []
    calib_id: int | None = None
    if spec.calibration is not None and spec.scheme in CALIBRATED_SCHEMES:
        cpath, calib_id = ctx.resolve_dataset(spec.calibration.dataset)
        calib_texts = load_calibration(cpath, spec.calibration.text_field, spec.calibration.num_samples)
        calibration = {"dataset": spec.calibration.dataset, "path": str(cpath), "samples": len(calib_texts),
                       "max_seq_length": spec.calibration.max_seq_length,
                       "text_field": spec.calibration.text_field or "auto"}
        ctx.log(f"calibration: {len(calib_texts)} texts from {cpath}"
                + (f" (fewer than the {spec.calibration.num_samples} asked for)"
                   if len(calib_texts) < spec.calibration.num_samples else ""))
    elif spec.calibration is not None:
        ctx.log(f"{spec.scheme} is data-free: the calibration dataset is not used")
    licence = _licence_of(resolved, info) or "unknown — check the source model's licence"
    demo = _is_demo(resolved, info)
    _check_stop(ctx, "before loading the model")

    ctx.progress(1, total, f"loading {info.path.name} ({device})")
    model, tokenizer = _load_for_quantization(info.path, device, spec.offload, ctx)
    modifiers = recipe_for(spec, info)
    if spec.scheme == "W8A8":
        ctx.log(smoothquant_plan(info)[2])
    _check_stop(ctx, "before quantizing")

    from llmcompressor import oneshot

    ctx.progress(2, total, f"{'calibrating and ' if calib_texts else ''}quantizing ({spec.scheme})")
    claim_output_dir(out, spec.output)
    try:
        kwargs: dict[str, Any] = {}
        if calib_texts and spec.calibration is not None:
            ds = calibration_dataset(calib_texts, tokenizer, spec.calibration.max_seq_length)
            kwargs.update(dataset=ds, num_calibration_samples=len(ds), max_seq_length=spec.calibration.max_seq_length,
                          shuffle_calibration_samples=False)
        t0 = time.perf_counter()
        oneshot(model=model, recipe=modifiers, tokenizer=tokenizer, **kwargs)
        ctx.log(f"oneshot ({spec.scheme}) finished in {time.perf_counter() - t0:.1f} s")
        _check_stop(ctx, "after quantizing (nothing was saved)")
        ctx.progress(3, total, "saving the compressed checkpoint")
        model.save_pretrained(str(out), save_compressed=True)
        tokenizer.save_pretrained(str(out))
        recipe_text = _ensure_recipe(out, modifiers)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        del model
        _free(device)

    qinfo = inspect_model(out)
    qcfg = _quantization_config(qinfo) or {}
    metadata: dict[str, Any] = {
        "scheme": spec.scheme,
        "source": spec.model,
        "source_path": str(info.path),
        "licence": licence,
        "size_bytes": qinfo.size_bytes,
        "parameters": info.parameters,
        "architecture": info.architecture,
        "quant_method": qcfg.get("quant_method", "compressed-tensors"),
        "format": qcfg.get("format"),
        "ignore": list(spec.ignore),
        "calibration": calibration,
        "llmcompressor_version": _version("llmcompressor"),
        "compressed_tensors_version": _version("compressed-tensors"),
    }
    if spec.scheme == "W4A16":
        metadata["group_size"] = spec.group_size
    if demo:
        metadata.update(demo=True, label=DEMO_LABEL)
    inputs = [i for i in dict.fromkeys((resolved.artifact_id, calib_id)) if i is not None]
    (out / "README.md").write_text(_card(spec, spec.output, licence, demo, calibration, recipe_text, qcfg, None),
                                   encoding="utf-8")
    model_id = ctx.add_artifact("model", spec.output, out, metadata=metadata, inputs=inputs)
    ctx.log(f"quantized model written to {out} ({qinfo.size_bytes:,} bytes vs {info.size_bytes:,})")

    report = validate(info.path, out, spec.validation, ctx, device,
                      phase=lambda k, msg: ctx.progress(4 + k, total, msg))
    report.update(output=spec.output, source=spec.model, scheme=spec.scheme, demo=demo, licence=licence,
                  model_artifact_id=model_id)

    ctx.progress(6, total, "writing the report")
    metadata["validation"] = {k: v for k, v in report["headline"].items() if v is not None}
    (out / "README.md").write_text(_card(spec, spec.output, licence, demo, calibration, recipe_text, qcfg, report),
                                   encoding="utf-8")
    ctx.add_artifact("model", spec.output, out, metadata=metadata, inputs=inputs)
    report_name = f"{spec.output}-validation"
    report_dir = Path(ctx.artifact_path("report", report_name))
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / REPORT_JSON).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    (report_dir / REPORT_MD).write_text(report_markdown(report), encoding="utf-8")
    report_meta: dict[str, Any] = {"type": "quantization-validation", "model": spec.output, "source": spec.model,
                                   "scheme": spec.scheme, **metadata["validation"]}
    if demo:
        report_meta.update(demo=True, label=DEMO_LABEL)
    ref_id = (report.get("translation") or {}).get("reference_id")
    report_inputs = [i for i in dict.fromkeys((model_id, ref_id)) if i is not None]
    ctx.add_artifact("report", report_name, report_dir, metadata=report_meta, inputs=report_inputs)
    ctx.progress(total, total, "done")
    ctx.set_result({"report": report, "output_path": str(out), "recipe": recipe_text})
