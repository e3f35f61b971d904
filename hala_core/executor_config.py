"""Where jobs may run: the workspace's executor settings, section ``executors:`` of ``HALA_HOME/hala.yaml``.

::

    executors:
      slurm:
        enabled: true
        partition: debug            # defaults for every Slurm job; a job's ``slurm:`` section overrides them
        time_limit: "1-00:00:00"   # minutes, "MM:SS", "HH:MM:SS" or "D-HH:MM:SS" (quote the ones with colons)
        account: hala
        qos: normal
        mem: 32G
        cpus_per_task: 8
        sbatch: ["--constraint=h100"]       # extra sbatch options for every batch script
        python: /opt/hala/.venv/bin/python  # the interpreter on the compute nodes (default: the worker's)
        setup: ["module load cuda"]         # shell lines run before the job, in the batch script
        max_submitted: 32                   # jobs one worker keeps submitted (pending or running) at once
        poll_s: 2                           # seconds between the worker's looks at squeue

The API (pure: no db, no UI):

- ``load_executor_config(home) -> ExecutorConfig`` — the settings; defaults (local only) when the file or the
  section is missing; ``ExecutorConfigError`` (a ValueError naming the file and the key) when it is malformed.
- ``save_executor_config(home, cfg)`` — writes the ``executors:`` section, keeping the file's other sections,
  atomically (a temp file renamed over the old one). YAML comments in the file are not kept.
- ``enabled_executors(cfg) -> list[str]`` — ``["local"]`` plus ``"slurm"`` when enabled.

The models are frozen: change one with ``cfg.model_copy(update=...)`` or build a new one (``ExecutorConfig(
slurm=SlurmConfig(enabled=True, partition="gpu"))``); ``ExecutorConfig.model_validate(dict)`` validates a form.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hala_core.specs import SlurmResources

CONFIG_FILE = "hala.yaml"
SECTION = "executors"


class ExecutorConfigError(ValueError):
    """``hala.yaml``'s executors section cannot be read; the message names the file and what is wrong."""


class SlurmConfig(BaseModel):
    """The workspace's Slurm settings. The resource fields are defaults for every job (a job's own ``slurm:``
    section wins); ``sbatch`` lines are added to every batch script before the job's own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    partition: str | None = None
    time_limit: str | None = Field(None, description="minutes, MM:SS, HH:MM:SS or D-HH:MM:SS")
    account: str | None = None
    qos: str | None = None
    mem: str | None = Field(None, description="memory per node: 16G, 64000M")
    cpus_per_task: int | None = Field(None, ge=1, le=4096)
    sbatch: tuple[str, ...] = Field((), description="extra sbatch options for every job, e.g. --constraint=h100")
    python: str | None = Field(None, description="the Python interpreter on the compute nodes; default: the "
                                                 "worker's own (a shared file system is assumed)")
    setup: tuple[str, ...] = Field((), description="shell lines the batch script runs before the job")
    max_submitted: int = Field(32, ge=1, le=100_000)
    poll_s: float = Field(2.0, gt=0, le=600)

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if any(c in v for c in "\n\r"):
            raise ValueError("python must be one path")
        return v.strip()

    @field_validator("setup")
    @classmethod
    def _setup(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any("\n" in line or "\r" in line for line in v):
            raise ValueError("setup: give one shell line per list item")
        return tuple(line.strip() for line in v if line.strip())

    @model_validator(mode="before")
    @classmethod
    def _checked_like_a_job(cls, data: Any) -> Any:
        """The resource defaults follow the rules of a job's ``slurm:`` section (same names, same checks)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("sbatch"), str):
            data["sbatch"] = [data["sbatch"]]
        if isinstance(data.get("setup"), str):
            data["setup"] = [data["setup"]]
        if isinstance(data.get("time_limit"), int) and not isinstance(data.get("time_limit"), bool):
            data["time_limit"] = str(data["time_limit"])  # minutes (quote times with colons in YAML)
        fields = {k: data[k] for k in ("partition", "time_limit", "account", "qos", "mem", "cpus_per_task")
                  if data.get(k) is not None}
        if data.get("sbatch"):
            fields["extra_sbatch"] = data["sbatch"]
        try:
            checked = SlurmResources.model_validate(fields)
        except ValidationError as e:  # the field's own message, under this section's name for it
            names = {"extra_sbatch": "sbatch"}
            raise ValueError("; ".join(
                f"{names.get(str(err['loc'][0]), err['loc'][0]) if err['loc'] else ''}: "
                f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())) from None
        for k in ("partition", "time_limit", "account", "qos", "mem"):
            if k in fields:
                data[k] = getattr(checked, k)
        if "extra_sbatch" in fields:
            data["sbatch"] = checked.extra_sbatch
        return data


class ExecutorConfig(BaseModel):
    """All executor settings of a workspace. ``local`` always exists and has no settings here (its capacity is
    the worker's ``--max-jobs``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slurm: SlurmConfig = SlurmConfig()


def config_path(home: str | Path) -> Path:
    return Path(home) / CONFIG_FILE


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ExecutorConfigError(f"{path}: not valid YAML: {e}") from None
    except OSError as e:
        raise ExecutorConfigError(f"{path}: cannot be read: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ExecutorConfigError(f"{path}: expected a mapping of sections (executors: …), got {type(data).__name__}")
    return data


def _explain(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in (SECTION, *err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def parse_executor_config(data: Any, source: str = CONFIG_FILE) -> ExecutorConfig:
    """Validate the contents of an ``executors:`` section (a dict, or None for the defaults)."""
    if data is None:
        return ExecutorConfig()
    if not isinstance(data, dict):
        raise ExecutorConfigError(f"{source}: {SECTION}: expected a mapping (slurm: …), got {type(data).__name__}")
    if data.get("local") in ({}, None):  # an empty ``local:`` placeholder is allowed
        data = {k: v for k, v in data.items() if k != "local"}
    if "slurm" in data and data["slurm"] is None:
        data = {**data, "slurm": {}}
    try:
        return ExecutorConfig.model_validate(data)
    except ValidationError as e:
        raise ExecutorConfigError(f"{source}: {_explain(e)}") from None


def load_executor_config(home: str | Path) -> ExecutorConfig:
    """The executor settings of the workspace at ``home`` (defaults: only ``local``)."""
    path = config_path(home)
    return parse_executor_config(_read_file(path).get(SECTION), str(path))


def save_executor_config(home: str | Path, cfg: ExecutorConfig) -> Path:
    """Write ``cfg`` as the ``executors:`` section of ``HALA_HOME/hala.yaml``, keeping its other sections.

    Atomic: readers see the old file or the new one, never half of one. Only the settings that differ from the
    defaults are written. Returns the file's path."""
    path = config_path(home)
    data = _read_file(path)
    section = cfg.model_dump(mode="json", exclude_defaults=True)
    if section:
        data[SECTION] = section
    else:
        data.pop(SECTION, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True) if data else ""
    fd, tmp = tempfile.mkstemp(prefix=".hala.yaml.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def enabled_executors(cfg: ExecutorConfig) -> list[str]:
    """The executors a worker runs by default: always ``local`` first, then ``slurm`` when enabled."""
    return ["local"] + (["slurm"] if cfg.slurm.enabled else [])
