"""Quantize: compress a model with llm-compressor (FP8_DYNAMIC, W8A8, W4A16) and read its validation report."""

from __future__ import annotations

from typing import Any

import gradio as gr

from db.artifacts import list_artifacts
from db.models import Job
from db.queries import finished_results
from db.session import read_scope
from hala_core.settings import Settings
from hala_core.specs import QUANT_SCHEMES, QuantizeSpec, parse_spec
from workbench.auth import LAUNCH_ROLES, caller, require
from workbench.ui import esc, job_error_html, job_header, latest_job, model_choices, progress_html, submit_job

SCHEME_HELP = {
    "FP8_DYNAMIC": "per-channel FP8 weights, dynamic per-token FP8 activations; no calibration data (the report's choice)",
    "W8A8": "INT8 weights and activations; needs calibration text",
    "W4A16": "4-bit weights (GPTQ), 16-bit activations; needs calibration text; hidden size must be a multiple of the group size",
}


def dataset_choices(settings: Settings) -> list[str]:
    """Dataset artifacts, then the sample files that hold text (NTREX English, Alpaca)."""
    with read_scope(settings.db_url) as s:
        names = [a.name for a in list_artifacts(s, "dataset")]
    if settings.data_dir:
        for rel in ("ntrex128_en_ar/newstest2019-src.eng.txt", "alpaca_5000/alpaca_5000.json"):
            if (settings.data_dir / rel).exists():
                names.append(str(settings.data_dir / rel))
    return names


def build_spec(model: str, scheme: str, ignore: str, group_size: float, calib: str, samples: float,
               seq_len: float, output: str, device: str, offload: bool, prompts: float, ppl_texts: float,
               pairs: float, direction: str, template: str, max_new: float, tput_prompts: float) -> QuantizeSpec:
    data: dict[str, Any] = {
        "kind": "quantize", "model": (model or "").strip(), "scheme": scheme,
        "ignore": [x.strip() for x in (ignore or "").split(",") if x.strip()],
        "group_size": int(group_size or 128), "output": (output or "").strip(), "device": device,
        "offload": bool(offload),
        "validation": {"prompts": int(prompts), "ppl_texts": int(ppl_texts), "translation_pairs": int(pairs),
                       "direction": direction, "template": template, "max_new_tokens": int(max_new),
                       "throughput_prompts": int(tput_prompts)},
    }
    if scheme != "FP8_DYNAMIC":
        data["calibration"] = {"dataset": (calib or "").strip(), "num_samples": int(samples),
                               "max_seq_length": int(seq_len)}
    spec = parse_spec(data)
    assert isinstance(spec, QuantizeSpec)
    return spec


def report_view(job: Job | None) -> tuple[str, str, Any, Any]:
    if job is None:
        return "", "", None, None
    head = job_header(job, f"{job.spec.get('output')} ({job.spec.get('scheme')})")
    if job_error_html(job):
        return head, job_error_html(job), None, None
    report = (job.result or {}).get("report")
    if job.status != "succeeded" or not report:
        return head, "", None, None
    from hala_core.quantize import report_figures, report_table

    rows = "".join(f"<tr><th>{esc(m)}</th><td>{esc(a)}</td><td>{esc(b)}</td></tr>" for m, a, b in report_table(report))
    notes = "".join(f"<p class='hala-note'>⚠️ {esc(n)}</p>" for n in report.get("notes", []))
    table = (f"<table class='hala-report' id='quant-report-table'><thead><tr><th>metric</th><th>original</th>"
             f"<th>quantized</th></tr></thead><tbody>{rows}</tbody></table>{notes}")
    figs = report_figures(report)
    return head, table, figs[0] if figs else None, figs[1] if len(figs) > 1 else None


def comparison(settings: Settings, source: str | None) -> tuple[list[list[Any]], Any]:
    from hala_core.quantize import comparison_figure, comparison_rows

    with read_scope(settings.db_url) as s:
        done = [r for r in finished_results(s, "quantize") if not source or r["spec"].get("model") == source]
    reports = [dict(r["result"].get("report") or {}, output=r["spec"].get("output"), scheme=r["spec"].get("scheme"),
                    job=r["id"]) for r in done if r["result"].get("report")]
    rows = comparison_rows(reports)
    cols = list(rows[0]) if rows else []
    return [[row[c] for c in cols] for row in rows], comparison_figure(rows) if rows else None


def source_choices(settings: Settings) -> list[str]:
    with read_scope(settings.db_url) as s:
        return sorted({r["spec"].get("model") for r in finished_results(s, "quantize") if r["spec"].get("model")})


