"""Review: annotators check machine translations side by side (source left, Arabic right-to-left and editable).

Every action goes straight to the db (``db.review``): the segment on screen is claimed with a lease, a save
names the version it was shown, and a stale save is refused with the other annotator's text. Keyboard:
Alt+A accept (an edited text counts as an edit), Alt+R reject, Alt+F flag, Alt+N skip to the next segment.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from db import review
from db.session import read_scope, session_scope
from hala_core.settings import Settings
from workbench.auth import REVIEW_ROLES, caller, require
from workbench.ui import esc

MODE_CHOICES = [(label, key) for key, label in review.MODE_LABELS.items()]
HISTORY_COLUMNS = ["when", "who", "action", "before", "after", "reason"]
RECENT_COLUMNS = ["id", "when", "who", "action", "text"]
LANG_DIR = {"en": "ltr", "ar": "rtl"}
SCORE_LABELS = {"script_share": "target script", "length_ratio": "length ratio", "repetition": "repetition",
                "identical": "identical to source", "preserved": "code/URLs/numbers kept", "empty": "empty"}

# Outputs of every handler that shows an item, in this order.
N_ITEM_OUTPUTS = 9


def _run_choices(settings: Settings) -> list[tuple[str, str]]:
    with read_scope(settings.db_url) as s:
        return review.run_choices(s)


def _meta_html(it: dict[str, Any]) -> str:
    flags = ", ".join(it["flags"]) or "none"
    scores = " · ".join(f"{SCORE_LABELS.get(k, k)} {v:.2f}" for k, v in it["scores"].items()
                        if k in ("script_share", "length_ratio", "repetition"))
    status = it["status"] + (f" by {it['reviewed_by']}" if it["reviewed_by"] else "")
    parts = [f"<b>#{it['id']}</b> · row {it['row']} (line {it['line']}) · {esc(it['field'])} ({esc(it['role'])})"
             + (f" · part {it['part'] + 1}/{it['parts']}" if it["parts"] > 1 else ""),
             f"status: <b data-testid='review-status'>{esc(status)}</b> · version {it['version']}",
             f"filter flags: <span class='review-flags'>{esc(flags)}</span>" + (f" · {esc(scores)}" if scores else "")]
    if it["double"]:
        parts.append("in the double-annotation sample" + (f" (second opinion: {esc(it['second_status'])} by "
                                                          f"{esc(it['second_by'])})" if it["second_status"] else ""))
    if it["reason"]:
        parts.append(f"reason: {esc(it['reason'])}")
    if it.get("reference"):
        tgt = it["direction"].split("-")[1]
        parts.append(f"reference: <span dir='{LANG_DIR.get(tgt, 'auto')}' class='bidi'>{esc(it['reference'])}</span>")
    return "<div class='review-meta'>" + "<br>".join(parts) + "</div>"


def _context_html(it: dict[str, Any]) -> str:
    rows = []
    for f in it["context"]:
        here = f["field"] == it["field"] and f["text"].strip() and it["source"].strip() in f["text"]
        cls = " class='review-here'" if here else ""
        rows.append(f"<tr{cls}><th>{esc(f['field'])} ({esc(f['role'])})</th>"
                    f"<td dir='auto' class='bidi'>{esc(f['text'][:2000])}</td></tr>")
    return ("<details open><summary>the whole record (source)</summary><table class='review-context'>"
            + "".join(rows) + "</table></details>")


def _progress_html(p: dict[str, Any], who: str | None) -> str:
    pct = 100.0 * p["reviewed"] / p["total"] if p["total"] else 0.0
    states = " · ".join(f"{k} {v}" for k, v in sorted(p["by_status"].items()))
    mine = next((a["total"] for a in p["annotators"] if a["annotator"] == who), 0)
    return (f"<div class='hala-progress'><div class='hala-progress-label'>{p['reviewed']}/{p['total']} reviewed "
            f"({pct:.1f}%) · {esc(states)} · you: {mine}</div><div class='hala-progress-track'>"
            f"<div class='hala-progress-bar' style='width:{pct:.1f}%'></div></div></div>")


_PROGRESS_TTL_S = 5.0
_progress_cache: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}


def run_progress(settings: Settings, run_id: int) -> dict[str, Any]:
    """``review.progress`` of a run, at most a few seconds old: counting a million-segment run by state takes
    tens of milliseconds, too much to repeat on every save of every annotator (the counts are only a gauge)."""
    import time

    key = (settings.db_url, run_id)
    hit = _progress_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < _PROGRESS_TTL_S:
        return hit[1]
    with read_scope(settings.db_url) as s:
        value = review.progress(s, run_id)
    _progress_cache[key] = (time.monotonic(), value)
    return value


def _empty(message: str, progress: str = "") -> tuple:
    return (None, None, "", gr.update(value="", interactive=False), "", "", [], message, progress)


def render(settings: Settings, tid: int, who: str | None, message: str = "") -> tuple:
    """The outputs showing translation ``tid``: ids, source, editable target, meta, context, history, …"""
    with read_scope(settings.db_url) as s:
        it = review.item(s, tid)
        hist = review.history(s, tid)
    prog = run_progress(settings, it["run_id"])
    src_lang, tgt_lang = it["direction"].split("-")
    source = (f"<div class='review-source bidi' dir='{LANG_DIR[src_lang]}' lang='{src_lang}' "
              f"data-testid='review-source'>{esc(it['source'])}</div>")
    target = gr.update(value=it["text"], interactive=True, rtl=tgt_lang == "ar",
                       label=f"{'Arabic' if tgt_lang == 'ar' else 'English'} translation (editable)")
    rows = [[h[c] for c in HISTORY_COLUMNS] for h in hist]
    return (it["id"], it["version"], source, target, _meta_html(it), _context_html(it), rows, message,
            _progress_html(prog, who))


def _recent(settings: Settings, run_key: str | None, who: str | None) -> list[list[Any]]:
    if not run_key:
        return []
    try:
        with read_scope(settings.db_url) as s:
            run = review.resolve_run(s, run_key)
            return [[r[c] for c in RECENT_COLUMNS] for r in review.recent(s, run.id, who)]
    except ValueError:
        return []


def next_item(settings: Settings, run_key: str | None, mode: str, who: str | None, message: str = "") -> tuple:
    """Claim the next segment for ``who`` in ``mode`` and render it (an empty pane when the queue is done)."""
    with session_scope(settings.db_url) as s:
        run = review.resolve_run(s, run_key or "")
        run_id = run.id
        tid = review.claim_next(s, run_id, who or "admin", mode)
    if tid is None:
        prog = run_progress(settings, run_id)
        what = review.MODE_LABELS.get(mode, mode)
        return _empty(f"{message} ✅ nothing left in the queue “{what}” — every segment is reviewed or claimed "
                      "by someone else.", _progress_html(prog, who))
    return render(settings, tid, who, message)


def save_and_next(settings: Settings, action: str, run_key: str | None, mode: str, item_id: float | None,
                  version: float | None, text: str | None, reason: str | None, who: str | None) -> tuple:
    """Save a decision on the item on screen, then hand out the next one; a conflict keeps the item on screen."""
    if item_id is None or version is None:
        raise gr.Error("no segment on screen: press Next (Alt+N) first")
    tid = int(item_id)
    try:
        with session_scope(settings.db_url) as s:
            out = review.save(s, tid, who or "admin", action, int(version), text=text, reason=reason,
                              second=mode == "second")
    except review.ReviewConflict as e:
        return render(settings, tid, who, f"<div class='review-conflict'>⚠️ {esc(e)}</div>")
    except ValueError as e:
        raise gr.Error(str(e)) from None
    return next_item(settings, run_key, mode, who, f"saved #{tid}: {out['status']}.")


def stats_html(settings: Settings, run_key: str | None) -> str:
    if not run_key:
        return ""
    try:
        with read_scope(settings.db_url) as s:
            run = review.resolve_run(s, run_key)
            p = review.progress(s, run.id)
            ag = review.agreement(s, run.id)
    except ValueError as e:
        return f"<p>{esc(e)}</p>"
    head = "".join(f"<th>{h}</th>" for h in ("annotator", "accept", "edit", "reject", "flag", "total"))
    body = "".join(f"<tr><td>{esc(a['annotator'])}</td><td>{a['accept']}</td><td>{a['edit']}</td>"
                   f"<td>{a['reject']}</td><td>{a['flag']}</td><td>{a['total']}</td></tr>" for a in p["annotators"])

    def fmt(v: float | None, digits: int = 3) -> str:
        return "—" if v is None else f"{v:.{digits}f}"

    agreement = (f"<p><b>Double annotation</b>: {p['double_done']}/{p['double_total']} second opinions · "
                 f"{ag['items']} items with two decisions · raw agreement {fmt(ag['raw_agreement'])} · "
                 f"Cohen's κ (accept/reject) {fmt(ag['kappa'])} · chrF++ between the two edited versions "
                 f"{fmt(ag['chrf_between_edits'], 1)} ({ag['pairs_with_text']} pairs)</p>")
    return (f"{_progress_html(p, None)}<table class='hala-report' id='review-annotators'><thead><tr>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table>{agreement}")


def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab, secret: str) -> None:
    remembered = gr.BrowserState({"run": None, "mode": "next"}, storage_key="hala-review", secret=secret)
    gr.Markdown("Review machine translations: the source on the left, the translation on the right (edit it in "
                "place). **Alt+A** accept (an edited text is saved as an edit) · **Alt+R** reject · **Alt+F** flag "
                "(with a reason) · **Alt+N** skip to the next. Segments are handed out with a lease, so two "
                "annotators never get the same one; a save made after someone else's is refused, never lost.")
    with gr.Row():
        run_dd = gr.Dropdown(_run_choices(settings), label="translation (corpus / name)", elem_id="review-run",
                             scale=3, allow_custom_value=True)  # translations made after the page was built
        mode = gr.Radio(MODE_CHOICES, value="next", label="queue", elem_id="review-mode", scale=3)
        refresh = gr.Button("↻", scale=0, elem_id="review-refresh")
    progress = gr.HTML(elem_id="review-progress")
    item_id = gr.Number(visible="hidden", elem_id="review-item-id", precision=0)
    version = gr.Number(visible="hidden", elem_id="review-version", precision=0)
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("**Source**")
            source = gr.HTML(elem_id="review-source")
        with gr.Column():
            target = gr.Textbox(label="Arabic translation (editable)", lines=6, max_lines=30, rtl=True,
                                interactive=False, elem_id="review-target", elem_classes=["rtl", "bidi-input"])
    meta = gr.HTML(elem_id="review-meta")
    with gr.Row():
        accept = gr.Button("Accept  (Alt+A)", variant="primary", elem_id="review-accept")
        reject = gr.Button("Reject  (Alt+R)", variant="stop", elem_id="review-reject")
        flag = gr.Button("Flag  (Alt+F)", elem_id="review-flag")
        skip = gr.Button("Next  (Alt+N)", elem_id="review-next")
    reason = gr.Textbox(label="reason (for a flag or a rejection)", lines=1, elem_id="review-reason")
    message = gr.HTML(elem_id="review-message")
    context = gr.HTML(elem_id="review-context")
    history = gr.Dataframe(headers=HISTORY_COLUMNS, label="edit history of this segment", interactive=False,
                           wrap=True, elem_id="review-history")
    recent = gr.Dataframe(headers=RECENT_COLUMNS, label="your latest decisions", interactive=False, wrap=True,
                          elem_id="review-recent")
    with gr.Row():
        stats_btn = gr.Button("↻ progress and agreement", scale=0, elem_id="review-stats-refresh")
    stats = gr.HTML(elem_id="review-stats")

    item_outputs = [item_id, version, source, target, meta, context, history, message, progress]

    def on_next(run_key: str | None, mode_v: str, request: gr.Request):  # noqa: ANN202
        who = require(settings, request, REVIEW_ROLES, "reviewing")
        try:
            out = next_item(settings, run_key, mode_v, who.name)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return (*out, _recent(settings, run_key, who.name))

    def on_show(run_key: str | None, mode_v: str, request: gr.Request):  # noqa: ANN202
        """On load / tab select: the caller's segment, quietly nothing when there is no translation yet."""
        if not run_key:
            return (*_empty("No translation to review yet: translate a corpus in the Translate tab."), [])
        try:
            return on_next(run_key, mode_v, request)
        except gr.Error as e:
            return (*_empty(esc(e.message)), [])

    def make_save(action: str):  # noqa: ANN202
        def on_save(run_key: str | None, mode_v: str, tid: float | None, ver: float | None, text: str | None,
                    why: str | None, request: gr.Request):  # noqa: ANN202
            who = require(settings, request, REVIEW_ROLES, "reviewing")
            try:
                out = save_and_next(settings, action, run_key, mode_v, tid, ver, text, why, who.name)
            except ValueError as e:
                raise gr.Error(str(e)) from None
            return (*out, _recent(settings, run_key, who.name), "")
        return on_save

    def on_choose(run_key: str | None, mode_v: str, request: gr.Request):  # noqa: ANN202
        """A translation or mode was picked: remember it in the browser and show the first segment."""
        state = {"run": run_key, "mode": mode_v}
        if not run_key:
            return (*_empty(""), [], state)
        return (*on_next(run_key, mode_v, request), state)

    def on_restore(saved: dict | None, request: gr.Request):  # noqa: ANN202
        """After a reload: the remembered translation and mode, or the newest translation."""
        try:
            caller(settings, request)
        except gr.Error:
            return gr.update(), gr.update()
        choices = _run_choices(settings)
        keys = [k for _, k in choices]
        saved = saved or {}
        run_key = saved.get("run") if saved.get("run") in keys else (keys[0] if keys else None)
        mode_v = saved.get("mode") if saved.get("mode") in review.MODES else "next"
        return gr.update(choices=choices, value=run_key), gr.update(value=mode_v)

    def on_stats(run_key: str | None, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "reviewing")
        return stats_html(settings, run_key)

    save_inputs = [run_dd, mode, item_id, version, target, reason]
    save_outputs = [*item_outputs, recent, reason]
    for btn, action in ((accept, "accept"), (reject, "reject"), (flag, "flag")):
        btn.click(make_save(action), save_inputs, save_outputs, api_name=f"review_{action}",
                  concurrency_limit=None, show_progress="hidden")
    skip.click(on_next, [run_dd, mode], [*item_outputs, recent], api_name="review_next", concurrency_limit=None,
               show_progress="hidden")
    for comp in (run_dd, mode):
        comp.input(on_choose, [run_dd, mode], [*item_outputs, recent, remembered], api_visibility="private")
    refresh.click(on_restore, [remembered], [run_dd, mode], api_visibility="private").then(
        on_show, [run_dd, mode], [*item_outputs, recent], api_visibility="private")
    stats_btn.click(on_stats, [run_dd], stats, api_visibility="private")
    # a reload (or opening the tab) restores the translation and mode, then shows the caller's claimed segment
    for trigger in (demo.load, tab.select):
        trigger(on_restore, [remembered], [run_dd, mode], api_visibility="private").then(
            on_show, [run_dd, mode], [*item_outputs, recent], api_visibility="private").then(
            on_stats, [run_dd], stats, api_visibility="private")


# The page's keyboard shortcuts (loaded once in <head>); Alt+letter clicks the Review tab's buttons.
SHORTCUTS_JS = """
<script>
document.addEventListener('keydown', (ev) => {
  if (!ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const ids = {a: 'review-accept', r: 'review-reject', f: 'review-flag', n: 'review-next'};
  const id = ids[(ev.key || '').toLowerCase()] || ids[(ev.code || '').replace('Key', '').toLowerCase()];
  if (!id) return;
  const el = document.getElementById(id);
  if (!el || el.offsetParent === null) return;  // the Review tab is not on screen
  ev.preventDefault();
  const target = document.querySelector('#review-target textarea');
  if (target) target.dispatchEvent(new Event('input', {bubbles: true}));  // make sure the edit is sent along
  (el.tagName === 'BUTTON' ? el : el.querySelector('button') || el).click();
});
</script>
"""
