"""Slerp merges with mergekit: the config that will run, a preview (t per layer, how far apart the
models are layer by layer) and the merge step itself.

How mergekit 0.1.5 spreads ``t`` (read from ``mergekit/plan.py`` and ``mergekit/config.py``):

- Layer ``i`` of ``n`` sits at position ``p = i / (n - 1)`` (``p = 1`` when a slice has one layer).
- A list ``t = [v0, …, vk]`` is read at ``p`` by linear interpolation over its evenly spaced entries:
  ``s = p * k``, ``j = int(s)``, ``t = (1 - (s - j)) * v[j] + (s - j) * v[min(k, j + 1)]``.
- Tensors outside the layers (embeddings, LFM2's ``embedding_norm`` — the final norm, despite its name —
  and ``lm_head`` when it is not tied) are planned at position 0, so they get ``v0``, the *first* value.
- Slerp treats each tensor as one flattened vector (the leading axis in ``slerp`` is a batch of output
  tensors, not rows); nearly parallel pairs (|cos| > 0.9995, e.g. identical norm weights) are interpolated
  linearly. t = 0 gives model A's tensors exactly and t = 1 model B's.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hala_core.context import ResolvedModel, RunContext, StopRequested
from hala_core.demo_models import DEMO_LABEL
from hala_core.models import (
    LAYER_RE,
    ModelInfo,
    check_compatible,
    claim_output_dir,
    inspect_model,
    looks_like_hub_id,
    tensor_locations,
)
from hala_core.specs import MergeSpec

if TYPE_CHECKING:
    import plotly.graph_objects as go

MERGEKIT_CONFIG_FILE = "mergekit_config.yml"
SAMPLES_FILE = "samples.json"
OTHER_ROW = "embeddings/other"
_CHUNK_ELEMENTS = 4 * 1024 * 1024


# --------------------------------------------------------------------------- t per layer

def _interpolate(values: list[float], position: float) -> float:
    """mergekit's ``evaluate_setting`` for a numeric list, at ``position`` in [0, 1]."""
    scaled = position * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return float((1 - frac) * values[i0] + frac * values[i1])


def layer_t_values(t: float | list[float], num_layers: int) -> list[float]:
    """The t each layer gets, computed exactly as mergekit plans it (see the module docstring)."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    if not isinstance(t, list | tuple):
        return [float(t)] * num_layers
    values = [float(v) for v in t]
    if not values:
        raise ValueError("t: a gradient needs at least one value")
    positions = [i / (num_layers - 1) for i in range(num_layers)] if num_layers > 1 else [1.0]
    return [_interpolate(values, p) for p in positions]


def non_layer_t(t: float | list[float]) -> float:
    """The t that embeddings, the final norm and lm_head get: mergekit reads the gradient at position 0."""
    if isinstance(t, list | tuple):
        return _interpolate([float(v) for v in t], 0.0)
    return float(t)


# --------------------------------------------------------------------------- the mergekit config

def _model_ref(path: str) -> str | dict[str, Any]:
    """A mergekit model reference for a local folder. '+' (LoRA) and '@' (revision) have meanings in
    mergekit's string form, so paths holding them are written in the explicit mapping form."""
    if "+" in path or "@" in path:
        return {"model": {"path": path}}
    return path


def mergekit_config(
    spec: MergeSpec, base_path: str, model_path: str, num_layers: int
) -> dict[str, Any]:
    """The mergekit configuration (as a plain dict) for a slerp of ``base_path`` (A, t=0) and ``model_path`` (B, t=1).

    The ``slices`` form with an explicit ``layer_range`` is used (mergekit turns the ``models`` form into
    the same single slice); ``t`` goes into the top-level ``parameters``, where slerp reads it.
    mergekit refuses one model reference given twice ("Duplicate merge inputs") and keys loaded tensors
    by the reference's text, so when A and B are the same folder, B is written with a trailing "/":
    the same files under a reference mergekit tells apart.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    base_path, model_path = str(base_path), str(model_path)
    if Path(base_path).resolve() == Path(model_path).resolve():
        base_path = base_path.rstrip("/") or "/"
        model_path = base_path + "/"
    base_ref = _model_ref(base_path)
    other_ref = _model_ref(model_path)
    t: float | list[float] = [float(v) for v in spec.t] if isinstance(spec.t, list) else float(spec.t)
    return {
        "merge_method": spec.method,
        "base_model": base_ref,
        "slices": [
            {
                "sources": [
                    {"model": base_ref, "layer_range": [0, num_layers]},
                    {"model": other_ref, "layer_range": [0, num_layers]},
                ]
            }
        ],
        "parameters": {"t": t},
        "dtype": spec.dtype,
    }


def config_yaml(config: dict[str, Any]) -> str:
    """YAML text for a mergekit config dict (validated with mergekit's ``MergeConfiguration`` first)."""
    from mergekit.config import MergeConfiguration

    MergeConfiguration.model_validate(config)
    from importlib.metadata import version

    header = f"# slerp merge written by the Hala Workbench (mergekit {version('mergekit')}): A = base_model (t=0), B (t=1)\n"
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=None)


