"""Corpus: import instruction sets (and parallel sets), look at the corpora, tune the quality filters, export.

Import runs in the workbench process (it is quick: 5,000 Alpaca records in well under a second) and is one
transaction, so a failed import leaves nothing behind. Translation is a job: see the Translate tab.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from db.corpora import filter_data, flag_counts, list_corpora, set_thresholds
from db.models import Corpus
from db.review import resolve_run, run_choices
from db.session import read_scope
from hala_core.corpus_io import FORMATS, parse_mapping
from hala_core.filters import FilterThresholds, summary_figure
from hala_core.settings import Settings
from workbench import corpus_ops
from workbench.auth import LAUNCH_ROLES, REVIEW_ROLES, require
from workbench.ui import esc, kv_table

# (corpus name, file or folder under the sample data folder, how many records)
CORPUS_COLUMNS = ["corpus", "format", "language", "rows", "segments", "characters", "tokens", "duplicates skipped",
                  "records skipped", "references", "licence", "translations", "translated", "reviewed", "created",
                  "source"]
INCLUDE_CHOICES = [("reviewed only (accepted or edited)", "reviewed"),
                   ("reviewed + unreviewed that passed the filters", "passed")]
KIND_CHOICES = [("SFT messages", "sft"), ("bilingual pairs", "pairs")]
UPLOAD_TYPES = [".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt"]


# --------------------------------------------------------------------------- helpers

def stage_upload(settings: Settings, file: str) -> str:
    """Copy an uploaded (temporary) file into the workspace, where user paths are allowed; same content, same path."""
    src = Path(file)
    h = hashlib.sha256()
    with src.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    dst = settings.home / "uploads" / h.hexdigest()[:16] / src.name
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return str(dst)


def _source(settings: Settings, upload: str | None, path: str | None) -> str:
    if upload:
        return stage_upload(settings, upload)
    if path and path.strip():
        return path.strip()
    raise ValueError("no file given: upload a file, or type a path on the server or a hub dataset id")


def default_name(source: str) -> str:
    """A corpus name from a file name: ``my data.jsonl`` → ``my-data``."""
    stem = Path(source.rstrip("/")).name
    for suffix in (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt"):
        stem = stem.removesuffix(suffix)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100]
    return name or "corpus"


def _fmt(value: str | None) -> str | None:
    return None if not value or value == "auto" else value


def _text(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def _validation_message(e: ValidationError) -> str:
    return "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())


def corpora_frame(settings: Settings) -> pd.DataFrame:
    with read_scope(settings.db_url) as s:
        rows = list_corpora(s)
    return pd.DataFrame([[r.get(c, "") for c in CORPUS_COLUMNS] for r in rows], columns=CORPUS_COLUMNS)


def translation_choices(settings: Settings) -> list[tuple[str, str]]:
    with read_scope(settings.db_url) as s:
        return run_choices(s)


# --------------------------------------------------------------------------- preview and import

def preview_html(info: dict[str, Any]) -> str:
    rows = info["rows"]
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f'<td dir="auto" class="bidi">{esc(r.get(c, ""))}</td>' for c in cols)
                   + "</tr>" for r in rows)
    problems = info["problems"]
    probs = ("<p class='hala-note'>⚠️ problems among the first records (on error = skip leaves them out, "
             "abort stops the import):</p><ul>" + "".join(f"<li dir='auto'>{esc(p)}</li>" for p in problems)
             + "</ul>") if problems else "<p>✅ no problems in the records read</p>"
    return (f"<p><b>format</b> {esc(info['format'])} · <b>licence</b> {esc(info['licence'] or 'unknown')} · "
            f"{info['records_read']} records read for the preview</p>"
            f"<table class='hala-samples hala-preview' id='corpus-preview-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{probs}")


def stats_html(stats: dict[str, Any]) -> str:
    rows = [("corpus", stats["corpus"]), ("format", stats["format"]), ("language", stats["language"]),
            ("licence", stats["licence"]), ("rows", f"{stats['rows']:,}"), ("segments", f"{stats['segments']:,}"),
            ("characters", f"{stats['characters']:,}"), ("tokens", f"{stats['tokens']:,}"),
            ("duplicates skipped", stats["duplicates skipped"]), ("records skipped", stats["records skipped"]),
            ("references", stats["references"]), ("seconds", stats.get("seconds")),
            ("segments/s", stats.get("segments_per_s"))]
    out = f"<p>✅ imported <b>{esc(stats['corpus'])}</b></p>" + kv_table([(k, str(v)) for k, v in rows])
    if stats.get("problems"):
        out += ("<p class='hala-note'>skipped records:</p><ul>"
                + "".join(f"<li dir='auto'>{esc(p)}</li>" for p in stats["problems"]) + "</ul>")
    return out


def preview_action(settings: Settings, upload: str | None, path: str | None, fmt: str, mapping: str,
                   language: str, reference: str | None, encoding: str | None) -> str:
    try:
        source = _source(settings, upload, path)
        info = corpus_ops.preview(settings, source, _fmt(fmt), parse_mapping(mapping or "") or None,
                                  _text(encoding), _text(reference), language or "en")
    except (ValueError, OSError) as e:
        raise gr.Error(str(e)) from None
    return preview_html(info)


def import_action(settings: Settings, owner: str | None, upload: str | None, path: str | None, fmt: str,
                  mapping: str, language: str, reference: str | None, on_error: str, encoding: str | None,
                  max_tokens: float | None, keep_duplicates: bool, limit: float | None, licence: str | None,
                  name: str | None) -> str:
    try:
        source = _source(settings, upload, path)
        corpus_name = _text(name) or default_name(upload or source)
        stats = corpus_ops.import_file(
            settings, source, corpus_name, fmt=_fmt(fmt), mapping=parse_mapping(mapping or "") or None,
            on_error=on_error or "abort", encoding=_text(encoding), language=language or "en",
            max_tokens=int(max_tokens or 256), dedupe=not keep_duplicates,
            limit=int(limit) if limit and limit > 0 else None, reference=_text(reference),
            licence=_text(licence), owner=owner)
    except (ValueError, OSError) as e:
        raise gr.Error(str(e)) from None
    gr.Info(f"imported corpus {stats['corpus']}: {stats['rows']} rows, {stats['segments']} segments")
    return stats_html(stats)


def sample_action(settings: Settings, owner: str | None) -> str:
    try:
        return corpus_ops.import_sample_data(settings, owner)
    except ValueError as e:
        raise gr.Error(str(e)) from None


# --------------------------------------------------------------------------- filters

def filter_view(settings: Settings, key: str | None) -> tuple[Any, str, float, float, float, float, bool]:
    """The charts, a summary line and the stored thresholds of the chosen translation's corpus."""
    d = FilterThresholds()
    if not key:
        return (None, "<i>no translation chosen (translate a corpus in the Translate tab first)</i>",
                d.min_script_share, d.min_length_ratio, d.max_length_ratio, d.max_repetition, d.check_preserved)
    with read_scope(settings.db_url) as s:
        run = resolve_run(s, key)
        corpus = s.get(Corpus, run.corpus_id)
        th = FilterThresholds(**(corpus.thresholds or {}))
        rows, _ = filter_data(s, run.id)
        counts = flag_counts(s, run.id)
    n = len(rows)
    passed = counts.get("passed", 0)  # exact over the whole run; the histograms chart a sample of big runs
    summary = (f"<p><b>{esc(key)}</b>: {n:,} translations charted · {passed:,} passed the filters"
               + " · dashed lines are the thresholds</p>")
    fig = summary_figure(rows, counts, th) if rows else None
    return (fig, summary, th.min_script_share, th.min_length_ratio, th.max_length_ratio, th.max_repetition,
            th.check_preserved)


