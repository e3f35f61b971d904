"""Evaluate: models × benchmarks through lm-evaluation-harness (multiple choice) and sacrebleu (translation)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import gradio as gr

from hala_core.settings import Settings
from hala_core.specs import EvalSpec, parse_spec
from workbench.auth import LAUNCH_ROLES, caller, require
from workbench.executor_ui import executor_picker, with_executor
from workbench.tabs.translate import engine_controls, engine_fields
from workbench.ui import esc, job_error_html, job_header, latest_job, model_choices, progress_html, submit_job


def benchmark_choices(settings: Settings) -> list[tuple[str, str]]:
    from hala_core.benchmarks import available_benchmarks

    out = []
    for b in available_benchmarks(settings.home):
        tags = ["offline" if not b.needs_hub else "needs hub"]
        if getattr(b, "stand_in", None):
            tags.append("stand-in")
        if not b.runnable:
            tags.append("cannot run")
        out.append((f"{b.name} — {b.title} ({', '.join(tags)})", b.name))
    return out


def build_spec(models: list[str] | str | None, benches: list[str] | None, fewshot: float, limit: float | None,
               chat: bool, batch: float, engine: str | None = None, *vllm_options: Any) -> EvalSpec:
    if isinstance(models, str):
        models = [models]
    data: dict[str, Any] = {"kind": "eval", **engine_fields(engine, *vllm_options), "models": list(models or []), "benchmarks": list(benches or []),
                            "num_fewshot": int(fewshot or 0), "apply_chat_template": bool(chat),
                            "batch_size": int(batch or 8)}
    if limit:
        data["limit"] = int(limit)
    spec = parse_spec(data)
    assert isinstance(spec, EvalSpec)
    return spec


def job_view(job) -> tuple[str, str]:  # noqa: ANN001
    if job is None:
        return "", ""
    head = job_header(job)
    if job_error_html(job):
        return head, job_error_html(job)
    models = (job.result or {}).get("models") or []
    if not models:
        return head, ""
    benches = sorted({b for m in models for b in (m.get("scores") or {})})
    body = "".join("<tr><td>" + esc(m["model"]) + "</td>" + "".join(
        f"<td>{(m['scores'].get(b) if m['scores'].get(b) is not None else '–')}</td>" for b in benches) + "</tr>"
        for m in models)
    table = ("<table class='hala-report' id='eval-summary'><thead><tr><th>model</th>"
             + "".join(f"<th>{esc(b)}</th>" for b in benches) + f"</tr></thead><tbody>{body}</tbody></table>"
             "<p>Full table, drill-down and comparisons: <b>Leaderboard</b> tab.</p>")
    return head, table


def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    gr.Markdown("Evaluate models on Arabic benchmarks. Multiple-choice sets run through **lm-evaluation-harness** "
                "(the harness and task versions are stored with every score); translation sets (NTREX-128) are "
                "scored with chrF++ and BLEU through the same engine as corpus translation. The six OALL v2 "
                "benchmarks need the Hugging Face hub; `exams_ar` and NTREX run offline.")
    with gr.Row():
        models = gr.Dropdown(model_choices(settings), multiselect=True, allow_custom_value=True,
                             label="models (artifacts, folders or hub ids)", elem_id="eval-models")
        benches = gr.CheckboxGroup(benchmark_choices(settings), value=["exams_ar"], label="benchmarks",
                                   elem_id="eval-benchmarks")
    with gr.Row():
        fewshot = gr.Number(0, precision=0, label="few-shot")
        limit = gr.Number(50, precision=0, label="limit (examples per task; empty = all)", elem_id="eval-limit")
        chat = gr.Checkbox(False, label="apply chat template")
        batch = gr.Number(8, precision=0, label="batch size")
    engine, vllm_opts = engine_controls("eval", "hf")
    where = executor_picker(settings, "evaluate")
    with gr.Row():
        go = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
        show = gr.Button("Show spec")
    spec_box = gr.Code(language="yaml", visible=False, label="spec (hala run eval.yaml --wait)")
    head = gr.HTML(elem_id="eval-job")
    summary = gr.HTML(elem_id="eval-result")
    with gr.Accordion("Add a local multiple-choice benchmark (JSONL / JSON / CSV / TSV)", open=False):
        gr.Markdown("Map the fields: dotted paths for JSON (`question.stem`, `question.choices[].text`, "
                    "`answerKey`), column names for CSV (`question`, choices `A,B,C,D`, `answer`). Answers may be "
                    "letters (A–E or أ–هـ), 0-based indexes or the text of the right choice; 2–5 choices.")
        with gr.Row():
            upload = gr.File(label="file", type="filepath", file_types=[".jsonl", ".json", ".csv", ".tsv"])
            path = gr.Textbox(label="…or a path on the server", placeholder="../shared/data/exams_ar/….jsonl")
        with gr.Row():
            b_name = gr.Textbox(label="benchmark name", elem_id="bench-name")
            q_field = gr.Textbox("question", label="question field")
            c_field = gr.Textbox("choices", label="choices field(s)")
            a_field = gr.Textbox("answer", label="answer field")
            licence = gr.Textbox(label="licence")
        add = gr.Button("Add benchmark")
        add_msg = gr.Markdown(elem_id="bench-message")

    inputs = [models, benches, fewshot, limit, chat, batch, engine, *vllm_opts, *where.inputs]
    n_spec = len(inputs) - len(where.inputs)  # the form's own fields; the executor picker's come after them

    def on_show(*vals):  # noqa: ANN002, ANN202
        try:
            return gr.update(visible=True, value=with_executor(build_spec(*vals[:n_spec]), vals[n_spec:]).to_yaml())
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def on_eval(m, b, f, lim, ch, bs, eng, v_tp, v_mem, v_len, v_eager, v_kv,  # noqa: ANN001, ANN202
                ex, ex_part, ex_nodes, ex_gpus, ex_cpus, ex_mem, ex_time, ex_sbatch, request: gr.Request):
        who = require(settings, request, LAUNCH_ROLES, "launching an evaluation")
        try:
            spec = build_spec(m, b, f, lim, ch, bs, eng, v_tp, v_mem, v_len, v_eager, v_kv)
            spec = with_executor(spec, (ex, ex_part, ex_nodes, ex_gpus, ex_cpus, ex_mem, ex_time, ex_sbatch))
        except ValueError as e:
            raise gr.Error(str(e)) from None
        job_id = submit_job(settings, spec, who.name, "evaluation")
        return progress_html("queued", 0, 0, f"job {job_id}"), ""

    def on_poll(request: gr.Request):  # noqa: ANN202
        try:
            who = caller(settings, request)
        except gr.Error:
            return "", ""
        return job_view(latest_job(settings, "eval", who.name))

    def on_add(file: str | None, server_path: str, name: str, q: str, c: str, a: str, lic: str,
               request: gr.Request):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "adding a benchmark")
        from workbench.cli import register_local_benchmark

        try:
            if file:
                uploads = settings.home / "uploads"
                uploads.mkdir(exist_ok=True)
                src = uploads / Path(file).name
                shutil.copyfile(file, src)
            elif server_path and server_path.strip():
                src = Path(server_path.strip())
            else:
                raise ValueError("give a file (upload) or a path on the server")
            local = register_local_benchmark(settings, (name or "").strip(), str(src), q, c, a,
                                             licence=(lic or None), owner=who.name)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return (f"✅ benchmark **{local.name}**: {local.rows} questions, ready to run offline.",
                gr.update(choices=benchmark_choices(settings)))

    def on_refresh():  # noqa: ANN202
        # choices only: setting the value here would undo a pick the user made while this request ran
        return gr.update(choices=model_choices(settings)), gr.update(choices=benchmark_choices(settings))

    show.click(on_show, inputs, spec_box, api_visibility="private")
    go.click(on_eval, inputs, [head, summary], api_name="evaluate")
    add.click(on_add, [upload, path, b_name, q_field, c_field, a_field, licence], [add_msg, benches],
              api_name="add_benchmark")
    for trigger in (demo.load, tab.select):
        trigger(on_refresh, None, [models, benches], api_visibility="private")
    demo.load(on_poll, None, [head, summary], api_visibility="private")
    timer = gr.Timer(2.0)
    timer.tick(on_poll, None, [head, summary], api_visibility="private", show_progress="hidden")
