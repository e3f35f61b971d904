"""Runs: every job with filters, live status, progress, log tail, metrics, artifacts and lineage,
and cancel / retry / clone-with-edits. The open job is remembered by the browser, so a refresh re-attaches."""

from __future__ import annotations

from typing import Any

import gradio as gr
import plotly.graph_objects as go

from db.models import JOB_STATES
from db.queries import job_metrics, job_owners, job_summary, jobs_table
from db.session import read_scope, session_scope
from hala_core.registry import STEPS
from hala_core.settings import Settings
from jobs import queue
from jobs.logs import read_log_tail
from workbench.auth import ADMIN_ROLES, LAUNCH_ROLES, REVIEW_ROLES, Caller, require
from workbench.executor_ui import build_executor_settings
from workbench.ui import bidi, esc, kv_table, progress_html

COLUMNS = ["id", "kind", "status", "where", "owner", "progress", "output", "created", "duration_s"]


def table_rows(settings: Settings, kind: str, status: str, owner: str) -> list[list[Any]]:
    with read_scope(settings.db_url) as s:
        rows = jobs_table(s, kind=kind or None, status=status or None, owner=owner or None)
    return [[r["id"], r["kind"], r["status"], r["where"], r["owner"], r["progress"], r["name"], r["created"],
             r["duration_s"]] for r in rows]


def metrics_figure(series: dict[str, list[tuple[int, float]]]) -> go.Figure | None:
    if not series:
        return None
    fig = go.Figure()
    for key, points in series.items():
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=key))
    fig.update_layout(title="metrics", xaxis_title="step", yaxis_title="value", height=320,
                      margin=dict(l=40, r=10, t=40, b=40))
    return fig


def artifacts_html(artifacts: list[dict[str, Any]]) -> str:
    if not artifacts:
        return "<i>no artifacts yet</i>"
    parts = []
    for a in artifacts:
        meta = a.get("metadata") or {}
        label = f' <span class="demo-label">{esc(meta["label"])}</span>' if meta.get("label") else ""
        chain = " ← ".join(f"{esc(x['name'])} ({esc(x['kind'])}{', job ' + str(x['job_id']) if x['job_id'] else ''})"
                           for x in a.get("lineage", []))
        parts.append(f'<div class="hala-artifact" data-name="{esc(a["name"])}"><b>{esc(a["kind"])}</b> '
                     f'<code>{esc(a["name"])}</code>{label}<br><small>{esc(a["path"])}</small>'
                     + (f"<br>made from: {chain}" if chain else "")
                     + (f"<br>licence: {esc(meta['licence'])}" if meta.get("licence") else "") + "</div>")
    return "".join(parts)


def detail_view(settings: Settings, job_id: int | None) -> tuple[str, str, Any, str, str, str]:
    if not job_id:
        return "<i>select a job in the table, or type its number</i>", "", None, "", "", ""
    with read_scope(settings.db_url) as s:
        try:
            info = job_summary(s, int(job_id), with_spec=True)
        except ValueError as e:
            return f"<b>{esc(e)}</b>", "", None, "", "", ""
        series = job_metrics(s, int(job_id))
    head = progress_html(info["status"], info["progress_done"], info["progress_total"],
                         f"job {info['id']} · {info['kind']} · {info['progress_message'] or ''}")
    facts = kv_table([("owner", info["owner"]), ("attempt", info["attempt"]), ("created", info["created"]),
                      ("started", info["started"]), ("finished", info["finished"]),
                      ("duration (s)", info["duration_s"]), ("worker", info["worker"]),
                      ("runs on", info["where"]), ("process", info["handle"]), ("exit code", info["exit_code"]),
                      ("cancel requested", "yes" if info["cancel_requested"] else ""),
                      ("retry/clone of job", info["parent_id"]), ("log", info["log_path"])])
    if info["error"]:
        facts += f"<p><b>error</b></p>{bidi(info['error'][-3000:], 'pre')}"
    import yaml

    spec_yaml = yaml.safe_dump(info["spec"], sort_keys=False, allow_unicode=True)
    return (head, facts, metrics_figure(series), read_log_tail(info["log_path"], 60),
            artifacts_html(info["artifacts"]), spec_yaml)


def _own_or_admin(settings: Settings, who: Caller, job_id: int) -> None:
    with read_scope(settings.db_url) as s:
        owner = queue.get_job(s, job_id).owner
    if who.role != "admin" and owner and who.name != owner:
        raise gr.Error(f"job {job_id} belongs to {owner}; only its owner or an admin may cancel it")


