"""The ``RunContext`` protocol: everything a step may do to the outside world goes through it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

ArtifactKind = Literal["model", "dataset", "report"]


class StopRequested(Exception):
    """Raised by a step when ``ctx.should_stop()`` turned true: the job ends as cancelled."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: where its files are and which artifact (if any) it is."""

    ref: str
    path: Path | None  # local folder with config.json, or None for a hub id not downloaded yet
    hub_id: str | None = None
    artifact_id: int | None = None
    metadata: dict[str, Any] | None = None


@runtime_checkable
class RunContext(Protocol):
    job_id: int
    job_dir: Path  # scratch and outputs of this job
    workspace: Path  # HALA_HOME

    def log(self, message: str) -> None: ...

    def log_metric(self, key: str, value: float, step: int | None = None) -> None: ...

    def progress(self, done: int, total: int, message: str = "") -> None: ...

    def should_stop(self) -> bool: ...

    def add_artifact(
        self,
        kind: ArtifactKind,
        name: str,
        path: Path,
        metadata: dict[str, Any] | None = None,
        inputs: list[int] | tuple[int, ...] = (),
    ) -> int: ...

    def resolve_model(self, ref: str) -> ResolvedModel: ...

    def resolve_dataset(self, ref: str) -> tuple[Path, int | None]:
        """A dataset artifact name or a file/folder path (inside the allowed roots) → (path, artifact id).

        A path that is not an artifact yet is registered as an external dataset artifact, for lineage."""
        ...

    @property
    def data_dir(self) -> Path | None:
        """The sample data folder (``../shared/data``: NTREX, Alpaca, EXAMS) when present."""
        ...

    def artifact_path(self, kind: ArtifactKind, name: str) -> Path:
        """The folder where a new artifact of this kind and name is written (inside the workspace)."""
        ...

    def set_result(self, result: dict[str, Any]) -> None: ...

    def enqueue(self, spec: dict[str, Any]) -> int:
        """Queue a follow-up job (e.g. an evaluation of the model this job made); returns its id."""
        ...

    def corpus_store(self) -> Any:
        """The corpus store of this workspace (``hala_core.translate.CorpusStore``): segments in, translations out."""
        ...

    def record_eval(self, model_ref: str, model_artifact_id: int | None, results: list[dict[str, Any]],
                    samples: list[dict[str, Any]]) -> None:
        """Store evaluation scores and per-sample records of one model.

        results: ``{benchmark, task, metric, value, stderr, n_samples, num_fewshot, harness_version,
        task_version}``; samples: ``{benchmark, task, doc_id, prompt, choices, response, target, correct,
        score}`` (choices/response may be lists; correct/score may be None)."""
        ...
