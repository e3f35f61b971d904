"""Job specs: frozen pydantic models, one per job kind, told apart by ``kind``.

A spec is what the UI builds, what ``hala run SPEC.yaml`` reads, and what crosses the process
boundary to the job's subprocess as JSON.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

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


class SleepSpec(BaseSpec):
    """A diagnostic job: counts through ``steps`` steps, ``seconds`` in all.

    It imports nothing heavy, so it measures the queue itself (enqueue → start latency, claiming,
    cancel, reaping) and serves as a health check of a worker.
    """

    kind: Literal["sleep"] = "sleep"
    seconds: float = Field(0.0, ge=0, le=86_400)
    steps: int = Field(1, ge=1, le=100_000)
    fail: bool = False


class DemoModelsSpec(BaseSpec):
    """Build the tiny random-weight LFM2 demo models into the workspace and register them."""

    kind: Literal["demo_models"] = "demo_models"
    names: tuple[str, ...] = ("demo-lfm2-a", "demo-lfm2-b")
    hidden_size: int = Field(64, ge=16, le=1024)
    num_layers: int = Field(2, ge=2, le=8)
    overwrite: bool = False

    @field_validator("names")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("names: give at least one model name")
        for n in v:
            check_name(n, "model name")
        return v


DTYPES = ("float32", "float16", "bfloat16")


class MergeSpec(BaseSpec):
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


AnySpec = Annotated[SleepSpec | DemoModelsSpec | MergeSpec, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnySpec)

SPEC_TYPES: dict[str, type[BaseSpec]] = {"sleep": SleepSpec, "demo_models": DemoModelsSpec, "merge": MergeSpec}


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