def build(demo: gr.Blocks, settings: Settings, secret: str) -> None:
    remembered = gr.BrowserState(None, storage_key="hala-runs-open-job", secret=secret)
    with gr.Row():
        f_kind = gr.Dropdown([""] + sorted(STEPS), value="", label="kind", elem_id="runs-kind")
        f_status = gr.Dropdown([""] + list(JOB_STATES), value="", label="status", elem_id="runs-status")
        f_owner = gr.Dropdown([""], value="", label="owner", allow_custom_value=True, elem_id="runs-owner")
    table = gr.Dataframe(headers=COLUMNS, value=table_rows(settings, "", "", ""), interactive=False,
                         elem_id="runs-table", max_height=320)
    with gr.Row():
        job_id = gr.Number(label="open job #", precision=0, elem_id="runs-job-id", minimum=0)
        open_btn = gr.Button("Open", scale=0, elem_id="runs-open")
        cancel_btn = gr.Button("Cancel", variant="stop", scale=0, elem_id="runs-cancel")
        retry_btn = gr.Button("Retry", scale=0, elem_id="runs-retry")
    head = gr.HTML(elem_id="runs-head")
    with gr.Row():
        with gr.Column():
            facts = gr.HTML(elem_id="runs-facts")
            arts = gr.HTML(elem_id="runs-artifacts")
        plot = gr.Plot(label="metrics", elem_id="runs-metrics")
    log_box = gr.Textbox(label="log (tail)", lines=14, max_lines=14, autoscroll=True, elem_id="runs-log")
    with gr.Accordion("Spec — clone with edits, or repeat from the CLI", open=False):
        spec_box = gr.Code(language="yaml", interactive=True, label="spec (edit, then Clone)", elem_id="runs-spec")
        gr.Markdown("Save it as `spec.yaml` and run `hala run spec.yaml --wait` to repeat this job from a shell.")
        clone_btn = gr.Button("Clone with these edits", elem_id="runs-clone")
    message = gr.Markdown(elem_id="runs-message")

    detail_out = [head, facts, plot, log_box, arts, spec_box]
    live_out = [head, facts, plot, log_box, arts]

    def open_job(jid: float | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing runs")
        jid = int(jid) if jid else None
        return (*detail_view(settings, jid), jid)

    def on_select(evt: gr.SelectData, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing runs")
        row = evt.row_value if evt.row_value else None
        jid = int(row[0]) if row else None
        return (jid, *detail_view(settings, jid), jid)

    def on_load(request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing runs")
        with read_scope(settings.db_url) as s:
            return gr.update(choices=[""] + job_owners(s))

    def on_remembered(saved: Any, current: float | None, request: gr.Request):  # noqa: ANN202
        # the browser restored the job that was open before a refresh (or we just stored a new one)
        require(settings, request, REVIEW_ROLES, "viewing runs")
        jid = int(saved) if saved else None
        if jid is None or (current and int(current) == jid):
            return (gr.update(), *(gr.update() for _ in detail_out))
        return (jid, *detail_view(settings, jid))

    def on_tick(kind: str, status: str, owner: str, jid: float | None):  # noqa: ANN202
        rows = table_rows(settings, kind, status, owner)
        h, f, p, lg, a, _ = detail_view(settings, int(jid) if jid else None)
        return rows, h, f, p, lg, a

    def on_cancel(jid: float | None, request: gr.Request) -> str:
        who = require(settings, request, LAUNCH_ROLES, "cancelling a job")
        if not jid:
            raise gr.Error("open a job first")
        _own_or_admin(settings, who, int(jid))
        try:
            with session_scope(settings.db_url) as s:
                return f"job {int(jid)}: {queue.request_cancel(s, int(jid))}"
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def on_retry(jid: float | None, request: gr.Request):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "retrying a job")
        if not jid:
            raise gr.Error("open a job first")
        try:
            with session_scope(settings.db_url) as s:
                new = queue.retry(s, int(jid), owner=who.name).id
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return f"queued job {new} (retry of {int(jid)})", new, *detail_view(settings, new), new

    def on_clone(jid: float | None, spec_text: str, request: gr.Request):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "cloning a job")
        if not jid:
            raise gr.Error("open a job first")
        from jobs.precheck import precheck

        try:
            with read_scope(settings.db_url) as s:  # checks may be slow: no write lock meanwhile
                spec = precheck(s, settings, spec_text)
            with session_scope(settings.db_url) as s:
                old = queue.get_job(s, int(jid))
                if spec.kind != old.kind:  # type: ignore[attr-defined]
                    raise ValueError(f"a clone keeps the kind {old.kind}; start a {spec.kind} job from its tab")  # type: ignore[attr-defined]
                new = queue.enqueue(s, spec, owner=who.name, parent_id=old.id).id
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return f"queued job {new} (clone of {int(jid)})", new, *detail_view(settings, new), new

    demo.load(on_load, None, f_owner, api_visibility="private")
    remembered.change(on_remembered, [remembered, job_id], [job_id, *detail_out], api_visibility="private")
    table.select(on_select, None, [job_id, *detail_out, remembered], api_visibility="private")
    open_btn.click(open_job, job_id, [*detail_out, remembered], api_visibility="private")
    job_id.submit(open_job, job_id, [*detail_out, remembered], api_visibility="private")
    cancel_btn.click(on_cancel, job_id, message, api_name="cancel_job")
    retry_btn.click(on_retry, job_id, [message, job_id, *detail_out, remembered], api_name="retry_job")
    clone_btn.click(on_clone, [job_id, spec_box], [message, job_id, *detail_out, remembered], api_name="clone_job")
    for f in (f_kind, f_status, f_owner):
        f.change(lambda k, st, o: table_rows(settings, k, st, o), [f_kind, f_status, f_owner], table,
                 api_visibility="private")
    on_open_executors, executor_fields, executor_msg = build_executor_settings(
        settings, lambda request: require(settings, request, ADMIN_ROLES, "changing executor settings"))
    demo.load(on_open_executors, None, [*executor_fields, executor_msg], api_visibility="private")
    timer = gr.Timer(2.0)
    timer.tick(on_tick, [f_kind, f_status, f_owner, job_id], [table, *live_out], api_visibility="private",
               show_progress="hidden")
