"""Home: where the workspace is, whether a worker runs, and the one-click offline start (demo models)."""

from __future__ import annotations

import gradio as gr
from sqlalchemy import select

from db.artifacts import list_artifacts
from db.models import Job
from db.session import read_scope, session_scope
from hala_core.demo_models import DEMO_LABEL
from hala_core.settings import Settings
from hala_core.specs import DemoModelsSpec
from jobs.queue import enqueue
from jobs.worker import live_worker
from workbench.auth import LAUNCH_ROLES, require
from workbench.ui import progress_html

SAMPLE_DATA = {
    "alpaca_5000": "English instructions (Alpaca, CC BY-NC 4.0)",
    "ntrex128_en_ar": "EN/AR parallel news with professional references (NTREX-128, CC BY-SA 4.0)",
    "exams_ar": "Arabic exam questions (EXAMS, CC BY-SA 4.0)",
}


def status_markdown(settings: Settings) -> str:
    w = live_worker(settings)
    worker = (f"✅ worker `{w.id}` (pid {w.pid}, up to {w.max_jobs} job(s) at once)" if w else
              "⚠️ **no worker is running**: queued jobs wait. Start one with `hala worker`.")
    with read_scope(settings.db_url) as s:
        models = list_artifacts(s, "model")
    demo = [m.name for m in models if (m.meta or {}).get("demo")]
    lines = [f"**Workspace** `{settings.home}` · **database** `{settings.db_url}`", "", worker, "",
             f"**Models**: {len(models)}" + (f" (demo, {DEMO_LABEL}: {', '.join(demo)})" if demo else "")]
    if not models:
        lines += ["", "This workspace has no models yet. No model hub is needed to try it: **Build demo models** "
                  "makes two tiny LFM2 models with *random weights* (they write nonsense; they exist to try "
                  "merging, runs and lineage offline). Real models: give a hub id such as `LiquidAI/LFM2-350M` "
                  "or a local folder wherever a model is asked for."]
    if settings.data_dir:
        found = [f"- `{name}`: {desc}" for name, desc in SAMPLE_DATA.items() if (settings.data_dir / name).exists()]
        if found:
            lines += ["", f"**Sample data** in `{settings.data_dir}` (readable by jobs):", *found]
    return "\n".join(lines)


def latest_demo_job(settings: Settings) -> str:
    with read_scope(settings.db_url) as s:
        job = s.scalar(select(Job).where(Job.kind == "demo_models").order_by(Job.id.desc()).limit(1))
        if job is None:
            return ""
        return progress_html(job.status, job.progress_done, job.progress_total,
                             f"job {job.id}: {job.progress_message or job.error or ''}")


def build(demo: gr.Blocks, settings: Settings) -> None:
    status = gr.Markdown(status_markdown(settings), elem_id="home-status")
    with gr.Row():
        build_btn = gr.Button("Build demo models (random weights, offline)", variant="primary",
                              elem_id="build-demo-models")
        samples_btn = gr.Button("Import the sample data (Alpaca 500 + NTREX 200 as corpora)",
                                visible=settings.data_dir is not None, elem_id="home-import-samples")
    progress = gr.HTML(latest_demo_job(settings), elem_id="demo-progress")
    samples_msg = gr.Markdown(elem_id="home-samples-message")

    def on_build(request: gr.Request) -> str:
        who = require(settings, request, LAUNCH_ROLES, "building demo models")
        with session_scope(settings.db_url) as s:
            job = enqueue(s, DemoModelsSpec(), owner=who.name)
            job_id = job.id
        gr.Info(f"queued job {job_id}: building the demo models")
        return progress_html("queued", 0, 0, f"job {job_id}")

    def on_samples(request: gr.Request) -> str:
        from workbench.tabs.corpus import sample_action

        who = require(settings, request, LAUNCH_ROLES, "importing the sample data")
        return sample_action(settings, who.name)

    build_btn.click(on_build, outputs=progress, api_name="build_demo_models")
    samples_btn.click(on_samples, outputs=samples_msg, api_visibility="private")
    timer = gr.Timer(2.0)
    timer.tick(lambda: (status_markdown(settings), latest_demo_job(settings)), outputs=[status, progress],
               api_visibility="private", show_progress="hidden")
