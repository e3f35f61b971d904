"""Slerp with mergekit: t per layer, the config, exactness at t=0/t=1, similarity, preview, validation."""

from __future__ import annotations

import os
import random
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch
import yaml
from safetensors import safe_open

from hala_core.context import ResolvedModel
from hala_core.demo_models import build_demo_model
from hala_core.merge import (
    _SIM_CACHE,
    MERGEKIT_CONFIG_FILE,
    OTHER_ROW,
    clear_similarity_cache,
    layer_similarity,
    layer_t_values,
    merge_step,
    mergekit_config,
    mergekit_yaml,
    non_layer_t,
    preview,
    similarity_figure,
    t_figure,
    validate_merge,
)
from hala_core.models import inspect_model
from hala_core.specs import MergeSpec


def _spec(**kw) -> MergeSpec:
    base = {"base_model": "demo-lfm2-a", "model": "demo-lfm2-b", "output": "merged", "sample_prompts": ()}
    return MergeSpec(**{**base, **kw})


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


@pytest.fixture(scope="module")
def five_layer_pair(tmp_path_factory, demo_models_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("five")
    tok = demo_models_dir["demo-lfm2-a"]
    return (build_demo_model(root / "a", seed=0, hidden_size=16, num_layers=5, tokenizer_dir=tok),
            build_demo_model(root / "b", seed=1, hidden_size=16, num_layers=5, tokenizer_dir=tok))


def _planned_t(spec: MergeSpec, a: Path, b: Path, num_layers: int) -> dict[str, float]:
    """Ask mergekit's own planner which t every output tensor gets."""
    from mergekit.architecture import get_architecture_info
    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache, SaveTensor
    from mergekit.merge import _model_out_config
    from mergekit.options import MergeOptions
    from mergekit.plan import MergePlanner

    config = MergeConfiguration.model_validate(mergekit_config(spec, str(a), str(b), num_layers))
    options = MergeOptions(device="cpu", quiet=True)
    arch = get_architecture_info(config, options)
    LoaderCache().setup(options=options)
    planner = MergePlanner(config, arch, options=options, out_model_config=_model_out_config(config, arch))
    tasks = planner.plan_to_disk(out_path=str(a.parent / "never-written"))
    return {t.tensor_name: float(t.tensor_task.parameters["t"]) for t in tasks if isinstance(t, SaveTensor)}


# ---------------------------------------------------------------------------- t per layer

def test_layer_t_scalar_and_hand_computed_gradient():
    assert layer_t_values(0.5, 3) == [0.5, 0.5, 0.5]
    assert layer_t_values([0.0, 1.0], 5) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert layer_t_values([0.0, 0.5, 1.0], 5) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert layer_t_values([0.2, 0.9, 0.1, 0.7], 5) == pytest.approx([0.2, 0.725, 0.5, 0.25, 0.7])
    assert layer_t_values([0.3, 0.8], 1) == [0.8]  # mergekit puts a lone layer at position 1
    assert non_layer_t([0.2, 0.9, 0.1, 0.7]) == 0.2 and non_layer_t(0.4) == 0.4


@pytest.mark.parametrize("t", [0.25, [0.3], [0.0, 1.0], [0.0, 0.5, 1.0], [0.2, 0.9, 0.1, 0.7],
                               [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.5]])
def test_layer_t_matches_mergekits_planner(t, five_layer_pair):
    a, b = five_layer_pair
    planned = _planned_t(_spec(t=t), a, b, 5)
    expected = layer_t_values(t, 5)
    for layer in range(5):
        per_tensor = {v for k, v in planned.items() if k.startswith(f"model.layers.{layer}.")}
        assert per_tensor == {expected[layer]}  # exactly: the same arithmetic
    others = {k: v for k, v in planned.items() if ".layers." not in k}
    assert set(others) == {"model.embed_tokens.weight", "model.embedding_norm.weight"}  # lm_head is tied
    assert all(v == non_layer_t(t) for v in others.values())  # outside the layers: the first value


def test_layer_t_matches_mergekits_evaluate_setting():
    from mergekit.config import evaluate_setting

    rng = random.Random(0)
    for _ in range(200):
        values = [round(rng.random(), 3) for _ in range(rng.randint(1, 7))]
        n = rng.randint(1, 40)
        ours = layer_t_values(values, n)
        positions = [i / (n - 1) for i in range(n)] if n > 1 else [1.0]
        theirs = [evaluate_setting("x", values, p, validate=float) for p in positions]
        assert ours == theirs


# ---------------------------------------------------------------------------- config

def test_config_validates_and_yaml_round_trips(demo_models_dir):
    from mergekit.config import MergeConfiguration

    a, b = str(demo_models_dir["demo-lfm2-a"]), str(demo_models_dir["demo-lfm2-b"])
    spec = _spec(t=[0.0, 0.5, 1.0], dtype="bfloat16")
    cfg = mergekit_config(spec, a, b, 2)
    parsed = MergeConfiguration.model_validate(cfg)
    assert parsed.merge_method == "slerp" and str(parsed.base_model) == a and parsed.dtype == "bfloat16"
    text = mergekit_yaml(spec, a, b, 2)
    assert yaml.safe_load(text) == cfg
    assert "t: [0.0, 0.5, 1.0]" in text and "layer_range: [0, 2]" in text
    MergeConfiguration.model_validate(yaml.safe_load(text))


def test_paths_with_mergekit_syntax_are_written_explicitly():
    from mergekit.config import MergeConfiguration

    cfg = mergekit_config(_spec(), "/models/a+b@c", "/models/plain", 2)
    assert cfg["base_model"] == {"model": {"path": "/models/a+b@c"}}
    parsed = MergeConfiguration.model_validate(cfg)
    assert parsed.base_model.model.path == "/models/a+b@c" and parsed.base_model.lora is None


# ---------------------------------------------------------------------------- exactness (must-show)

@pytest.mark.parametrize(("t", "expected"), [(0.0, "demo-lfm2-a"), (1.0, "demo-lfm2-b")])
def test_t0_gives_model_a_and_t1_gives_model_b_exactly(t, expected, fake_ctx, demo_models_dir):
    ctx = fake_ctx(models=demo_models_dir)
    merge_step(_spec(t=t, output=f"t{int(t)}"), ctx)
    merged = _tensors(ctx.artifact(f"t{int(t)}").path)
    want = _tensors(demo_models_dir[expected])
    assert merged.keys() == want.keys()
    for name in want:
        assert merged[name].dtype == want[name].dtype
        assert torch.equal(merged[name], want[name]), name


def test_gradient_endpoints_are_exact_per_layer(fake_ctx, demo_models_dir):
    """t = [0, 1] on two layers: layer 0 is A, layer 1 is B, and embeddings/norm get t[0] = 0, so A."""
    ctx = fake_ctx(models=demo_models_dir)
    merge_step(_spec(t=[0.0, 1.0]), ctx)
    merged = _tensors(ctx.artifact("merged").path)
    a, b = _tensors(demo_models_dir["demo-lfm2-a"]), _tensors(demo_models_dir["demo-lfm2-b"])
    for name, tensor in merged.items():
        source = b if name.startswith("model.layers.1.") else a
        assert torch.equal(tensor, source[name]), name


def test_half_way_is_slerp_of_the_whole_tensor(fake_ctx, demo_models_dir):
    """Each tensor is slerped as one flattened vector (checked by hand), not averaged."""
    ctx = fake_ctx(models=demo_models_dir)
    merge_step(_spec(t=0.5), ctx)
    merged = _tensors(ctx.artifact("merged").path)
    ta, tb = _tensors(demo_models_dir["demo-lfm2-a"]), _tensors(demo_models_dir["demo-lfm2-b"])
    t = 0.5
    for name in ("model.layers.0.feed_forward.w1.weight", "model.layers.1.self_attn.q_proj.weight"):
        x, y = ta[name].double().flatten(), tb[name].double().flatten()
        theta = torch.acos(torch.dot(x / x.norm(), y / y.norm()))
        expected = (torch.sin((1 - t) * theta) * x + torch.sin(t * theta) * y) / torch.sin(theta)
        m = merged[name].double().flatten()
        assert not torch.equal(merged[name], ta[name]) and not torch.equal(merged[name], tb[name])
        assert torch.allclose(m, expected, atol=1e-6), name
        assert not torch.allclose(m, (1 - t) * x + t * y, atol=1e-4)  # not a plain average


def test_same_model_twice_merges_to_itself(fake_ctx, demo_models_dir):
    ctx = fake_ctx(models=demo_models_dir)
    merge_step(_spec(model="demo-lfm2-a", t=0.3), ctx)
    merged, a = _tensors(ctx.artifact("merged").path), _tensors(demo_models_dir["demo-lfm2-a"])
    assert all(torch.allclose(merged[k], a[k], rtol=1e-6, atol=1e-7) for k in a)
    saved = yaml.safe_load((ctx.artifact("merged").path / MERGEKIT_CONFIG_FILE).read_text())
    assert saved["slices"][0]["sources"][1]["model"] == str(demo_models_dir["demo-lfm2-a"].resolve()) + "/"


# ---------------------------------------------------------------------------- similarity and preview

def test_similarity_rows_self_and_pair(demo_models_dir):
    a, b = demo_models_dir["demo-lfm2-a"], demo_models_dir["demo-lfm2-b"]
    rows = layer_similarity(a, a)
    assert [r["name"] for r in rows] == ["layer 0", "layer 1", OTHER_ROW]
    assert [r["layer"] for r in rows] == [0, 1, None]
    for r in rows:
        assert r["cosine"] == pytest.approx(1.0, abs=1e-12)
        assert r["angle_deg"] == pytest.approx(0.0, abs=1e-4)
    info = inspect_model(a)
    assert sum(r["parameters"] for r in rows) == info.parameters
    assert sum(r["tensors"] for r in rows) == len(info.tensors)
    pair = layer_similarity(a, b)
    assert len(pair) == 3
    assert all(-1.0 <= r["cosine"] < 0.999 and 0 < r["angle_deg"] <= 180 for r in pair)


def test_similarity_cache_keyed_by_weight_mtime(tmp_path, demo_models_dir):
    import shutil

    clear_similarity_cache()
    a = tmp_path / "a"
    shutil.copytree(demo_models_dir["demo-lfm2-a"], a)
    b = demo_models_dir["demo-lfm2-b"]
    first = layer_similarity(a, b)
    assert len(_SIM_CACHE) == 1
    first[0]["cosine"] = 42.0  # callers get copies: the cache is not corrupted
    assert layer_similarity(a, b)[0]["cosine"] != 42.0
    assert len(_SIM_CACHE) == 1  # a hit: the t slider moving does not recompute
    weights = a / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    layer_similarity(a, b)
    assert len(_SIM_CACHE) == 2  # weights changed: computed again


def test_preview_and_figures(demo_models_dir):
    from mergekit.config import MergeConfiguration

    a, b = inspect_model(demo_models_dir["demo-lfm2-a"]), inspect_model(demo_models_dir["demo-lfm2-b"])
    p = preview(_spec(t=[0.1, 0.9]), a, b)
    assert {"yaml", "layer_t", "similarity", "non_layer_t"} <= p.keys()
    MergeConfiguration.model_validate(yaml.safe_load(p["yaml"]))
    assert p["layer_t"] == pytest.approx([0.1, 0.9]) and p["non_layer_t"] == 0.1
    assert len(p["similarity"]) == a.num_layers + 1

    tf = t_figure(p["layer_t"], p["non_layer_t"])
    sf = similarity_figure(p["similarity"])
    for fig in (tf, sf):
        assert isinstance(fig, go.Figure)
        assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert list(tf.data[0].y) == p["layer_t"]
    assert list(sf.data[0].x) == ["layer 0", "layer 1", OTHER_ROW]


# ---------------------------------------------------------------------------- validation

def _resolver(known: dict[str, Path]):
    def resolve(ref: str) -> ResolvedModel:
        if ref in known:
            return ResolvedModel(ref=ref, path=known[ref])
        if "/" in ref and not ref.startswith("/"):
            return ResolvedModel(ref=ref, path=None, hub_id=ref)
        return ResolvedModel(ref=ref, path=Path(ref))

    return resolve


def test_validate_merge_accepts_pair_and_same_model_twice(demo_models_dir):
    resolve = _resolver(demo_models_dir)
    ra, rb, ia, ib = validate_merge(_spec(), resolve)
    assert (ia.path, ib.path) == (demo_models_dir["demo-lfm2-a"].resolve(), demo_models_dir["demo-lfm2-b"].resolve())
    assert ra.ref == "demo-lfm2-a" and rb.ref == "demo-lfm2-b"
    validate_merge(_spec(model="demo-lfm2-a"), resolve)


def test_validate_merge_errors(tmp_path, demo_models_dir):
    resolve = _resolver({**demo_models_dir, "small": build_demo_model(tmp_path / "small", seed=5, hidden_size=32)})
    with pytest.raises(ValueError, match=r"model B \(model\) '/no/such/model' was not found"):
        validate_merge(_spec(model="/no/such/model"), resolve)
    with pytest.raises(ValueError, match="no model hub can be reached") as err:
        validate_merge(_spec(base_model="LiquidAI/LFM2-350M"), resolve)
    assert "local folder" in str(err.value) and "model A (base_model)" in str(err.value)
    with pytest.raises(ValueError, match="tensor shapes differ"):
        validate_merge(_spec(model="small"), resolve)

    def raising(ref: str) -> ResolvedModel:
        raise ValueError("unknown model 'x'; known models: a, b")

    with pytest.raises(ValueError, match="model A .*unknown model 'x'; known models: a, b"):
        validate_merge(_spec(base_model="x"), raising)