def thresholds_action(settings: Settings, key: str | None, share: float, min_ratio: float, max_ratio: float,
                      repetition: float, preserved: bool) -> str:
    try:
        if not key:
            raise ValueError("choose a translation first (its corpus gets the thresholds)")
        with read_scope(settings.db_url) as s:
            corpus = s.get(Corpus, resolve_run(s, key).corpus_id).name
        out = set_thresholds(settings.db_url, corpus, {
            "min_script_share": float(share), "min_length_ratio": float(min_ratio),
            "max_length_ratio": float(max_ratio), "max_repetition": float(repetition),
            "check_preserved": bool(preserved)})
    except ValidationError as e:
        raise gr.Error(_validation_message(e)) from None
    except ValueError as e:
        raise gr.Error(str(e)) from None
    return (f"✅ thresholds stored for corpus **{corpus}**; re-flagged {out['translations']:,} translations: "
            f"**{out['changed']:,} changed** their flags.")


# --------------------------------------------------------------------------- export

def card_markdown(card: str) -> str:
    """A dataset card for display: its YAML front matter as a code block (Markdown would make it a heading)."""
    if card.startswith("---\n"):
        head, sep, rest = card[4:].partition("\n---\n")
        if sep:
            return f"```yaml\n{head}\n```\n{rest}"
    return card


