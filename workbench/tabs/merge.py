"""Merge: slerp two models with mergekit. The preview follows the slider; "Merge" queues the job."""

from __future__ import annotations

from typing import Any

import gradio as gr

from db.models import Job
from db.session import read_scope
from hala_core.settings import Settings
from hala_core.specs import MergeSpec, parse_spec
from jobs.resolve import resolve_model_ref
from workbench.auth import LAUNCH_ROLES, caller, require
from workbench.ui import (
    job_error_html,
    job_header,
    latest_job,
    model_choices,
    progress_html,
    samples_html,
    submit_job,
)


def parse_gradient(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.replace(";", ",").replace(" ", ",").split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"gradient {text!r}: give numbers between 0 and 1 separated by commas, e.g. 0, 0.5, 1") \
            from None
    if not values:
        raise ValueError("gradient is empty: give numbers between 0 and 1 separated by commas, e.g. 0, 0.5, 1")
    return values


def build_spec(base: str, model: str, t_mode: str, t: float, gradient: str, dtype: str,
               output: str) -> MergeSpec:
    t_value: Any = parse_gradient(gradient) if t_mode == "per-layer gradient" else float(t)
    spec = parse_spec({"kind": "merge", "base_model": (base or "").strip(), "model": (model or "").strip(),
                       "t": t_value, "dtype": dtype, "output": (output or "").strip() or "unnamed-merge"})
    assert isinstance(spec, MergeSpec)
    return spec


def compute_preview(settings: Settings, spec: MergeSpec) -> tuple[str, Any, Any, str]:
    from hala_core import merge

    with read_scope(settings.db_url) as s:
        _, _, info_a, info_b = merge.validate_merge(spec, lambda ref: resolve_model_ref(s, settings, ref))
    p = merge.preview(spec, info_a, info_b)
    note = (f"✅ compatible: {info_a.architecture}, {info_a.num_layers} layers, "
            f"{info_a.parameters:,} parameters each.")
    return p["yaml"], merge.t_figure(p["layer_t"]), merge.similarity_figure(p["similarity"]), note


def merge_status(job: Job | None) -> tuple[str, str]:
    if job is None:
        return "", ""
    head = job_header(job, str(job.spec.get("output")))
    samples = (job.result or {}).get("samples") or []
    table = samples_html(samples, (("prompt", "Prompt"), ("a", f"A: {job.spec.get('base_model')}"),
                                   ("b", f"B: {job.spec.get('model')}"), ("merge", f"Merge: {job.spec.get('output')}")))
    if job.status == "succeeded" and samples:
        table = ("<p><b>Sample generations</b> (greedy; demo models have random weights, so the text is "
                 "nonsense — compare mechanics, not fluency)</p>" + table)
    if job_error_html(job):
        table = job_error_html(job)
    return head, table


def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    choices = model_choices(settings)
    default_a = choices[0][1] if choices else None
    default_b = choices[1][1] if len(choices) > 1 else default_a
    gr.Markdown("Slerp-merge model **A** (t = 0) with model **B** (t = 1). Pick artifacts, or type a local "
                "folder or a hub id. The preview updates as you move the slider.")
    with gr.Row():
        base = gr.Dropdown(choices, value=default_a, label="Model A — base (t = 0)", allow_custom_value=True,
                           elem_id="merge-base")
        other = gr.Dropdown(choices, value=default_b, label="Model B (t = 1)", allow_custom_value=True,
                            elem_id="merge-model")
        refresh = gr.Button("↻ models", scale=0)
    with gr.Row():
        t_mode = gr.Radio(["single t", "per-layer gradient"], value="single t", label="t", elem_id="merge-t-mode")
        t = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="slerp t", elem_id="merge-t")
        gradient = gr.Textbox("0, 0.5, 1", label="per-layer gradient (interpolated across layers)",
                              visible=False, elem_id="merge-gradient")
    with gr.Row():
        dtype = gr.Dropdown(["float32", "bfloat16", "float16"], value="float32", label="dtype")
        output = gr.Textbox("my-merge", label="output name", elem_id="merge-output")
    note = gr.Markdown(elem_id="merge-note")
    with gr.Row():
        t_plot = gr.Plot(label="t per layer", elem_id="merge-t-plot")
        sim_plot = gr.Plot(label="A vs B per layer", elem_id="merge-sim-plot")
    yaml_box = gr.Code(label="mergekit YAML that will run", language="yaml", elem_id="merge-yaml")
    with gr.Row():
        go = gr.Button("Merge", variant="primary", elem_id="merge-run")
        show_spec = gr.Button("Show spec", elem_id="merge-show-spec")
    spec_box = gr.Code(label="spec (hala run spec.yaml --wait)", language="yaml", visible=False)
    job_head = gr.HTML(elem_id="merge-job")
    job_samples = gr.HTML(elem_id="merge-samples")

    inputs = [base, other, t_mode, t, gradient, dtype, output]

    def on_preview(a: str, b: str, mode: str, tv: float, grad: str, dt: str, out: str):  # noqa: ANN202
        try:
            spec = build_spec(a, b, mode, tv, grad, dt, out)
            return compute_preview(settings, spec)
        except ValueError as e:
            return "", None, None, f"⚠️ {e}"

    def on_mode(mode: str):  # noqa: ANN202
        grad = mode == "per-layer gradient"
        return gr.update(visible=not grad), gr.update(visible=grad)

    def on_show(a: str, b: str, mode: str, tv: float, grad: str, dt: str, out: str):  # noqa: ANN202
        try:
            spec = build_spec(a, b, mode, tv, grad, dt, out)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return gr.update(visible=True, value=spec.to_yaml())

    def on_merge(a: str, b: str, mode: str, tv: float, grad: str, dt: str, out: str,
                 request: gr.Request):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "launching a merge")
        try:
            spec = build_spec(a, b, mode, tv, grad, dt, out)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        job_id = submit_job(settings, spec, who.name, "merge")
        return progress_html("queued", 0, 0, f"job {job_id} → {spec.output}"), ""

    def on_refresh(a: str | None, b: str | None):  # noqa: ANN202
        c = model_choices(settings)
        names = [v for _, v in c]
        a = a or (names[0] if names else None)
        b = b or (names[1] if len(names) > 1 else a)
        return gr.update(choices=c, value=a), gr.update(choices=c, value=b)

    def on_poll(request: gr.Request):  # noqa: ANN202
        try:
            who = caller(settings, request)
        except gr.Error:
            return "", ""
        return merge_status(latest_job(settings, "merge", who.name))

    t_mode.change(on_mode, t_mode, [t, gradient], api_visibility="private")
    for comp in (base, other, t_mode, t, gradient, dtype):
        comp.change(on_preview, inputs, [yaml_box, t_plot, sim_plot, note], api_visibility="private",
                    show_progress="hidden", trigger_mode="always_last")
    refresh.click(on_refresh, [base, other], [base, other], api_visibility="private")
    show_spec.click(on_show, inputs, spec_box, api_visibility="private")
    go.click(on_merge, inputs, [job_head, job_samples], api_name="merge")
    for trigger in (demo.load, tab.select):  # new models may have appeared since the page was built
        trigger(on_refresh, [base, other], [base, other], api_visibility="private").then(
            on_preview, inputs, [yaml_box, t_plot, sim_plot, note], api_visibility="private")
    demo.load(on_poll, outputs=[job_head, job_samples], api_visibility="private")
    timer = gr.Timer(1.5)
    timer.tick(on_poll, outputs=[job_head, job_samples], api_visibility="private", show_progress="hidden")