def mergekit_yaml(spec: MergeSpec, base_path: str, model_path: str, num_layers: int) -> str:
    """The mergekit YAML that ``merge_step`` runs (and saves beside the merged model)."""
    return config_yaml(mergekit_config(spec, base_path, model_path, num_layers))


# --------------------------------------------------------------------------- similarity

_SIM_CACHE: dict[tuple, list[dict[str, Any]]] = {}
_SIM_LOCK = threading.Lock()
_SIM_CACHE_MAX = 64


def _weights_key(path: Path) -> tuple:
    from hala_core.models import weight_files

    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in weight_files(path) if f.is_file())


def _accumulate(handle_a: Any, handle_b: Any, name: str, sums: list[float]) -> int:
    """Add dot(a, b), |a|², |b|² of one tensor to ``sums``, reading it in row chunks. Returns its size."""
    import torch

    sa, sb = handle_a.get_slice(name), handle_b.get_slice(name)
    shape_a, shape_b = tuple(sa.get_shape()), tuple(sb.get_shape())
    if shape_a != shape_b:
        raise ValueError(f"tensor {name} has shape {list(shape_a)} in A but {list(shape_b)} in B")
    numel = math.prod(shape_a)
    if numel == 0:
        return 0
    if len(shape_a) == 0:
        a = handle_a.get_tensor(name).to(torch.float64).reshape(1)
        b = handle_b.get_tensor(name).to(torch.float64).reshape(1)
        sums[0] += float(a @ b)
        sums[1] += float(a @ a)
        sums[2] += float(b @ b)
        return 1
    rows = shape_a[0]
    step = max(1, _CHUNK_ELEMENTS // max(1, numel // rows))
    for start in range(0, rows, step):
        a = sa[start : start + step].to(torch.float64).reshape(-1)
        b = sb[start : start + step].to(torch.float64).reshape(-1)
        sums[0] += float(a @ b)
        sums[1] += float(a @ a)
        sums[2] += float(b @ b)
    return numel


def _row(label: str, layer: int | None, sums: list[float], n_tensors: int, numel: int) -> dict[str, Any]:
    dot, na, nb = sums
    if na == 0.0 and nb == 0.0:
        cosine = 1.0
    elif na == 0.0 or nb == 0.0:
        cosine = 0.0
    else:
        cosine = max(-1.0, min(1.0, dot / math.sqrt(na * nb)))
    return {
        "layer": layer,
        "name": label,
        "cosine": cosine,
        "angle_deg": math.degrees(math.acos(cosine)),
        "tensors": n_tensors,
        "parameters": numel,
    }


def layer_similarity(path_a: str | Path, path_b: str | Path) -> list[dict[str, Any]]:
    """Cosine similarity and angle (degrees) between A and B, one row per layer plus one for the rest.

    Each row treats all the tensors of that layer as one long vector (flattened and concatenated), so
    big matrices weigh more than norms; the last row ("embeddings/other") does the same for every tensor
    outside the layers. Tensors are streamed a few million values at a time with ``safe_open``, never
    whole models. Tensors present in only one model are skipped (``check_compatible`` reports them).
    Results are cached by the two paths and the weight files' mtimes and sizes.
    """
    from safetensors import safe_open

    pa, pb = Path(path_a).resolve(), Path(path_b).resolve()
    key = (str(pa), _weights_key(pa), str(pb), _weights_key(pb))
    with _SIM_LOCK:
        hit = _SIM_CACHE.get(key)
    if hit is not None:
        return [dict(r) for r in hit]

    loc_a, loc_b = tensor_locations(pa), tensor_locations(pb)
    groups: dict[int | None, list[float]] = {}
    counts: dict[int | None, list[int]] = {}
    with ExitStack() as stack:
        handles: dict[Path, Any] = {}

        def handle(f: Path) -> Any:
            if f not in handles:
                handles[f] = stack.enter_context(safe_open(str(f), framework="pt"))
            return handles[f]

        for name in sorted(loc_a, key=lambda n: (str(loc_a[n]), n)):
            if name not in loc_b:
                continue
            m = LAYER_RE.search(name)
            layer = int(m.group(1)) if m else None
            sums = groups.setdefault(layer, [0.0, 0.0, 0.0])
            numel = _accumulate(handle(loc_a[name]), handle(loc_b[name]), name, sums)
            c = counts.setdefault(layer, [0, 0])
            c[0] += 1
            c[1] += numel

    layers = sorted(k for k in groups if k is not None)
    rows = [_row(f"layer {i}", i, groups[i], *counts[i]) for i in layers]
    if None in groups:
        rows.append(_row(OTHER_ROW, None, groups[None], *counts[None]))
    with _SIM_LOCK:
        if len(_SIM_CACHE) >= _SIM_CACHE_MAX:
            _SIM_CACHE.pop(next(iter(_SIM_CACHE)))
        _SIM_CACHE[key] = rows
    return [dict(r) for r in rows]


def clear_similarity_cache() -> None:
    with _SIM_LOCK:
        _SIM_CACHE.clear()


# --------------------------------------------------------------------------- preview and figures

def preview(spec: MergeSpec, base: ModelInfo, other: ModelInfo) -> dict[str, Any]:
    """What a merge will do, without doing it: the mergekit YAML, t per layer and A↔B similarity per layer."""
    if base.num_layers is None:
        raise ValueError(f"{base.path}: config.json has no num_hidden_layers; cannot plan a per-layer merge")
    return {
        "yaml": mergekit_yaml(spec, str(base.path), str(other.path), base.num_layers),
        "layer_t": layer_t_values(spec.t, base.num_layers),
        "non_layer_t": non_layer_t(spec.t),
        "similarity": layer_similarity(base.path, other.path),
    }


def t_figure(layer_t: list[float], non_layer: float | None = None) -> go.Figure:
    """Line chart of t per layer (0 = model A, 1 = model B)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(range(len(layer_t))), y=layer_t, mode="lines+markers", name="t per layer",
                             hovertemplate="layer %{x}: t = %{y:.3f}<extra></extra>"))
    if non_layer is not None:
        fig.add_hline(y=non_layer, line_dash="dot", annotation_text=f"embeddings/other: t = {non_layer:.3f}")
    fig.update_layout(title="slerp t per layer (0 = model A, 1 = model B)", xaxis_title="layer",
                      yaxis_title="t", yaxis_range=[-0.05, 1.05], margin={"t": 50, "b": 40, "l": 50, "r": 20})
    fig.update_xaxes(dtick=1)
    return fig


def similarity_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Bar chart of the angle between A and B per layer (cosine in the hover)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(
        x=[r["name"] for r in rows],
        y=[r["angle_deg"] for r in rows],
        customdata=[[r["cosine"], r["parameters"]] for r in rows],
        hovertemplate="%{x}<br>angle %{y:.2f}°<br>cosine %{customdata[0]:.4f}<br>%{customdata[1]:,} values"
                      "<extra></extra>",
        name="angle",
    ))
    fig.update_layout(title="How far apart A and B are, layer by layer (0° = identical)", xaxis_title="layer",
                      yaxis_title="angle between A and B (degrees)", margin={"t": 50, "b": 40, "l": 50, "r": 20})
    return fig


# --------------------------------------------------------------------------- validation

def _resolve_one(role: str, ref: str, resolve: Callable[[str], ResolvedModel]) -> tuple[ResolvedModel, ModelInfo]:
    try:
        resolved = resolve(ref)
    except ValueError as e:
        raise ValueError(f"model {role} {ref!r}: {e}") from None
    if resolved.path is None or not Path(resolved.path).exists():
        if resolved.hub_id or looks_like_hub_id(ref):
            hub_id = resolved.hub_id or ref
            raise ValueError(
                f"model {role} {ref!r} looks like a hub id ({hub_id}) that is not available locally, and no model "
                "hub can be reached from this machine; download it where a hub is reachable (e.g. "
                f"`hf download {hub_id} --local-dir DIR`), copy it here and give the local folder, "
                "or register it as a model artifact"
            )
        where = f" (looked in {resolved.path})" if resolved.path is not None else ""
        raise ValueError(f"model {role} {ref!r} was not found{where}; give a model artifact name, a local model "
                         "folder or a hub id that has been downloaded")
    try:
        info = inspect_model(resolved.path)
    except ValueError as e:
        raise ValueError(f"model {role} {ref!r}: {e}") from None
    return resolved, info


def validate_merge(
    spec: MergeSpec, resolve: Callable[[str], ResolvedModel]
) -> tuple[ResolvedModel, ResolvedModel, ModelInfo, ModelInfo]:
    """Resolve both models and check they can be slerp-merged; raise ValueError saying what is wrong."""
    ra, ia = _resolve_one("A (base_model)", spec.base_model, resolve)
    rb, ib = _resolve_one("B (model)", spec.model, resolve)
    check_compatible(ia, ib)
    if ia.num_layers is None:
        raise ValueError(f"model A {spec.base_model!r}: config.json has no num_hidden_layers; mergekit needs it")
    return ra, rb, ia, ib


# --------------------------------------------------------------------------- the merge step

_LICENCE_RE = re.compile(r"^licen[cs]e:\s*(\S.*?)\s*$", re.MULTILINE | re.IGNORECASE)


def _licence_of(resolved: ResolvedModel, info: ModelInfo) -> str | None:
    meta = resolved.metadata or {}
    for key in ("licence", "license"):
        if meta.get(key):
            return str(meta[key])
    card = info.path / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
            m = _LICENCE_RE.search(front)
            if m:
                return m.group(1).strip("'\"")
    return None


def _is_demo(resolved: ResolvedModel, info: ModelInfo) -> bool:
    """A demo (random-weight) model: so marked in its artifact metadata, or its card carries the demo label."""
    if (resolved.metadata or {}).get("demo"):
        return True
    card = info.path / "README.md"
    return card.is_file() and DEMO_LABEL in card.read_text(encoding="utf-8", errors="replace")


def combined_licence(la: str | None, lb: str | None) -> str:
    """The licence line of a merge: the shared licence, or both (each input's terms apply)."""
    if la and lb and la.lower() == lb.lower():
        return la
    if la or lb:
        return f"A: {la or 'unknown'}; B: {lb or 'unknown'} (the terms of both inputs apply)"
    return "unknown — check the licences of both input models"


def _merge_card(spec: MergeSpec, name: str, yaml_text: str, layer_t: list[float], licence: str,
                demo: bool, info: ModelInfo) -> str:
    lic_id = licence.lower() if re.fullmatch(r"[A-Za-z0-9.\-]+", licence) else "other"
    demo_line = f"\n**Demo model: {DEMO_LABEL}.** One or both inputs have random weights.\n" if demo else ""
    t_desc = ", ".join(f"{v:.3f}" for v in layer_t)
    return f"""---
license: {lic_id}
library_name: transformers
tags: [merge, mergekit, slerp, hala-workbench]
---

# {name}
{demo_line}
A slerp merge made with [mergekit](https://github.com/arcee-ai/mergekit) by the Hala Workbench.

| | |
|---|---|
| method | slerp |
| model A (t = 0, base_model) | `{spec.base_model}` |
| model B (t = 1) | `{spec.model}` |
| t | `{spec.t}` |
| t per layer | {t_desc} |
| t for embeddings/other | {non_layer_t(spec.t):.3f} |
| architecture | `{info.architecture}` |
| parameters | {info.parameters:,} |
| dtype | {spec.dtype} |

## Licence

{licence}

## mergekit configuration

```yaml
{yaml_text.rstrip()}
```
"""


def same_tokenizer(path_a: Path, path_b: Path) -> bool:
    """True when both folders' ``tokenizer.json`` vocabularies agree (or either has none to compare)."""
    fa, fb = Path(path_a) / "tokenizer.json", Path(path_b) / "tokenizer.json"
    if not (fa.is_file() and fb.is_file()):
        return True
    try:
        va = json.loads(fa.read_text(encoding="utf-8")).get("model", {}).get("vocab")
        vb = json.loads(fb.read_text(encoding="utf-8")).get("model", {}).get("vocab")
    except (OSError, ValueError):
        return True
    return va == vb


def _check_stop(ctx: RunContext, where: str) -> None:
    if ctx.should_stop():
        raise StopRequested(f"stopped {where}")


def _sample(path: Path, prompts: list[str], max_new_tokens: int, dtype: str) -> list[str]:
    import torch

    from hala_core.engine import GenerationSettings, TransformersEngine

    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = TransformersEngine(path, device=device, dtype=dtype if device == "cuda" else "float32")
    try:
        return engine.generate(prompts, GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0))
    finally:
        engine.close()


def _forget_loaders(refs: list[Any]) -> None:
    """mergekit caches tensor loaders process-wide; drop ours so a rebuilt model is never read stale."""
    from mergekit.common import ModelReference
    from mergekit.io.tasks import LoaderCache

    cache = LoaderCache()
    for ref in refs:
        key = ModelReference.model_validate(ref)
        loader = cache.loaders.pop(key, None)
        if loader is not None:
            loader.flush()


def merge_step(spec: MergeSpec, ctx: RunContext) -> None:
    """Validate, slerp-merge with mergekit, write the card, sample A/B/merge greedily, register the model."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    total = 5
    ctx.progress(0, total, "validating the models")
    ra, rb, ia, ib = validate_merge(spec, ctx.resolve_model)
    out = Path(ctx.artifact_path("model", spec.output))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {spec.output!r} already exists at {out}; choose another output name or delete "
                         "that model first")
    num_layers = int(ia.num_layers or 0)
    config = mergekit_config(spec, str(ia.path), str(ib.path), num_layers)
    yaml_text = config_yaml(config)
    layer_t = layer_t_values(spec.t, num_layers)
    ctx.log(f"merging A={ia.path} and B={ib.path} with slerp, t per layer {layer_t}")
    if not same_tokenizer(ia.path, ib.path):
        ctx.log("warning: A and B have different tokenizer vocabularies; the merge copies A's tokenizer, "
                "so B's token ids may not mean the same thing")
    for layer, lt in enumerate(layer_t):  # plotted in Runs: what each layer gets, and how far apart A and B are
        ctx.log_metric("t", lt, step=layer)
    for row in layer_similarity(ia.path, ib.path):
        if row.get("layer") is not None:
            ctx.log_metric("angle_deg", row["angle_deg"], step=int(row["layer"]))
    _check_stop(ctx, "before the merge")

    ctx.progress(1, total, "merging (mergekit slerp)")
    claim_output_dir(out, spec.output)
    options = MergeOptions(device="cpu", copy_tokenizer=True, lazy_unpickle=False, quiet=True)
    refs = [config["base_model"], config["slices"][0]["sources"][1]["model"]]
    try:
        run_merge(MergeConfiguration.model_validate(config), out_path=str(out), options=options,
                  config_source=yaml_text)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        _forget_loaders(refs)
    saved_cfg = out / MERGEKIT_CONFIG_FILE
    if not saved_cfg.is_file() or saved_cfg.read_text(encoding="utf-8") != yaml_text:
        saved_cfg.write_text(yaml_text, encoding="utf-8")

    la, lb = _licence_of(ra, ia), _licence_of(rb, ib)
    licence = combined_licence(la, lb)
    demo = _is_demo(ra, ia) or _is_demo(rb, ib)
    merged = inspect_model(out)
    (out / "README.md").write_text(
        _merge_card(spec, spec.output, yaml_text, layer_t, licence, demo, merged), encoding="utf-8"
    )
    metadata: dict[str, Any] = {
        "method": spec.method,
        "t": spec.t,
        "layer_t": layer_t,
        "non_layer_t": non_layer_t(spec.t),
        "base_model": spec.base_model,
        "model": spec.model,
        "licence": licence,
        "architecture": merged.architecture,
        "parameters": merged.parameters,
        "dtype": spec.dtype,
    }
    if demo:
        metadata.update(demo=True, label=DEMO_LABEL)
    inputs = list(dict.fromkeys(r.artifact_id for r in (ra, rb) if r.artifact_id is not None))
    ctx.add_artifact("model", spec.output, out, metadata=metadata, inputs=inputs)
    ctx.log(f"merged model written to {out}")

    prompts = list(spec.sample_prompts)
    columns: dict[str, list[str]] = {}
    for i, (key, path, label) in enumerate(
        (("a", ia.path, "sampling model A"), ("b", ib.path, "sampling model B"), ("merge", out, "sampling the merge"))
    ):
        _check_stop(ctx, f"before {label}")
        ctx.progress(2 + i, total, label)
        if key == "b" and ib.path == ia.path:
            columns[key] = list(columns["a"])
        elif prompts:
            columns[key] = _sample(Path(path), prompts, spec.sample_max_new_tokens, spec.dtype)
        else:
            columns[key] = []
    samples = [
        {"prompt": p, "a": columns["a"][j], "b": columns["b"][j], "merge": columns["merge"][j]}
        for j, p in enumerate(prompts)
    ]
    Path(ctx.job_dir).mkdir(parents=True, exist_ok=True)
    (Path(ctx.job_dir) / SAMPLES_FILE).write_text(json.dumps(samples, ensure_ascii=False, indent=2), encoding="utf-8")
    ctx.progress(total, total, "done")
    ctx.set_result({"samples": samples, "yaml": yaml_text, "layer_t": layer_t, "non_layer_t": non_layer_t(spec.t),
                    "output_path": str(out), "licence": licence})