def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    gr.Markdown("Compress a model with **llm-compressor** (`oneshot`, saved as compressed-tensors) and validate it "
                "against the original in the same job: size, next-token agreement, perplexity, chrF++/BLEU on a "
                "reference set (NTREX-128 by default) and throughput, side by side.")
    choices = model_choices(settings)
    with gr.Row():
        model = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="source model",
                            allow_custom_value=True, elem_id="quant-model")
        scheme = gr.Radio(list(QUANT_SCHEMES), value="FP8_DYNAMIC", label="scheme", elem_id="quant-scheme")
        output = gr.Textbox("my-model-fp8", label="output name", elem_id="quant-output")
    scheme_help = gr.Markdown(SCHEME_HELP["FP8_DYNAMIC"])
    with gr.Row():
        ignore = gr.Textbox("lm_head", label="ignore (comma-separated module names or re: patterns)")
        group_size = gr.Number(128, precision=0, label="W4A16 group size")
        device = gr.Radio(["auto", "cpu", "cuda"], value="auto", label="runs on")
        offload = gr.Checkbox(False, label="device map + CPU offload (large models)")
    with gr.Group(visible=False) as calib_group:
        with gr.Row():
            calib = gr.Dropdown(dataset_choices(settings), label="calibration dataset (artifact or file with text)",
                                allow_custom_value=True, elem_id="quant-calib")
            samples = gr.Number(64, precision=0, label="samples")
            seq_len = gr.Number(512, precision=0, label="sequence length")
    with gr.Accordion("Validation report settings", open=False):
        with gr.Row():
            prompts = gr.Number(64, precision=0, label="agreement prompts")
            ppl_texts = gr.Number(32, precision=0, label="perplexity texts")
            pairs = gr.Number(16, precision=0, label="translation pairs (NTREX)")
            tput_prompts = gr.Number(16, precision=0, label="throughput prompts")
        with gr.Row():
            direction = gr.Radio(["en-ar", "ar-en"], value="en-ar", label="direction")
            template = gr.Radio(["chat", "hala-translator"], value="chat", label="prompt template")
            max_new = gr.Number(48, precision=0, label="max new tokens")
    with gr.Row():
        go = gr.Button("Quantize", variant="primary", elem_id="quant-run")
        show = gr.Button("Show spec")
    spec_box = gr.Code(language="yaml", visible=False, label="spec (hala run quantize.yaml --wait)")
    head = gr.HTML(elem_id="quant-job")
    report = gr.HTML(elem_id="quant-report")
    with gr.Row():
        fig1 = gr.Plot(label="original vs quantized", elem_id="quant-fig-quality")
        fig2 = gr.Plot(label="size and speed", elem_id="quant-fig-size")
    with gr.Accordion("Compare the quantized variants of one source", open=False):
        cmp_source = gr.Dropdown([], label="source model", allow_custom_value=True, elem_id="quant-cmp-source")
        cmp_table = gr.Dataframe(interactive=False, elem_id="quant-cmp-table")
        cmp_fig = gr.Plot(label="variants")

    inputs = [model, scheme, ignore, group_size, calib, samples, seq_len, output, device, offload, prompts,
              ppl_texts, pairs, direction, template, max_new, tput_prompts]

    def on_scheme(s: str):  # noqa: ANN202
        return gr.update(visible=s != "FP8_DYNAMIC"), SCHEME_HELP.get(s, "")

    def on_show(*vals):  # noqa: ANN002, ANN202
        try:
            return gr.update(visible=True, value=build_spec(*vals).to_yaml())
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def on_quantize(m: str, sc: str, ig: str, gs: float, ca: str, sa: float, sl: float, out: str, dev: str,
                    off: bool, pr: float, pp: float, pa: float, di: str, te: str, mx: float, tp: float,
                    request: gr.Request):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "launching a quantization")
        try:
            spec = build_spec(m, sc, ig, gs, ca, sa, sl, out, dev, off, pr, pp, pa, di, te, mx, tp)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        job_id = submit_job(settings, spec, who.name, "quantize")
        return progress_html("queued", 0, 0, f"job {job_id} → {spec.output}"), "", None, None

    def on_poll(seen: str | None, request: gr.Request):  # noqa: ANN202
        try:
            who = caller(settings, request)
        except gr.Error:
            return seen, "", "", None, None
        job = latest_job(settings, "quantize", who.name)
        key = f"{job.id}:{job.status}:{job.progress_done}:{job.progress_message}" if job else ""
        if key == seen:  # nothing new: leave the page (and its plots) as they are
            return seen, gr.update(), gr.update(), gr.update(), gr.update()
        return key, *report_view(job)

    def on_refresh(current: str | None):  # noqa: ANN202
        c = model_choices(settings)
        value = current or (c[0][1] if c else None)
        return (gr.update(choices=c, value=value), gr.update(choices=dataset_choices(settings)),
                gr.update(choices=source_choices(settings)))

    def on_compare(src: str | None, request: gr.Request):  # noqa: ANN202
        caller(settings, request)
        rows, fig = comparison(settings, src or None)
        return rows, fig

    scheme.change(on_scheme, scheme, [calib_group, scheme_help], api_visibility="private")
    show.click(on_show, inputs, spec_box, api_visibility="private")
    go.click(on_quantize, inputs, [head, report, fig1, fig2], api_name="quantize")
    cmp_source.change(on_compare, cmp_source, [cmp_table, cmp_fig], api_visibility="private")
    for trigger in (demo.load, tab.select):
        trigger(on_refresh, model, [model, calib, cmp_source], api_visibility="private")
    seen = gr.State("")
    def on_open(request: gr.Request):  # noqa: ANN202
        return on_poll("", request)

    tab.select(on_open, None, [seen, head, report, fig1, fig2], api_visibility="private")
    timer = gr.Timer(2.0)
    timer.tick(on_poll, seen, [seen, head, report, fig1, fig2], api_visibility="private", show_progress="hidden")
