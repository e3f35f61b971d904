"""Model references and inspection from ``config.json`` and safetensors headers (no weights loaded)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
INDEX_FILE = "model.safetensors.index.json"
LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    architecture: str | None
    model_type: str | None
    num_layers: int | None
    hidden_size: int | None
    parameters: int
    dtype: str | None  # the checkpoint's dtype (config ``dtype``/``torch_dtype``, else the most common tensor dtype)
    tensors: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)  # name → (shape, safetensors dtype)
    size_bytes: int = 0
    config: dict = field(default_factory=dict, repr=False, compare=False)

    def weight_files(self) -> list[Path]:
        return weight_files(self.path)


def looks_like_hub_id(ref: str) -> bool:
    """True for ``org/name`` references (``LiquidAI/LFM2-350M``) that are not an existing local path."""
    ref = ref.strip()
    if not ref or ref.startswith(("/", ".", "~")) or "\\" in ref:
        return False
    if not HUB_ID_RE.match(ref) or ".." in ref:
        return False
    return not Path(ref).exists()


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a model folder (all shards named in the index, when there is one)."""
    folder = Path(path)
    index = folder / INDEX_FILE
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        names = sorted(set(data.get("weight_map", {}).values()))
        return [folder / n for n in names]
    return sorted(folder.glob("*.safetensors"))


def tensor_locations(path: str | Path) -> dict[str, Path]:
    """Tensor name → the safetensors file that holds it."""
    from safetensors import safe_open

    folder = Path(path)
    index = folder / INDEX_FILE
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        return {name: folder / fname for name, fname in data.get("weight_map", {}).items()}
    out: dict[str, Path] = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as handle:
            for name in handle.keys():
                out[name] = f
    return out


def _read_headers(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype of every tensor, from the safetensors headers (no tensor data is read)."""
    from safetensors import safe_open

    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for name in handle.keys():
                sl = handle.get_slice(name)
                tensors[name] = (tuple(int(d) for d in sl.get_shape()), str(sl.get_dtype()))
    return tensors


_ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "F8_E4M3": "float8_e4m3fn"}


def inspect_model(path: str | Path) -> ModelInfo:
    """Describe a local model folder from its config.json and safetensors headers."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ValueError(f"model folder {str(folder)!r} does not exist; give a folder with config.json and "
                         "*.safetensors weights (a Hugging Face model folder)")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file, not a model folder; give the folder that holds config.json "
                         "and *.safetensors")
    cfg_file = folder / "config.json"
    present = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(present[:10]) + (" …" if len(present) > 10 else "") if present else "nothing"
    if not cfg_file.is_file():
        raise ValueError(f"{str(folder)!r} has no config.json (found: {shown}); a model folder needs config.json "
                         "and *.safetensors weights")
    files = weight_files(folder)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"{str(folder)!r}: {INDEX_FILE} names shards that are missing: {', '.join(missing[:5])}")
    if not files:
        raise ValueError(f"{str(folder)!r} has no safetensors weights (found: {shown}); needed: model.safetensors "
                         f"or shards with {INDEX_FILE} (.bin/.pt checkpoints are not read)")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(cfg_file)!r} is not valid JSON: {e}") from None
    text_cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}

    def get(key: str):
        return config.get(key, text_cfg.get(key))

    try:
        tensors = _read_headers(files)
    except Exception as e:  # safetensors raises its own SafetensorError on a bad header
        raise ValueError(f"{str(folder)!r}: could not read the safetensors headers ({e})") from None
    parameters = sum(math.prod(shape) for shape, _ in tensors.values())
    dtype = get("dtype") or get("torch_dtype")
    if not dtype and tensors:
        counts: dict[str, int] = {}
        for _, dt in tensors.values():
            counts[dt] = counts.get(dt, 0) + 1
        top = max(counts, key=lambda k: counts[k])
        dtype = _ST_DTYPES.get(top, top)
    archs = config.get("architectures") or []
    num_layers = get("num_hidden_layers")
    if num_layers is None:
        layer_ids = {int(m.group(1)) for name in tensors if (m := LAYER_RE.search(name))}
        num_layers = max(layer_ids) + 1 if layer_ids else None
    return ModelInfo(
        path=folder.resolve(),
        architecture=archs[0] if archs else None,
        model_type=config.get("model_type"),
        num_layers=num_layers,
        hidden_size=get("hidden_size"),
        parameters=int(parameters),
        dtype=str(dtype) if dtype else None,
        tensors=tensors,
        size_bytes=sum(f.stat().st_size for f in files),
        config=config,
    )


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _listing(items: list[str], limit: int = 5) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_compatible(a: ModelInfo, b: ModelInfo) -> None:
    """Raise ValueError naming what stops ``a`` and ``b`` from being merged tensor by tensor."""
    name_a, name_b = a.path.name, b.path.name
    if a.architecture != b.architecture:
        raise ValueError(f"different architectures: A ({name_a}) is {a.architecture}, B ({name_b}) is "
                         f"{b.architecture}; both models must share one architecture")
    if a.num_layers != b.num_layers:
        raise ValueError(f"different layer counts: A ({name_a}) has {a.num_layers} layers, B ({name_b}) has "
                         f"{b.num_layers}; slerp pairs the layers one to one")
    only_a = sorted(set(a.tensors) - set(b.tensors))
    only_b = sorted(set(b.tensors) - set(a.tensors))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"only in A ({name_a}): {_listing(only_a)}")
        if only_b:
            parts.append(f"only in B ({name_b}): {_listing(only_b)}")
        raise ValueError("the models do not have the same tensors; " + "; ".join(parts))
    mismatched = [
        f"{n}: {_fmt_shape(a.tensors[n][0])} vs {_fmt_shape(b.tensors[n][0])}"
        for n in sorted(a.tensors)
        if a.tensors[n][0] != b.tensors[n][0]
    ]
    if mismatched:
        raise ValueError(f"tensor shapes differ between A ({name_a}) and B ({name_b}) "
                         f"({len(mismatched)} tensors): {_listing(mismatched)}")


def claim_output_dir(out: Path, name: str) -> None:
    """Create the output folder exclusively, so two jobs given one output name never write into one folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        out.mkdir()
        return
    except FileExistsError:
        pass
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty folder left behind by an earlier attempt
        try:
            out.mkdir()
            return
        except FileExistsError:
            pass
    raise ValueError(f"output {name!r} already exists at {out}; choose another output name or delete that "
                     "model first")
