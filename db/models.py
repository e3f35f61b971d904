"""SQLAlchemy 2.0 typed models: users, workers, jobs, metrics, artifacts and their lineage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


ROLES = ("admin", "researcher", "annotator")
JOB_STATES = ("queued", "claimed", "running", "succeeded", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("claimed", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted")
ARTIFACT_KINDS = ("model", "dataset", "report")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(300))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """A running ``hala worker`` (or the worker inside ``hala workbench``): heartbeats tell it is alive."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    executor: Mapped[str] = mapped_column(String(32), default="local")
    max_jobs: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str | None] = mapped_column(String(100), index=True, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    worker_id: Mapped[str | None] = mapped_column(ForeignKey("workers.id", ondelete="SET NULL"), default=None)
    host: Mapped[str | None] = mapped_column(String(255), default=None)
    executor: Mapped[str] = mapped_column(String(32), default="local")
    executor_handle: Mapped[str | None] = mapped_column(String(255), default=None)
    # what the executor itself says of the job (Slurm: PENDING, RUNNING, COMPLETED, TIMEOUT, …), for the Runs tab
    executor_state: Mapped[str | None] = mapped_column(String(32), default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    log_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None)
    resume_of_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(String(500), default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    metrics: Mapped[list[Metric]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                                 passive_deletes=True)
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="job")


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_key_step", "job_id", "key", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer, default=0)
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="metrics")


class ArtifactInput(Base):
    """Lineage: artifact ``artifact_id`` was made from ``input_id``."""

    __tablename__ = "artifact_inputs"

    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    input_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_artifacts_kind_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(1024))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None)
    owner: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job | None] = relationship(back_populates="artifacts")
    inputs: Mapped[list[Artifact]] = relationship(
        secondary="artifact_inputs",
        primaryjoin="Artifact.id == ArtifactInput.artifact_id",
        secondaryjoin="Artifact.id == ArtifactInput.input_id",
        viewonly=True,
    )


