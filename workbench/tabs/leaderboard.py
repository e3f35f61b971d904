"""Leaderboard: OALL-style table of measured scores, deltas against a base, charts, exports, drill-down,
model-vs-model comparison and the slerp t sweep."""

from __future__ import annotations

from typing import Any

import gradio as gr

from db.evals import evaluated_benchmarks, evaluated_models, merge_artifacts, samples_for
from db.session import read_scope
from hala_core.leaderboard import (
    answer_of,
    bar_figure,
    columns_of,
    disagreements,
    radar_figure,
    sweep_figure,
    sweep_points,
    to_csv,
    to_markdown,
)
from hala_core.settings import Settings
from workbench.auth import REVIEW_ROLES, require
from workbench.leaderboard_data import leaderboard_rows

SAMPLE_COLUMNS = ["task", "doc_id", "prompt", "choices", "model answer", "target", "correct"]
DIFF_COLUMNS = ["task", "doc_id", "prompt", "target", "answer A", "correct A", "answer B", "correct B"]


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    cols = columns_of(rows) or ["model"]
    body = []
    for r in rows:
        line = []
        for c in cols:
            v = r.get(c)
            if c == "parameters" and isinstance(v, int):
                v = f"{v / 1e9:.2f}B" if v >= 1e9 else f"{v / 1e6:.1f}M"
            line.append("" if v is None else v)
        body.append(line)
    return cols, body


