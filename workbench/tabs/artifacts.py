"""Artifacts: every model, dataset and report, with its licence, producing job and lineage."""

from __future__ import annotations

from typing import Any

import gradio as gr

from db.artifacts import find_artifact, lineage, list_artifacts
from db.session import read_scope
from hala_core.settings import Settings
from workbench.auth import REVIEW_ROLES, require
from workbench.ui import esc

COLUMNS = ["id", "kind", "name", "label", "licence", "job", "path"]


def rows(settings: Settings, kind: str) -> list[list[Any]]:
    with read_scope(settings.db_url) as s:
        arts = list_artifacts(s, kind or None)
        return [[a.id, a.kind, a.name, (a.meta or {}).get("label", "external" if (a.meta or {}).get("external") else ""),
                 (a.meta or {}).get("licence", ""), a.job_id, a.path] for a in arts]


def lineage_html(settings: Settings, kind: str, name: str) -> str:
    with read_scope(settings.db_url) as s:
        art = find_artifact(s, kind, name)
        if art is None:
            return ""
        chain = lineage(s, art.id)
        meta = dict(art.meta or {})
    items = "".join(f"<li>{'&nbsp;&nbsp;' * (x['depth'] - 1)}↳ {esc(x['kind'])} <code>{esc(x['name'])}</code>"
                    + (f" (job {x['job_id']})" if x["job_id"] else "") + "</li>" for x in chain)
    meta_rows = "".join(f"<tr><th>{esc(k)}</th><td dir='auto'>{esc(v)}</td></tr>" for k, v in meta.items())
    return (f"<h4>{esc(kind)} <code>{esc(name)}</code></h4><table class='hala-kv'>{meta_rows}</table>"
            f"<p><b>made from</b></p><ul>{items or '<li>nothing recorded (an original input)</li>'}</ul>")


def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    kind = gr.Radio(["", "model", "dataset", "report"], value="", label="kind")
    table = gr.Dataframe(headers=COLUMNS, value=rows(settings, ""), interactive=False, elem_id="artifacts-table")
    detail = gr.HTML(elem_id="artifacts-detail")

    def on_select(evt: gr.SelectData, request: gr.Request) -> str:
        require(settings, request, REVIEW_ROLES, "viewing artifacts")
        row = evt.row_value or []
        return lineage_html(settings, row[1], row[2]) if row else ""

    def on_refresh(k: str, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "viewing artifacts")
        return rows(settings, k)

    kind.change(on_refresh, kind, table, api_visibility="private")
    table.select(on_select, None, detail, api_visibility="private")
    demo.load(on_refresh, kind, table, api_visibility="private")
    tab.select(on_refresh, kind, table, api_visibility="private")
    gr.Button("↻ refresh", size="sm").click(on_refresh, kind, table, api_visibility="private")
