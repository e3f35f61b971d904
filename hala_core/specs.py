"""Job specs: frozen pydantic models, one per job kind, told apart by ``kind``.

A spec is what the UI builds, what ``hala run SPEC.yaml`` reads, and what crosses the process
boundary to the job's subprocess as JSON.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAME_RULE = "1–100 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"


def check_name(value: str, what: str = "name") -> str:
    if not NAME_RE.match(value or ""):
        raise ValueError(f"{what} {value!r} is not allowed: use {NAME_RULE}")
    return value


class BaseSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


EXECUTORS = ("local", "slurm")
_SLURM_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_SLURM_MEM_RE = re.compile(r"^\d+[KMGT]?$")
_SLURM_WORD_RE = re.compile(r"^[A-Za-z0-9._,:=+-]{1,100}$")


class SlurmResources(BaseSpec):
    """What a job asks Slurm for (``sbatch`` options). Unset fields fall back to the workspace's Slurm
    settings (``hala.yaml``), then to the cluster's defaults."""

    partition: str | None = None
    nodes: int = Field(1, ge=1, le=1024)
    gpus_per_node: int = Field(0, ge=0, le=64)
    cpus_per_task: int | None = Field(None, ge=1, le=4096)
    mem: str | None = Field(None, description="memory per node, as sbatch takes it: 16G, 64000M")
    time_limit: str | None = Field(None, description="minutes, HH:MM:SS or D-HH:MM:SS")
    account: str | None = None
    qos: str | None = None
    extra_sbatch: tuple[str, ...] = Field((), description="more sbatch options, one per line: --constraint=h100")

    @field_validator("partition", "account", "qos")
    @classmethod
    def _word(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not _SLURM_WORD_RE.match(v.strip()):
            raise ValueError(f"{v!r} is not a Slurm name: use letters, digits and . _ , : = + -")
        return v.strip()

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not _SLURM_MEM_RE.match(v.strip().upper()):
            raise ValueError(f"memory {v!r} is not understood: give a number with K, M, G or T, e.g. 16G")
        return v.strip().upper()

    @field_validator("time_limit")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not _SLURM_TIME_RE.match(v.strip()):
            raise ValueError(f"time limit {v!r} is not understood: give minutes (90), HH:MM:SS or D-HH:MM:SS")
        return v.strip()

    @field_validator("extra_sbatch")
    @classmethod
    def _extra(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for line in v:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#SBATCH"):
                line = line[len("#SBATCH"):].strip()
            if not line.startswith("-") or any(c in line for c in "\n\r;`$|&<>"):
                raise ValueError(f"extra sbatch line {line!r} is not allowed: give one option such as "
                                 "--constraint=h100 (no shell characters)")
            out.append(line)
        return tuple(out)


class JobSpec(BaseSpec):
    """What every job kind has: where it runs. ``local`` (the default) runs it as a process of a worker;
    ``slurm`` submits it with ``sbatch`` (see ``jobs.slurm``) with the resources in ``slurm``."""

    executor: Literal["local", "slurm"] = "local"
    slurm: SlurmResources | None = None

    @model_validator(mode="after")
    def _executor(self) -> JobSpec:
        if self.slurm is not None and self.executor != "slurm":
            raise ValueError("slurm resources are given but executor is 'local': set executor: slurm, "
                             "or leave the slurm section out")
        return self

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        data = {k: v for k, v in data.items() if k not in ("executor", "slurm")}
        data["executor"] = self.executor
        if self.slurm is not None:
            data["slurm"] = self.slurm.model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


class SleepSpec(JobSpec):
    """A diagnostic job: counts through ``steps`` steps, ``seconds`` in all.

    It imports nothing heavy, so it measures the queue itself (enqueue → start latency, claiming,
    cancel, reaping) and serves as a health check of a worker.
    """

    kind: Literal["sleep"] = "sleep"
    seconds: float = Field(0.0, ge=0, le=86_400)
    steps: int = Field(1, ge=1, le=100_000)
    fail: bool = False


class DemoModelsSpec(JobSpec):
    """Build tiny random-weight demo models into the workspace and register them: LFM2 (the Hala models'
    architecture; the default) or Llama (``arch: llama``: what vLLM's CPU build runs token for token like
    transformers; hidden 128 by default, since its attention needs head sizes of 32 or more)."""

    kind: Literal["demo_models"] = "demo_models"
    names: tuple[str, ...] = ("demo-lfm2-a", "demo-lfm2-b")
    arch: Literal["lfm2", "llama"] = "lfm2"
    hidden_size: int = Field(64, ge=16, le=1024)
    num_layers: int = Field(2, ge=2, le=8)
    overwrite: bool = False

    @model_validator(mode="before")
    @classmethod
    def _llama_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("arch") == "llama":
            data = {"names": ("demo-llama-a", "demo-llama-b"), "hidden_size": 128, **data}
        return data

    @field_validator("names")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("names: give at least one model name")
        for n in v:
            check_name(n, "model name")
        return v


DTYPES = ("float32", "float16", "bfloat16")


class MergeSpec(JobSpec):
    """A slerp merge of two models of one architecture (mergekit).

    ``base_model`` is model A (t=0) and ``model`` is model B (t=1); ``t`` is one number or a
    per-layer gradient (a list that mergekit interpolates across the layers).
    """

    kind: Literal["merge"] = "merge"
    method: Literal["slerp"] = "slerp"
    base_model: str = Field(..., min_length=1, description="model A (t=0): artifact name, path or hub id")
    model: str = Field(..., min_length=1, description="model B (t=1): artifact name, path or hub id")
    t: float | list[float] = 0.5
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    output: str
    sample_prompts: tuple[str, ...] = ("ما هي عاصمة مصر؟", "Translate to Arabic: Good morning.")
    sample_max_new_tokens: int = Field(24, ge=0, le=512)

    @field_validator("t")
    @classmethod
    def _t(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if isinstance(v, list) and not 1 <= len(v) <= 1024:
            raise ValueError(f"a gradient needs 1 to 1024 values, not {len(v)}")
        for x in values:
            if not 0.0 <= float(x) <= 1.0:
                raise ValueError(f"{x} is outside [0, 1]; slerp t runs from 0 (model A) to 1 (model B)")
        return v

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return check_name(v, "output name")


QUANT_SCHEMES = ("FP8_DYNAMIC", "W8A8", "W4A16")
CALIBRATED_SCHEMES = ("W8A8", "W4A16")


class CalibrationSpec(BaseSpec):
    """Calibration text for W8A8 / W4A16: a dataset artifact name or a file (JSONL/JSON/TXT/Parquet)."""

    dataset: str = Field(..., min_length=1)
    text_field: str | None = None  # None: auto (text, messages, conversations, instruction/input/output, …)
    num_samples: int = Field(64, ge=1, le=100_000)
    max_seq_length: int = Field(512, ge=8, le=32_768)


class ValidationSpec(BaseSpec):
    """What the post-conversion report measures (on the original and the quantized model, side by side)."""

    prompts: int = Field(64, ge=0, le=4096, description="prompts for top-1 agreement / KL / max logit diff")
    ppl_texts: int = Field(32, ge=0, le=4096, description="texts for perplexity")
    reference_set: str | None = Field(None, description="parallel set for chrF++/BLEU; default NTREX-128 en-ar")
    translation_pairs: int = Field(16, ge=0, le=2000)
    direction: Literal["en-ar", "ar-en"] = "en-ar"
    template: Literal["chat", "hala-translator"] = "chat"
    max_new_tokens: int = Field(48, ge=1, le=1024)
    throughput_prompts: int = Field(16, ge=0, le=1024)
    throughput_tokens: int = Field(32, ge=1, le=2048)
    engine: Literal["transformers"] = "transformers"
    batch_size: int = Field(8, ge=1, le=512)


class QuantizeSpec(JobSpec):
    """Compress a model with llm-compressor ``oneshot`` and validate the result against the original."""

    kind: Literal["quantize"] = "quantize"
    model: str = Field(..., min_length=1, description="source model: artifact name, path or hub id")
    scheme: str = "FP8_DYNAMIC"
    ignore: tuple[str, ...] = ("lm_head",)
    group_size: int = Field(128, ge=8, le=4096, description="W4A16 only: weights per quantization group")
    calibration: CalibrationSpec | None = None
    output: str
    device: Literal["auto", "cpu", "cuda"] = "auto"
    offload: bool = Field(False, description="load with device_map='auto' and CPU offload (large models)")
    validation: ValidationSpec = ValidationSpec()

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        v = v.strip().upper()
        if v not in QUANT_SCHEMES:
            raise ValueError(f"unknown scheme {v!r}; valid schemes: {', '.join(QUANT_SCHEMES)}")
        return v

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return check_name(v, "output name")

    def model_post_init(self, _context: Any) -> None:
        if self.scheme in CALIBRATED_SCHEMES and self.calibration is None:
            raise ValueError(f"scheme {self.scheme} needs calibration data: give calibration.dataset "
                             "(a dataset artifact or a JSONL/JSON/TXT file with text)")


class VllmOptions(BaseSpec):
    """How the vLLM engine loads a model (used when ``engine`` is vllm). ``enforce_eager`` None: on (fast start)
    on CPU, off (CUDA graphs) on a GPU; ``kv_cache_gb`` None: vLLM's default on a GPU (``gpu_memory_utilization``),
    1 GiB on CPU; ``quantization`` None: what the checkpoint's config says (FP8 compressed-tensors, AWQ, GPTQ…)."""

    tensor_parallel_size: int = Field(1, ge=1, le=64)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(None, ge=16, le=1_048_576)
    enforce_eager: bool | None = None
    kv_cache_gb: float | None = Field(None, gt=0.0, le=4096.0)
    quantization: str | None = None

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``hala_core.engine.make_engine`` / ``VllmEngine``."""
        return self.model_dump()


class EvalSpec(JobSpec):
    """Evaluate one or more models on benchmarks: lm-eval tasks (multiple choice) and translation sets."""

    kind: Literal["eval"] = "eval"
    models: tuple[str, ...] = Field(..., min_length=1, description="artifact names, paths or hub ids")
    benchmarks: tuple[str, ...] = Field(("exams_ar",), min_length=1,
                                        description="registry names (see `hala bench list`)")
    num_fewshot: int = Field(0, ge=0, le=25)
    limit: int | None = Field(None, ge=1, le=1_000_000, description="at most this many examples per task")
    apply_chat_template: bool = False
    batch_size: int = Field(8, ge=1, le=512)
    engine: Literal["hf", "vllm"] = "hf"
    vllm: VllmOptions = VllmOptions()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    translation_max_new_tokens: int = Field(128, ge=1, le=2048)
    translation_template: Literal["chat", "hala-translator"] = "chat"

    @field_validator("models", "benchmarks")
    @classmethod
    def _no_blanks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        v = tuple(x.strip() for x in v if x and x.strip())
        if not v:
            raise ValueError("give at least one")
        return tuple(dict.fromkeys(v))


class TranslateSpec(JobSpec):
    """Translate an imported corpus with a translator model, segment by segment, resumably.

    ``name`` names the translation of the corpus (default: translator and direction); running the same spec
    again (a retry after a crash or a kill) resumes it and translates only what is missing.
    """

    kind: Literal["translate"] = "translate"
    corpus: str = Field(..., min_length=1, description="an imported corpus (see the Corpus tab / `hala corpus list`)")
    model: str = Field(..., min_length=1, description="translator: artifact name, path or hub id")
    name: str | None = Field(None, description="translation name; default <model>-<direction>")
    direction: Literal["en-ar", "ar-en"] = "en-ar"
    template: Literal["chat", "hala-translator"] = "chat"
    max_new_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    batch_size: int = Field(16, ge=1, le=4096)
    commit_every: int = Field(64, ge=1, le=100_000, description="segments per committed batch (resume granularity)")
    limit: int | None = Field(None, ge=1, description="translate at most this many segments in this job")
    engine: Literal["transformers", "vllm"] = "transformers"
    vllm: VllmOptions = VllmOptions()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    double_share: float = Field(0.05, ge=0.0, le=1.0, description="share of segments annotated twice (agreement)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else check_name(v.strip(), "translation name")

    def run_name(self) -> str:
        """The translation's name: ``name``, or the translator's last path part and the direction."""
        if self.name:
            return self.name
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", self.model.rstrip("/").split("/")[-1]).strip("-.") or "model"
        return f"{base[:80]}-{self.direction}"

    def settings_key(self) -> dict[str, Any]:
        """What must match for a translation to be resumed by this spec (how text is generated)."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty}


TRAIN_PRESETS = ("translator", "sft")


class LoraSpec(BaseSpec):
    """LoRA adapters (peft): rank, scaling, dropout and which modules get them."""

    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1, le=4096)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = ("all-linear",)

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        v = tuple(x.strip() for x in v if x and x.strip())
        if not v:
            raise ValueError("give at least one target module (e.g. all-linear, or q_proj, v_proj)")
        return v


class TrainData(BaseSpec):
    """One training dataset (artifact name or file/folder) and its share in the mix."""

    dataset: str = Field(..., min_length=1)
    weight: float = Field(1.0, gt=0.0, le=1000.0)


class TrainSpec(JobSpec):
    """Supervised fine-tuning with TRL's ``SFTTrainer``: the translator preset (bilingual pairs in the Hala
    translator template) or instruction SFT (conversations in ``messages`` format), full or LoRA.

    The named fields are the SFTConfig fields people turn; ``advanced`` takes any other SFTConfig field, checked
    against TRL's own ``SFTConfig`` before the job is queued. ``resume_from`` continues from a checkpoint.
    """

    kind: Literal["train"] = "train"
    preset: Literal["translator", "sft"] = "sft"
    base_model: str = Field(..., min_length=1, description="artifact name, path or hub id")
    datasets: tuple[TrainData, ...] = Field(..., min_length=1)
    eval_split: float = Field(0.05, ge=0.0, le=0.5, description="share of the mix held out for eval loss")
    method: Literal["full", "lora"] = "full"
    lora: LoraSpec = LoraSpec()
    merge_lora: bool = Field(True, description="LoRA: save the final model with the adapters merged in")
    learning_rate: float = Field(2e-5, gt=0.0, le=1.0)
    num_train_epochs: float = Field(1.0, gt=0.0, le=1000.0)
    max_steps: int = Field(-1, ge=-1, description="> 0 overrides the epochs")
    per_device_train_batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096)
    max_length: int = Field(1024, ge=8, le=262_144)
    packing: bool = False
    warmup_steps: float = Field(0.03, ge=0.0, description="< 1: a share of the total steps; ≥ 1: steps")
    lr_scheduler_type: str = "cosine"
    weight_decay: float = Field(0.0, ge=0.0, le=10.0)
    assistant_only_loss: bool = Field(False, description="sft: loss on assistant turns only")
    save_steps: int = Field(500, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="default: logging_steps × 5")
    logging_steps: int = Field(10, ge=1)
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    advanced: dict[str, Any] = Field(default_factory=dict, description="other SFTConfig fields")
    num_processes: int = Field(1, ge=1, le=1024, description="> 1: accelerate launch (DDP or FSDP) on GPUs")
    gpus: str | None = Field(None, description="CUDA_VISIBLE_DEVICES for the run, e.g. 0,1,2,3")
    distributed: Literal["ddp", "fsdp"] = "ddp"
    resume_from: str | None = Field(None, description="checkpoint artifact name or folder to continue from")
    output: str
    evaluate_after: tuple[str, ...] = Field((), description="benchmarks to evaluate the final model on")

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        return [{"dataset": x} if isinstance(x, str) else x for x in (v or [])]

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return check_name(v, "output name")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not re.fullmatch(r"\d+(,\d+)*", v.replace(" ", "")):
            raise ValueError(f"gpus {v!r}: give GPU indices separated by commas, e.g. 0,1")
        return v.replace(" ", "")


AnySpec = Annotated[SleepSpec | DemoModelsSpec | MergeSpec | QuantizeSpec | EvalSpec | TranslateSpec | TrainSpec,
                    Field(discriminator="kind")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnySpec)

SPEC_TYPES: dict[str, type[BaseSpec]] = {"sleep": SleepSpec, "demo_models": DemoModelsSpec, "merge": MergeSpec,
                                          "quantize": QuantizeSpec, "eval": EvalSpec,
                                          "translate": TranslateSpec, "train": TrainSpec}


def _describe(err: ValidationError, kind: str) -> str:
    parts = []
    for e in err.errors():
        loc_parts = [str(p) for p in e["loc"]]
        if loc_parts and loc_parts[0] == kind:  # the discriminator's own level adds nothing for a reader
            loc_parts = loc_parts[1:]
        loc = ".".join(loc_parts)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "missing (required)"
        elif e["type"] == "extra_forbidden":
            allowed = ", ".join(SPEC_TYPES[kind].model_fields)
            msg = f"unknown field; the fields of a {kind} spec are: {allowed}"
        elif e["type"] == "string_too_short":
            msg = "empty (required)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_spec(data: dict[str, Any] | str) -> BaseSpec:
    """Validate a spec from a dict, JSON or YAML text; raise ValueError saying what is wrong."""
    if isinstance(data, str):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as e:
            raise ValueError(f"the spec is not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("a spec must be a mapping with a 'kind' field")
    kind = data.get("kind")
    if kind not in SPEC_TYPES:
        raise ValueError(f"unknown or missing kind {kind!r}; valid kinds: {', '.join(sorted(SPEC_TYPES))}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise ValueError(f"invalid {kind} spec: {_describe(e, kind)}") from None
