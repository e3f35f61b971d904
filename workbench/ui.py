"""Small rendering helpers shared by the tabs. Model output is always escaped: shown as text, never run."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
from sqlalchemy import select

from db.artifacts import list_artifacts
from db.models import Job
from db.session import read_scope, session_scope
from hala_core.settings import Settings

STATUS_ICON = {"queued": "⏳", "claimed": "📥", "running": "▶️", "succeeded": "✅", "failed": "❌",
               "cancelled": "⏹️", "interrupted": "⚠️"}


def esc(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def bidi(text: Any, tag: str = "div", cls: str = "") -> str:
    """Text whose direction follows its content: Arabic right-to-left, Latin left-to-right."""
    return f'<{tag} dir="auto" class="bidi {cls}">{esc(text)}</{tag}>'


def progress_html(status: str, done: int, total: int, message: str | None = None) -> str:
    pct = (100.0 * done / total) if total else (100.0 if status == "succeeded" else 0.0)
    label = f"{done}/{total}" if total else ""
    return (f'<div class="hala-progress" data-status="{esc(status)}">'
            f'<div class="hala-progress-label">{STATUS_ICON.get(status, "")} {esc(status)} {esc(label)} '
            f'{esc(message or "")}</div>'
            f'<div class="hala-progress-track"><div class="hala-progress-bar" style="width:{pct:.1f}%"></div></div>'
            "</div>")


def samples_html(samples: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> str:
    """A side-by-side table of generations: one row per prompt, one column per model."""
    if not samples:
        return ""
    head = "".join(f"<th>{esc(title)}</th>" for _, title in columns)
    rows = []
    for s in samples:
        rows.append("<tr>" + "".join(f'<td dir="auto" class="bidi">{esc(s.get(key, ""))}</td>'
                                     for key, _ in columns) + "</tr>")
    return f'<table class="hala-samples"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td dir=\"auto\">{esc(v)}</td></tr>" for k, v in rows if v not in (None, ""))
    return f'<table class="hala-kv">{body}</table>'


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    """Model artifacts for a dropdown: (label, name); demo models say they have random weights."""
    with read_scope(settings.db_url) as s:
        arts = list_artifacts(s, "model")
    return [(f"{a.name}  ·  random weights (demo)" if (a.meta or {}).get("demo") else a.name, a.name)
            for a in arts]


def latest_job(settings: Settings, kind: str, owner: str | None) -> Job | None:
    """The caller's newest job of a kind: what a tab shows after a refresh (the db remembers, not the page)."""
    with read_scope(settings.db_url) as s:
        q = select(Job).where(Job.kind == kind).order_by(Job.id.desc()).limit(1)
        if owner:
            q = q.where(Job.owner == owner)
        return s.scalar(q)


def submit_job(settings: Settings, spec: Any, owner: str | None, what: str) -> int:
    """Check a spec and what it points at, then queue it; bad input becomes a clear error in the browser.

    The checks run in a read-only session (some are slow: model headers, benchmark files), so nobody else
    waits for SQLite's write lock meanwhile; the queueing itself is one short write."""
    from jobs.precheck import precheck
    from jobs.queue import enqueue

    try:
        with read_scope(settings.db_url) as s:
            precheck(s, settings, spec)
        with session_scope(settings.db_url) as s:
            job_id = enqueue(s, spec, owner=owner).id
    except ValueError as e:
        raise gr.Error(str(e)) from None
    gr.Info(f"queued {what} job {job_id}")
    return job_id


def job_header(job: Job, label: str = "") -> str:
    """A job's progress bar with its current step (or the first line of its error)."""
    msg = job.progress_message or (job.error.splitlines()[0] if job.error else "")
    return progress_html(job.status, job.progress_done, job.progress_total,
                         f"job {job.id}{' → ' + label if label else ''}: {msg}")


def job_error_html(job: Job) -> str:
    """The tail of a failed, interrupted or cancelled job's error, or "" for any other job."""
    if job.status in ("failed", "interrupted", "cancelled") and job.error:
        return f"<pre class='bidi'>{esc(job.error[-2000:])}</pre>"
    return ""
