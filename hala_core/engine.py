"""The generation engine interface and its embedded transformers engine.

Every part of the pipeline that generates text (translation, samples after a merge, chat, evaluation
helpers) goes through ``Engine.generate``. Two engines sit behind it: :class:`TransformersEngine` (here) and
:class:`hala_core.engine_vllm.VllmEngine`; :func:`make_engine` builds either by name, and :func:`vllm_available`
says (cheaply, without importing vLLM) whether the second one can run in this environment.
"""

from __future__ import annotations

import gc
import importlib.util
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

TORCH_DTYPES = ("float32", "float16", "bfloat16", "auto")
ENGINES = ("transformers", "vllm")
VLLM_MISSING = ("vLLM is not installed in this environment: install the `vllm` extra (GPU) or run "
                "scripts/ensure-vllm-env (CPU build)")


def vllm_available() -> tuple[bool, str]:
    """(True, "") when the ``vllm`` package can be found here, else (False, the reason to show). Cheap: it looks
    the package up without importing it."""
    try:
        spec = importlib.util.find_spec("vllm")
        # a folder named vllm without __init__.py (tests/vllm on sys.path) is a namespace package: origin None
        found = spec is not None and spec.origin is not None
    except (ImportError, ValueError):
        found = False
    return (True, "") if found else (False, VLLM_MISSING)


class GenerationSettings(BaseModel):
    """How to generate. ``temperature`` 0 means greedy decoding (deterministic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(64, ge=0, le=32_768)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    batch_size: int = Field(8, ge=1, le=4096)
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@runtime_checkable
class Engine(Protocol):
    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[str]: ...


class TransformersEngine:
    """Batched generation with transformers: length-sorted batches, left padding, outputs in input order."""

    def __init__(self, model_path: str | Path, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; choose one of {', '.join(TORCH_DTYPES)}")
        self.model_path = str(model_path)
        self.device = device
        tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(f"the tokenizer of {self.model_path} has neither a pad nor an eos token; "
                                 "batched generation needs one of them")
            tokenizer.pad_token = tokenizer.eos_token
        torch_dtype: Any = dtype if dtype == "auto" else getattr(torch, dtype)
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch_dtype)
        self.tokenizer = tokenizer
        self.model: Any = model.to(device).eval()
        self.last_generated_tokens = 0  # new tokens (padding excluded) produced by the last ``generate`` call

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None) -> list[str]:
        import torch

        settings = settings or GenerationSettings()
        if self.model is None:
            raise RuntimeError("this engine was closed; create a new one")
        self.last_generated_tokens = 0
        if not prompts:
            return []
        if settings.max_new_tokens == 0:
            return ["" for _ in prompts]
        tok = self.tokenizer
        lengths = [len(ids) for ids in tok(list(prompts))["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
        outputs: list[str] = [""] * len(prompts)
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "pad_token_id": tok.pad_token_id,
        }
        if settings.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=None)
            torch.manual_seed(settings.seed)
        if settings.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = settings.repetition_penalty
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            self.last_generated_tokens += int((new_tokens != tok.pad_token_id).sum())
            texts = tok.batch_decode(new_tokens, skip_special_tokens=True)
            for i, text in zip(idx, texts, strict=True):
                outputs[i] = text
        return outputs

    def close(self) -> None:
        """Free the model (and GPU memory, if it was on a GPU)."""
        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available() and str(self.device).startswith("cuda"):
            torch.cuda.empty_cache()

    def __enter__(self) -> TransformersEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_engine(name: str, model_path: str | Path, device: str = "cpu", dtype: str = "float32",
                **vllm_options: Any) -> Any:
    """The engine called ``name`` (``transformers``/``hf`` or ``vllm``) on ``model_path``.

    ``vllm_options`` (tensor_parallel_size, gpu_memory_utilization, max_model_len, enforce_eager, kv_cache_gb,
    quantization, …) go to :class:`hala_core.engine_vllm.VllmEngine` and are ignored by the transformers engine.
    ValueError when the name is unknown or vLLM is not installed (with the reason)."""
    if name in ("transformers", "hf"):
        return TransformersEngine(model_path, device=device, dtype=dtype)
    if name == "vllm":
        ok, reason = vllm_available()
        if not ok:
            raise ValueError(reason)
        from hala_core.engine_vllm import VllmEngine

        return VllmEngine(model_path, device=device, dtype=dtype, **vllm_options)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