def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    gr.Markdown("Measured scores (newest per model and benchmark). Accuracies are shown in percent, chrF++/BLEU on "
                "their 0–100 scale; the average needs every chosen benchmark. Rows marked *reported* are the Hala "
                "report's published averages, shown for reference only.")
    with gr.Row():
        benches = gr.CheckboxGroup([], label="benchmarks in the average", elem_id="lb-benchmarks")
        category = gr.Dropdown(["", "nano", "small", "other", "unknown"], value="", label="size category")
        base = gr.Dropdown([], value=None, label="delta against (base model)", allow_custom_value=True)
        reported = gr.Checkbox(False, label="show reported rows (Hala-1.2B 51.4, Hala-9B 69.9)")
    table = gr.Dataframe(interactive=False, elem_id="lb-table", max_height=420)
    message = gr.Markdown()
    with gr.Row():
        bar = gr.Plot(label="average", elem_id="lb-bar")
        radar = gr.Plot(label="per benchmark", elem_id="lb-radar")
    with gr.Row():
        csv_btn = gr.Button("Export CSV", size="sm")
        md_btn = gr.Button("Export Markdown", size="sm")
        export_file = gr.File(label="export", interactive=False)
    with gr.Accordion("Drill-down: one model on one benchmark, sample by sample", open=False) as drill_acc:
        with gr.Row():
            d_model = gr.Dropdown([], label="model", allow_custom_value=True, elem_id="lb-drill-model")
            d_bench = gr.Dropdown([], label="benchmark", elem_id="lb-drill-benchmark")
        d_summary = gr.Markdown(elem_id="lb-drill-summary")
        d_table = gr.Dataframe(headers=SAMPLE_COLUMNS, interactive=False, elem_id="lb-drill-table", max_height=420,
                               wrap=True, column_widths=["9%", "6%", "45%", "14%", "9%", "9%", "8%"])
    with gr.Accordion("Compare two models sample by sample", open=False):
        with gr.Row():
            c_a = gr.Dropdown([], label="model A", allow_custom_value=True)
            c_b = gr.Dropdown([], label="model B", allow_custom_value=True)
            c_bench = gr.Dropdown([], label="benchmark")
        c_summary = gr.Markdown()
        c_table = gr.Dataframe(headers=DIFF_COLUMNS, interactive=False, max_height=420, wrap=True,
                               column_widths=["9%", "6%", "37%", "8%", "12%", "7%", "12%", "9%"])
    with gr.Accordion("slerp t sweep: score against t for merges that share A and B", open=False):
        s_bench = gr.Dropdown([], label="benchmark")
        s_plot = gr.Plot()

    controls = [benches, category, base, reported]

    def refresh(chosen: list[str] | None, cat: str, base_model: str | None, rep: bool, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing the leaderboard")
        with read_scope(settings.db_url) as s:
            all_benches, models = evaluated_benchmarks(s), evaluated_models(s)
        chosen = [b for b in (chosen or []) if b in all_benches] or all_benches
        note = ""
        try:
            rows = leaderboard_rows(settings, chosen, base_model, cat, rep)
        except ValueError as e:
            rows, note = leaderboard_rows(settings, chosen, None, cat, rep), f"⚠️ {e}"
        cols, body = _table(rows)
        model_update = gr.update(choices=models)
        bench_update = gr.update(choices=all_benches)
        return (gr.update(choices=all_benches, value=chosen), gr.update(choices=[""] + models),
                gr.update(value=body, headers=cols), note, bar_figure(rows) if rows else None,
                radar_figure(rows, chosen) if rows else None, model_update, bench_update, model_update,
                model_update, bench_update, bench_update)

    def export(fmt: str, chosen, cat, base_model, rep, request: gr.Request):  # noqa: ANN001, ANN202
        require(settings, request, REVIEW_ROLES, "exporting the leaderboard")
        rows = leaderboard_rows(settings, chosen or None, base_model or None, cat or None, rep)
        path = settings.reports_dir / f"leaderboard.{'csv' if fmt == 'csv' else 'md'}"
        path.write_text(to_csv(rows) if fmt == "csv" else to_markdown(rows), encoding="utf-8")
        return str(path)

    def drill(model: str | None, bench: str | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing samples")
        if not model or not bench:
            return "", []
        with read_scope(settings.db_url) as s:
            samples = samples_for(s, model, bench)
        if not samples:
            return f"no samples of {model} on {bench}", []
        right = [x for x in samples if x["correct"] is not None]
        summary = (f"**{model}** on **{bench}** (job {samples[0]['job_id']}): {len(samples)} samples"
                   + (f", {sum(1 for x in right if x['correct'])} correct" if right else ""))
        rows = [[x["task"], x["doc_id"], x["prompt"][-300:], " | ".join(map(str, x["choices"] or [])),
                 answer_of(x), x["target"], "" if x["correct"] is None else ("✓" if x["correct"] else "✗")]
                for x in samples]
        return summary, rows

    def on_select(evt: gr.SelectData, bench: str | None):  # noqa: ANN202
        row = evt.row_value or []
        model = row[0] if row else None
        if not model or str(model).endswith("(reported)"):
            return gr.update(), gr.update(), gr.update()
        if not bench:
            with read_scope(settings.db_url) as s:
                bench = next(iter(evaluated_benchmarks(s)), None)
        return model, bench, gr.update(open=True)

    def compare(a: str | None, b: str | None, bench: str | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "comparing models")
        if not (a and b and bench):
            return "", []
        with read_scope(settings.db_url) as s:
            sa, sb = samples_for(s, a, bench), samples_for(s, b, bench)
        diff = disagreements(sa, sb)
        rows = [[d["task"], d["doc_id"], d["prompt"][-400:], d["target"], d["answer_a"], d["correct_a"],
                 d["answer_b"], d["correct_b"]] for d in diff]
        return f"{len(diff)} of {min(len(sa), len(sb))} samples differ between {a} and {b} on {bench}", rows

    def sweep(bench: str | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing the leaderboard")
        if not bench:
            return None
        with read_scope(settings.db_url) as s:
            merges = merge_artifacts(s)
        points = sweep_points(merges, leaderboard_rows(settings, [bench]), bench)
        if not points:
            gr.Info("no evaluated slerp merges (with A and B) on this benchmark yet")
            return None
        return sweep_figure(points, bench)

    outputs = [benches, base, table, message, bar, radar, d_model, d_bench, c_a, c_b, c_bench, s_bench]
    for trigger in (demo.load, tab.select):
        trigger(refresh, controls, outputs, api_visibility="private")
    for c in (category, base, reported):
        c.change(refresh, controls, outputs, api_visibility="private")
    benches.input(refresh, controls, outputs, api_visibility="private")

    def export_csv(c, ca, b, r, request: gr.Request):  # noqa: ANN001, ANN202
        return export("csv", c, ca, b, r, request)

    def export_md(c, ca, b, r, request: gr.Request):  # noqa: ANN001, ANN202
        return export("md", c, ca, b, r, request)

    csv_btn.click(export_csv, controls, export_file, api_name="leaderboard_csv")
    md_btn.click(export_md, controls, export_file, api_name="leaderboard_md")
    table.select(on_select, d_bench, [d_model, d_bench, drill_acc], api_visibility="private")
    for c in (d_model, d_bench):
        c.change(drill, [d_model, d_bench], [d_summary, d_table], api_visibility="private")
    for c in (c_a, c_b, c_bench):
        c.change(compare, [c_a, c_b, c_bench], [c_summary, c_table], api_visibility="private")
    s_bench.change(sweep, s_bench, s_plot, api_visibility="private")