def export_action(settings: Settings, owner: str | None, key: str | None, include: str, kind: str,
                  fmt: str) -> tuple[str, Any, str]:
    try:
        if not key:
            raise ValueError("choose a translation to export")
        corpus, _, run = key.partition("/")
        info = corpus_ops.export(settings, corpus, translation=run or None, fmt=fmt, include=include, kind=kind,
                                 owner=owner)
    except (ValueError, OSError) as e:
        raise gr.Error(str(e)) from None
    what = "records (SFT messages)" if kind == "sft" else "bilingual pairs"
    counts = ", ".join(f"{k} {v}" for k, v in info["counts"].items())
    summary = (f"<p>✅ <b>{info['records']:,}</b> {what} written as {esc(fmt)} → <code>{esc(info['path'])}</code>"
               f" (dataset artifact <b>{esc(info['dataset'])}</b>)</p><p>rows: {esc(counts)}</p>")
    card = card_markdown(Path(info["card"]).read_text(encoding="utf-8"))
    download = gr.update(value=info["path"] if fmt != "hf" else None, visible=fmt != "hf")
    return summary, download, card


# --------------------------------------------------------------------------- the tab

def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    gr.Markdown("Import an instruction set (Alpaca, ShareGPT, messages, CSV/TSV, Parquet, a `datasets` folder or a "
                "hub id) or a parallel set, cut into segments ready to translate. Researchers and admins import, "
                "filter and export; everyone may look.")
    with gr.Row(visible=settings.data_dir is not None):
        sample_btn = gr.Button("Import the sample data (Alpaca 500 + NTREX 200)", elem_id="corpus-import-samples",
                               scale=1)
        sample_msg = gr.Markdown(elem_id="corpus-samples-message")
    with gr.Accordion("Import a file", open=True):
        with gr.Row():
            upload = gr.File(label="file", type="filepath", file_types=UPLOAD_TYPES, elem_id="corpus-upload")
            with gr.Column():
                path = gr.Textbox(label="…or a path on the server, or a hub dataset id", elem_id="corpus-path",
                                  placeholder="../shared/data/alpaca_5000/alpaca_5000.json")
                reference = gr.Textbox(label="reference file (parallel: the other language, line by line)",
                                       elem_id="corpus-reference")
        with gr.Row():
            fmt = gr.Dropdown(["auto", *FORMATS], value="auto", label="format", elem_id="corpus-format")
            mapping = gr.Textbox(label="column mapping (our field = your column)", elem_id="corpus-mapping",
                                 placeholder="instruction=question, output=answer")
            language = gr.Radio(["en", "ar"], value="en", label="language of the text", elem_id="corpus-language")
            on_error = gr.Radio(["abort", "skip"], value="abort", label="on a bad record", elem_id="corpus-on-error")
        with gr.Row():
            encoding = gr.Textbox(label="encoding (blank = auto)", elem_id="corpus-encoding")
            max_tokens = gr.Number(256, precision=0, label="segment budget (max tokens)", elem_id="corpus-max-tokens")
            keep_dups = gr.Checkbox(False, label="keep duplicates", elem_id="corpus-keep-dups")
            limit = gr.Number(0, precision=0, label="limit (records; 0 = all)", elem_id="corpus-limit")
            licence = gr.Textbox(label="licence (blank = detected)", elem_id="corpus-licence")
            name = gr.Textbox(label="corpus name (blank = from the file name)", elem_id="corpus-name")
        with gr.Row():
            preview_btn = gr.Button("Preview", elem_id="corpus-preview")
            import_btn = gr.Button("Import", variant="primary", elem_id="corpus-import")
        preview_out = gr.HTML(elem_id="corpus-preview-out")
        import_out = gr.HTML(elem_id="corpus-import-out")
    gr.Markdown("### Corpora")
    table = gr.Dataframe(corpora_frame(settings), interactive=False, elem_id="corpus-table", max_height=360)
    refresh = gr.Button("↻ refresh", size="sm")

    runs = translation_choices(settings)
    first_run = runs[0][1] if runs else None
    with gr.Accordion("Quality filters", open=True):
        gr.Markdown("Scores of every translation (script share, length ratio, repetition) and the flags they earn. "
                    "Thresholds belong to the corpus: applying them re-flags all its translations from the stored "
                    "scores (no re-translation).")
        # custom values: translations made after the page was built are valid too (the server checks the name)
        filt_run = gr.Dropdown(runs, value=first_run, label="translation", allow_custom_value=True,
                               elem_id="corpus-filter-run")
        filt_summary = gr.HTML(elem_id="corpus-filter-summary")
        filt_plot = gr.Plot(label="scores and flags", elem_id="corpus-filter-plot")
        d = FilterThresholds()
        with gr.Row():
            th_share = gr.Number(d.min_script_share, label="min script share", elem_id="corpus-th-share")
            th_min = gr.Number(d.min_length_ratio, label="min length ratio", elem_id="corpus-th-min-ratio")
            th_max = gr.Number(d.max_length_ratio, label="max length ratio", elem_id="corpus-th-max-ratio")
            th_rep = gr.Number(d.max_repetition, label="max repetition", elem_id="corpus-th-repetition")
            th_pres = gr.Checkbox(d.check_preserved, label="protected spans and numbers must survive",
                                  elem_id="corpus-th-preserved")
        apply_btn = gr.Button("Apply thresholds", elem_id="corpus-apply-thresholds")
        apply_msg = gr.Markdown(elem_id="corpus-thresholds-message")
    with gr.Accordion("Export", open=True):
        with gr.Row():
            exp_run = gr.Dropdown(runs, value=first_run, label="translation", allow_custom_value=True,
                                  elem_id="corpus-export-run")
            include = gr.Radio(INCLUDE_CHOICES, value="reviewed", label="include", elem_id="corpus-export-include")
            kind = gr.Radio(KIND_CHOICES, value="sft", label="records", elem_id="corpus-export-kind")
            exp_fmt = gr.Radio(["jsonl", "parquet", "hf"], value="jsonl", label="format", elem_id="corpus-export-format")
        export_btn = gr.Button("Export", variant="primary", elem_id="corpus-export")
        export_out = gr.HTML(elem_id="corpus-export-out")
        export_file = gr.File(label="download", interactive=False, visible=False, elem_id="corpus-export-file")
        card = gr.Markdown(elem_id="corpus-export-card")

    import_inputs = [upload, path, fmt, mapping, language, reference, on_error, encoding, max_tokens, keep_dups,
                     limit, licence, name]
    th_inputs = [th_share, th_min, th_max, th_rep, th_pres]

    def on_preview(up: str | None, p: str, f: str, m: str, lang: str, ref: str, enc: str,
                   request: gr.Request) -> str:
        require(settings, request, REVIEW_ROLES, "previewing a corpus")
        return preview_action(settings, up, p, f, m, lang, ref, enc)

    def on_import(up: str | None, p: str, f: str, m: str, lang: str, ref: str, oe: str, enc: str, mt: float,
                  kd: bool, lim: float, lic: str, nm: str, request: gr.Request) -> str:
        who = require(settings, request, LAUNCH_ROLES, "importing a corpus")
        return import_action(settings, who.name, up, p, f, m, lang, ref, oe, enc, mt, kd, lim, lic, nm)

    def on_samples(request: gr.Request) -> str:
        who = require(settings, request, LAUNCH_ROLES, "importing the sample data")
        return sample_action(settings, who.name)

    def on_table(request: gr.Request) -> pd.DataFrame:
        require(settings, request, REVIEW_ROLES, "viewing corpora")
        return corpora_frame(settings)

    def on_runs(current: str | None, current_exp: str | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing corpora")
        c = translation_choices(settings)
        keys = [v for _, v in c]
        pick = current if current in keys else (keys[0] if keys else None)
        pick_exp = current_exp if current_exp in keys else (keys[0] if keys else None)
        return gr.update(choices=c, value=pick), gr.update(choices=c, value=pick_exp)

    def on_filter(key: str | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing the filters")
        try:
            return filter_view(settings, key)
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def on_apply(key: str | None, share: float, lo: float, hi: float, rep: float, pres: bool,
                 request: gr.Request) -> str:
        require(settings, request, LAUNCH_ROLES, "changing filter thresholds")
        return thresholds_action(settings, key, share, lo, hi, rep, pres)

    def on_export(key: str | None, inc: str, k: str, f: str, request: gr.Request):  # noqa: ANN202
        who = require(settings, request, LAUNCH_ROLES, "exporting a corpus")
        return export_action(settings, who.name, key, inc, k, f)

    filter_outputs = [filt_plot, filt_summary, *th_inputs]
    preview_btn.click(on_preview, [upload, path, fmt, mapping, language, reference, encoding], preview_out,
                      api_name="preview_corpus")
    import_btn.click(on_import, import_inputs, import_out, api_name="import_corpus").success(
        on_table, None, table, api_visibility="private")
    sample_btn.click(on_samples, None, sample_msg, api_name="import_sample_data").success(
        on_table, None, table, api_visibility="private")
    refresh.click(on_table, None, table, api_visibility="private")
    filt_run.change(on_filter, filt_run, filter_outputs, api_visibility="private")
    apply_btn.click(on_apply, [filt_run, *th_inputs], apply_msg, api_name="set_thresholds").success(
        on_filter, filt_run, filter_outputs, api_visibility="private")
    export_btn.click(on_export, [exp_run, include, kind, exp_fmt], [export_out, export_file, card],
                     api_name="export_corpus")
    tab.select(on_table, None, table, api_visibility="private")
    tab.select(on_runs, [filt_run, exp_run], [filt_run, exp_run], api_visibility="private").then(
        on_filter, filt_run, filter_outputs, api_visibility="private")