class EvalResult(Base):
    """One score: model × benchmark/task × metric, with the versions that produced it."""

    __tablename__ = "eval_results"
    __table_args__ = (Index("ix_eval_results_model_task", "model_ref", "benchmark", "task"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    model_ref: Mapped[str] = mapped_column(String(500))
    model_artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id", ondelete="SET NULL"),
                                                          default=None)
    benchmark: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    stderr: Mapped[float | None] = mapped_column(Float, default=None)
    n_samples: Mapped[int | None] = mapped_column(Integer, default=None)
    num_fewshot: Mapped[int | None] = mapped_column(Integer, default=None)
    harness_version: Mapped[str | None] = mapped_column(String(50), default=None)
    task_version: Mapped[str | None] = mapped_column(String(50), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalSample(Base):
    """One example as a model saw and answered it, for drill-down and model-vs-model comparison."""

    __tablename__ = "eval_samples"
    __table_args__ = (Index("ix_eval_samples_job_model_task", "job_id", "model_ref", "task", "doc_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    model_ref: Mapped[str] = mapped_column(String(500))
    benchmark: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(200))
    doc_id: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    choices: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    response: Mapped[Any] = mapped_column(JSON, default=None)
    target: Mapped[str | None] = mapped_column(Text, default=None)
    correct: Mapped[bool | None] = mapped_column(Boolean, default=None)
    score: Mapped[float | None] = mapped_column(Float, default=None)


class Conversation(Base):
    """A chat or arena conversation from the Chat tab (kept so it can be reviewed and exported)."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(100), index=True, default=None)
    mode: Mapped[str] = mapped_column(String(16), default="chat")  # chat | arena
    models: Mapped[list[Any]] = mapped_column(JSON, default=list)
    system_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    messages: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # model ref → [{role, content}, …]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Vote(Base):
    """An arena vote: which of the answers to one prompt was better."""

    __tablename__ = "votes"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str | None] = mapped_column(String(100), default=None)
    prompt: Mapped[str] = mapped_column(Text)
    models: Mapped[list[Any]] = mapped_column(JSON)
    winner: Mapped[str] = mapped_column(String(500))  # a model ref, "tie" or "all bad"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --------------------------------------------------------------------------- corpora, translation, review

REVIEW_STATES = ("unreviewed", "accepted", "edited", "rejected", "flagged")
REVIEWED_STATES = ("accepted", "edited", "rejected", "flagged")


class Corpus(Base):
    """An imported instruction set (or parallel set): its rows hold segments that get translated and reviewed."""

    __tablename__ = "corpora"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    source: Mapped[str] = mapped_column(String(1024))
    format: Mapped[str] = mapped_column(String(20))
    source_lang: Mapped[str] = mapped_column(String(8), default="en")
    licence: Mapped[str | None] = mapped_column(String(100), default=None)
    has_references: Mapped[bool] = mapped_column(Boolean, default=False)
    max_tokens: Mapped[int] = mapped_column(Integer, default=256)
    n_rows: Mapped[int] = mapped_column(Integer, default=0)
    n_segments: Mapped[int] = mapped_column(Integer, default=0)
    n_chars: Mapped[int] = mapped_column(Integer, default=0)
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    n_duplicates: Mapped[int] = mapped_column(Integer, default=0)
    n_problems: Mapped[int] = mapped_column(Integer, default=0)
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # filters.FilterThresholds fields
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id", ondelete="SET NULL"), default=None)
    created_by: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CorpusRow(Base):
    """One record of a corpus (an Alpaca triple, a conversation, a parallel pair), in file order."""

    __tablename__ = "corpus_rows"
    __table_args__ = (UniqueConstraint("corpus_id", "idx", name="uq_corpus_rows_corpus_idx"),
                      Index("ix_corpus_rows_corpus_hash", "corpus_id", "content_hash"))

    id: Mapped[int] = mapped_column(primary_key=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    line: Mapped[int] = mapped_column(Integer)
    shape: Mapped[str] = mapped_column(String(10))
    content_hash: Mapped[str] = mapped_column(String(32))
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)


class Segment(Base):
    """One translatable piece of one field (or turn) of a row; ``sep`` is what followed it in the original."""

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_corpus_id", "corpus_id", "id"),
                      Index("ix_segments_row", "row_id", "field_idx", "part"))

    id: Mapped[int] = mapped_column(primary_key=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"))
    row_id: Mapped[int] = mapped_column(ForeignKey("corpus_rows.id", ondelete="CASCADE"))
    field_idx: Mapped[int] = mapped_column(Integer)
    field_name: Mapped[str] = mapped_column(String(40))
    role: Mapped[str] = mapped_column(String(16))
    part: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(Text)  # with protected spans masked (see hala_core.segment)
    spans: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Text: the whitespace after a piece is unbounded (a 300-newline gap); PostgreSQL enforces VARCHAR lengths
    sep: Mapped[str] = mapped_column(Text, default="")
    verbatim: Mapped[bool] = mapped_column(Boolean, default=False)
    reference: Mapped[str | None] = mapped_column(Text, default=None)
    n_chars: Mapped[int] = mapped_column(Integer, default=0)
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)


class TranslationRun(Base):
    """One translation of a corpus (translator × direction × template); its segments are resumable."""

    __tablename__ = "translation_runs"
    __table_args__ = (UniqueConstraint("corpus_id", "name", name="uq_translation_runs_corpus_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    model_ref: Mapped[str] = mapped_column(String(500))
    model_artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id", ondelete="SET NULL"),
                                                          default=None)
    direction: Mapped[str] = mapped_column(String(8))
    template: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | done
    n_total: Mapped[int] = mapped_column(Integer, default=0)
    double_share: Mapped[float] = mapped_column(Float, default=0.05)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # chrf++ / bleu against references
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Translation(Base):
    """A segment's translation in one run, its filter scores, and its review state (optimistic ``version``)."""

    __tablename__ = "translations"
    __table_args__ = (UniqueConstraint("run_id", "segment_id", name="uq_translations_run_segment"),
                      Index("ix_translations_queue", "run_id", "status", "id"),
                      Index("ix_translations_flagged", "run_id", "status", "passed", "id"),
                      Index("ix_translations_random", "run_id", "status", "order_key"),
                      Index("ix_translations_second", "run_id", "double", "second_status"),
                      Index("ix_translations_claimed", "claimed_by", "run_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("translation_runs.id", ondelete="CASCADE"))
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)
    text: Mapped[str] = mapped_column(Text)  # the machine translation, protected spans restored
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    flags: Mapped[str] = mapped_column(String(200), default="")  # comma-separated filters.FLAGS
    passed: Mapped[bool] = mapped_column(Boolean, default=True)
    order_key: Mapped[int] = mapped_column(Integer, default=0)  # a fixed pseudo-random order (random QA mode)
    status: Mapped[str] = mapped_column(String(16), default="unreviewed")
    final_text: Mapped[str | None] = mapped_column(Text, default=None)  # the reviewed text (edits included)
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
    version: Mapped[int] = mapped_column(Integer, default=0)
    reviewed_by: Mapped[str | None] = mapped_column(String(100), default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(100), default=None)
    claim_expires: Mapped[datetime | None] = mapped_column(default=None)
    double: Mapped[bool] = mapped_column(Boolean, default=False)  # in the double-annotation sample
    second_status: Mapped[str | None] = mapped_column(String(16), default=None)
    second_text: Mapped[str | None] = mapped_column(Text, default=None)
    second_by: Mapped[str | None] = mapped_column(String(100), default=None)
    second_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewEvent(Base):
    """The edit history of a translation: who did what, when, and the text before and after."""

    __tablename__ = "review_events"
    __table_args__ = (Index("ix_review_events_translation", "translation_id", "id"),
                      Index("ix_review_events_run_user", "run_id", "user"))

    id: Mapped[int] = mapped_column(primary_key=True)
    translation_id: Mapped[int] = mapped_column(ForeignKey("translations.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(Integer)
    user: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(16))
    second: Mapped[bool] = mapped_column(Boolean, default=False)  # a double-annotation (second opinion) save
    before: Mapped[str | None] = mapped_column(Text, default=None)
    after: Mapped[str | None] = mapped_column(Text, default=None)
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
    version: Mapped[int] = mapped_column(Integer)  # the version this save produced
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
