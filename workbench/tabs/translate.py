"""Translate: translate an imported corpus with a translator model (a resumable job), follow it live, and compare
the translations of one corpus side by side (chrF++ / BLEU where the corpus has references)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from sqlalchemy import case, func, select

from db.corpora import list_corpora, run_status
from db.models import Corpus, Job, Translation, TranslationRun
from db.queries import job_metrics
from db.session import read_scope
from hala_core.engine import vllm_available
from hala_core.settings import Settings
from hala_core.specs import TranslateSpec, parse_spec
from workbench.auth import LAUNCH_ROLES, REVIEW_ROLES, caller, require
from workbench.executor_ui import executor_picker, with_executor
from workbench.ui import esc, job_error_html, job_header, latest_job, model_choices, progress_html, submit_job

TEMPLATE_HELP = ("**chat**: a teacher-style instruction sent through the model's chat template (for instruction-tuned "
                 "translators such as command-a-translate). **hala-translator**: the one fixed template our own "
                 "translator is fine-tuned on. The template must match how the translator was trained.")
RUN_COLUMNS = ["translation", "translator", "direction", "template", "status", "done / total", "chrF++", "BLEU",
               "flagged %", "reviewed", "updated"]
METRICS = (("segments_per_s", "segments/s"), ("tokens_per_s", "tokens/s"))


def engine_controls(prefix: str, default: str) -> tuple[gr.Radio, list[Any]]:
    """The engine choice (``default`` = transformers/hf, or vllm) and the vLLM options in an accordion. Where vLLM
    is not installed the vLLM choice is not offered and the reason is shown instead (a spec asking for it is
    refused by the precheck too). Returns (engine radio, [tensor parallel, GPU memory, max model len, eager,
    KV cache GiB])."""
    ok, reason = vllm_available()
    engine = gr.Radio([default, "vllm"] if ok else [default], value=default, label="engine",
                      info=None if ok else reason, elem_id=f"{prefix}-engine")
    with gr.Accordion("vLLM options", open=False, visible=ok):
        with gr.Row():
            tp = gr.Number(1, precision=0, label="tensor parallel size (GPUs)", elem_id=f"{prefix}-vllm-tp")
            mem = gr.Number(0.9, label="GPU memory utilization", elem_id=f"{prefix}-vllm-mem")
            max_len = gr.Number(0, precision=0, label="max model len (0 = the model's)", elem_id=f"{prefix}-vllm-len")
            eager = gr.Radio(["auto", "on", "off"], value="auto", label="enforce eager (auto: on on CPU)",
                             elem_id=f"{prefix}-vllm-eager")
            kv = gr.Number(0, label="KV cache GiB (0 = default; CPU: 1)", elem_id=f"{prefix}-vllm-kv")
    return engine, [tp, mem, max_len, eager, kv]


def engine_fields(engine: str | None, tp: float | None = 1, mem: float | None = 0.9, max_len: float | None = 0,
                  eager: str | None = "auto", kv: float | None = 0) -> dict[str, Any]:
    """The spec fields ``engine`` and ``vllm`` from the engine controls (vllm options only with engine vllm)."""
    if engine != "vllm":
        return {"engine": engine} if engine else {}
    return {"engine": "vllm", "vllm": {
        "tensor_parallel_size": int(tp or 1), "gpu_memory_utilization": float(mem or 0.9),
        "max_model_len": int(max_len) if max_len else None,
        "enforce_eager": {"on": True, "off": False}.get(eager or "auto"), "kv_cache_gb": float(kv) if kv else None}}


def corpus_choices(settings: Settings) -> list[tuple[str, str]]:
    with read_scope(settings.db_url) as s:
        rows = list_corpora(s)
    return [(f"{r['corpus']}  ·  {r['rows']:,} rows, {r['segments']:,} segments, {r['language']}"
             + (", with references" if r["references"] == "yes" else ""), r["corpus"]) for r in rows]


def corpus_language(settings: Settings, name: str | None) -> str | None:
    if not name:
        return None
    with read_scope(settings.db_url) as s:
        return s.scalar(select(Corpus.source_lang).where(Corpus.name == name))


def build_spec(corpus: str | None, model: str | None, direction: str, template: str, max_new: float | None,
               temperature: float | None, top_p: float | None, rep: float | None, batch: float | None,
               commit_every: float | None, limit: float | None, name: str | None, engine: str | None = None,
               *vllm_options: Any) -> TranslateSpec:
    data: dict[str, Any] = {**engine_fields(engine, *vllm_options),
        "kind": "translate", "corpus": (corpus or "").strip(), "model": (model or "").strip(),
        "direction": direction, "template": template, "max_new_tokens": int(max_new or 256),
        "temperature": float(temperature or 0.0), "top_p": float(top_p if top_p is not None else 1.0),
        "repetition_penalty": float(rep or 1.0), "batch_size": int(batch or 16),
        "commit_every": int(commit_every or 64)}
    if limit and limit > 0:
        data["limit"] = int(limit)
    if name and name.strip():
        data["name"] = name.strip()
    if not data["corpus"]:
        raise ValueError("choose a corpus to translate (import one in the Corpus tab first)")
    if not data["model"]:
        raise ValueError("choose a translator: a model artifact, a local folder or a hub id")
    spec = parse_spec(data)
    assert isinstance(spec, TranslateSpec)
    return spec


def runs_frame(settings: Settings, corpus: str | None) -> pd.DataFrame:
    """The translations of one corpus, newest first: so translators can be compared on the same set."""
    rows: list[list[Any]] = []
    if corpus:
        with read_scope(settings.db_url) as s:
            counts = {rid: (int(n), int(flagged or 0), int(reviewed or 0)) for rid, n, flagged, reviewed in s.execute(
                select(Translation.run_id, func.count(),
                       func.sum(case((Translation.passed.is_(False), 1), else_=0)),
                       func.sum(case((Translation.status != "unreviewed", 1), else_=0)))
                .join(TranslationRun, TranslationRun.id == Translation.run_id)
                .join(Corpus, Corpus.id == TranslationRun.corpus_id)
                .where(Corpus.name == corpus).group_by(Translation.run_id))}
            q = (select(TranslationRun).join(Corpus, Corpus.id == TranslationRun.corpus_id)
                 .where(Corpus.name == corpus).order_by(TranslationRun.id.desc()))
            for run in s.scalars(q):
                n, flagged, reviewed = counts.get(run.id, (0, 0, 0))
                sc = run.scores or {}
                chrf, bleu = sc.get("chrf++"), sc.get("bleu")
                rows.append([run.name, run.model_ref, run.direction, run.template, run_status(s, run),
                             f"{n:,} / {run.n_total:,}", round(chrf, 2) if chrf is not None else "–",
                             round(bleu, 2) if bleu is not None else "–",
                             round(100 * flagged / n, 1) if n else "–", reviewed,
                             run.updated_at.strftime("%Y-%m-%d %H:%M")])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def metrics_figure(series: dict[str, list[tuple[int, float]]]) -> go.Figure | None:
    """Segments/s (left axis) and tokens/s (right axis) against segments done."""
    if not any(series.get(k) for k, _ in METRICS):
        return None
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for (key, label), right in zip(METRICS, (False, True), strict=True):
        points = series.get(key) or []
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=label, line=dict(dash="dot" if right else "solid")), secondary_y=right)
    fig.update_layout(title="throughput", height=300, margin=dict(l=40, r=40, t=40, b=40),
                      legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(title_text="segments done")
    fig.update_yaxes(title_text="segments/s", secondary_y=False)
    fig.update_yaxes(title_text="tokens/s", secondary_y=True)
    return fig


def job_view(settings: Settings, job: Job | None) -> tuple[str, Any, str]:
    """(header, throughput figure, result or error block) of a translate job."""
    if job is None:
        return "", None, ""
    spec = job.spec or {}
    try:
        label = f"{spec.get('corpus')} → {TranslateSpec(**spec).run_name()}"
    except ValueError:
        label = str(spec.get("corpus", ""))
    head = job_header(job, label)
    with read_scope(settings.db_url) as s:
        fig = metrics_figure(job_metrics(s, job.id))
    extra = job_error_html(job)
    result = job.result or {}
    if not extra and job.status == "succeeded" and result:
        sc = result.get("scores") or {}
        score = (f" · chrF++ <b>{sc['chrf++']:.2f}</b> · BLEU <b>{sc['bleu']:.2f}</b> against the references"
                 if "chrf++" in sc and "bleu" in sc else "")
        extra = (f"<p id='translate-summary'>✅ translation <b>{esc(result.get('translation'))}</b>: "
                 f"{result.get('new_segments', 0):,} new segments in {result.get('seconds', 0)} s, "
                 f"{result.get('done', 0):,}/{result.get('segments', 0):,} done{score}. "
                 "Review it in the Review tab; filters and export are in the Corpus tab.</p>")
    return head, fig, extra


def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    gr.Markdown("Translate an imported corpus segment by segment with a translator model. The job is resumable: run "
                "the same translation again (same name, translator and settings) and only what is missing is "
                "translated. Every output is scored by the quality filters as it is saved.")
    corpora = corpus_choices(settings)
    models = model_choices(settings)
    with gr.Row():
        # custom values: corpora imported after the page was built are valid too (the server checks the name)
        corpus = gr.Dropdown(corpora, value=corpora[0][1] if corpora else None, label="corpus",
                             allow_custom_value=True, elem_id="translate-corpus")
        model = gr.Dropdown(models, value=models[0][1] if models else None, allow_custom_value=True,
                            label="translator (artifact, local folder or hub id)", elem_id="translate-model")
        refresh = gr.Button("↻", scale=0, size="sm")
    with gr.Row():
        direction = gr.Radio(["en-ar", "ar-en"], value="en-ar", label="direction", elem_id="translate-direction")
        template = gr.Radio(["chat", "hala-translator"], value="chat", label="prompt template",
                            elem_id="translate-template")
        name = gr.Textbox(label="translation name (blank = <translator>-<direction>)", elem_id="translate-name")
    gr.Markdown(TEMPLATE_HELP)
    with gr.Row():
        max_new = gr.Number(256, precision=0, label="max new tokens", elem_id="translate-max-new")
        temperature = gr.Number(0.0, label="temperature (0 = greedy)", elem_id="translate-temperature")
        top_p = gr.Number(1.0, label="top-p", elem_id="translate-top-p")
        rep = gr.Number(1.0, label="repetition penalty", elem_id="translate-rep")
        batch = gr.Number(16, precision=0, label="batch size", elem_id="translate-batch")
        commit_every = gr.Number(64, precision=0, label="commit every (segments)", elem_id="translate-commit")
        limit = gr.Number(0, precision=0, label="limit (segments; 0 = all)", elem_id="translate-limit")
    engine, vllm_opts = engine_controls("translate", "transformers")
    where = executor_picker(settings, "translate")
    with gr.Row():
        go_btn = gr.Button("Translate", variant="primary", elem_id="translate-run")
        show = gr.Button("Show spec", elem_id="translate-show-spec")
    spec_box = gr.Code(language="yaml", visible=False, label="spec (hala run translate.yaml --wait)",
                       elem_id="translate-spec")
    head = gr.HTML(elem_id="translate-job")
    result = gr.HTML(elem_id="translate-result")
    plot = gr.Plot(label="throughput", elem_id="translate-metrics")
    gr.Markdown("### Translations of this corpus")
    table = gr.Dataframe(runs_frame(settings, corpora[0][1] if corpora else None), interactive=False,
                         elem_id="translate-runs", max_height=360)

    inputs = [corpus, model, direction, template, max_new, temperature, top_p, rep, batch, commit_every, limit, name,
              engine, *vllm_opts, *where.inputs]
    n_spec = len(inputs) - len(where.inputs)  # the form's own fields; the executor picker's come after them

    def on_show(*vals: Any):  # noqa: ANN202
        try:
            return gr.update(visible=True, value=with_executor(build_spec(*vals[:n_spec]), vals[n_spec:]).to_yaml())
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def on_translate(c: str, m: str, d: str, t: str, mx: float, te: float, tp: float, rp: float, bs: float,
                     ce: float, lim: float, nm: str, eng: str, v_tp: float, v_mem: float, v_len: float, v_eager: str,
                     v_kv: float, ex: str, ex_part: str, ex_nodes: float, ex_gpus: float, ex_cpus: float, ex_mem: str,
                     ex_time: str, ex_sbatch: str, request: gr.Request):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "launching a translation")
        try:
            spec = build_spec(c, m, d, t, mx, te, tp, rp, bs, ce, lim, nm, eng, v_tp, v_mem, v_len, v_eager, v_kv)
            spec = with_executor(spec, (ex, ex_part, ex_nodes, ex_gpus, ex_cpus, ex_mem, ex_time, ex_sbatch))
        except ValueError as e:
            raise gr.Error(str(e)) from None
        job_id = submit_job(settings, spec, who.name, "translation")
        return progress_html("queued", 0, 0, f"job {job_id} → {spec.corpus} → {spec.run_name()}"), ""

    def on_refresh(current: str | None, current_model: str | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing corpora")
        cs = corpus_choices(settings)
        keys = [v for _, v in cs]
        pick = current if current in keys else (keys[0] if keys else None)
        ms = model_choices(settings)
        # keep a custom model (a path or hub id) the user typed
        return (gr.update(choices=cs, value=pick),
                gr.update(choices=ms, value=current_model or (ms[0][1] if ms else None)),
                runs_frame(settings, pick))

    def on_corpus(c: str | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing translations")
        lang = corpus_language(settings, c)
        d = gr.update(value=f"{lang}-{'ar' if lang == 'en' else 'en'}") if lang in ("en", "ar") else gr.update()
        return d, runs_frame(settings, c)

    def on_poll(seen: str | None, c: str | None, request: gr.Request):  # noqa: ANN202
        try:
            who = caller(settings, request)
        except gr.Error:
            return seen, gr.update(), gr.update(), gr.update(), gr.update()
        job = latest_job(settings, "translate", who.name)
        key = f"{job.id}:{job.status}:{job.progress_done}:{job.progress_message}" if job else ""
        if key == seen:  # nothing new: leave the page (and its plot) alone
            return seen, gr.update(), gr.update(), gr.update(), gr.update()
        h, fig, extra = job_view(settings, job)
        return key, h, fig, extra, runs_frame(settings, c)

    def on_open(c: str | None, request: gr.Request):  # noqa: ANN202
        return on_poll("", c, request)

    seen = gr.State("")
    poll_outputs = [seen, head, plot, result, table]
    show.click(on_show, inputs, spec_box, api_visibility="private")
    go_btn.click(on_translate, inputs, [head, result], api_name="translate")
    refresh.click(on_refresh, [corpus, model], [corpus, model, table], api_visibility="private")
    corpus.change(on_corpus, corpus, [direction, table], api_visibility="private")
    tab.select(on_refresh, [corpus, model], [corpus, model, table], api_visibility="private").then(
        on_open, corpus, poll_outputs, api_visibility="private")
    demo.load(on_open, corpus, poll_outputs, api_visibility="private")
    timer = gr.Timer(1.5)
    timer.tick(on_poll, [seen, corpus], poll_outputs, api_visibility="private", show_progress="hidden")
