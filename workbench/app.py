"""The Gradio app: one module per tab under ``workbench/tabs``; each builds its spec and reads the db."""

from __future__ import annotations

import secrets

import gradio as gr

from hala_core.settings import Settings
from workbench.tabs import (
    artifacts,
    chat,
    corpus,
    evaluate,
    home,
    leaderboard,
    merge,
    quantize,
    review,
    runs,
    train,
    translate,
    users,
)

HEAD = review.SHORTCUTS_JS  # page-wide <head> additions: the Review tab's keyboard shortcuts

CSS = """
.bidi { unicode-bidi: plaintext; white-space: pre-wrap; }
.rtl, .rtl textarea { direction: rtl; text-align: right; }
.hala-progress-track { background: #e5e7eb; border-radius: 4px; height: 10px; overflow: hidden; }
.hala-progress-bar { background: #0f766e; height: 10px; transition: width .4s; }
.hala-progress-label { font-size: 0.9em; margin-bottom: 4px; }
.hala-samples { width: 100%; border-collapse: collapse; table-layout: fixed; }
.hala-samples td, .hala-samples th { border: 1px solid #d1d5db; padding: 6px; vertical-align: top; }
.hala-kv th { text-align: left; padding-right: 12px; font-weight: 600; }
.demo-label { color: #b45309; font-weight: 600; }
.hala-report { border-collapse: collapse; }
.hala-report td, .hala-report th { border: 1px solid #d1d5db; padding: 4px 10px; text-align: right; }
.hala-report th:first-child { text-align: left; }
.hala-note { color: #92400e; }
.chat-view { display: flex; flex-direction: column; gap: 8px; min-height: 120px; max-height: 520px; overflow-y: auto;
             padding: 8px; border: 1px solid #e5e7eb; border-radius: 8px; }
.bubble { max-width: 85%; padding: 8px 12px; border-radius: 12px; white-space: pre-wrap; unicode-bidi: plaintext;
          overflow-wrap: anywhere; }
.bubble[dir="rtl"] { direction: rtl; text-align: right; }
.bubble[dir="ltr"] { direction: ltr; text-align: left; }
.bubble.user { align-self: flex-end; background: #ccfbf1; }
.bubble.assistant { align-self: flex-start; background: #f3f4f6; }
.bidi-input textarea { unicode-bidi: plaintext; }
.hala-preview { table-layout: auto; }
.hala-preview td { max-width: 32em; overflow-wrap: anywhere; }
.review-source { border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px; min-height: 120px; font-size: 1.05em; }
.review-source[dir="rtl"] { direction: rtl; text-align: right; }
.review-source[dir="ltr"] { direction: ltr; text-align: left; }
#review-target textarea { font-size: 1.1em; }
.review-conflict { color: #b91c1c; font-weight: 600; }
.review-context th { text-align: left; padding-right: 10px; vertical-align: top; white-space: nowrap; }
.review-context tr.review-here td { background: #fef9c3; }
"""


def browser_secret(settings: Settings) -> str:
    """A per-workspace secret, so what the browser remembers (open job, …) survives a server restart."""
    path = settings.home / ".browser_secret"
    if not path.exists():
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


def build_app(settings: Settings) -> gr.Blocks:
    secret = browser_secret(settings)
    with gr.Blocks(title="Hala Workbench") as demo:
        gr.Markdown("# Hala Workbench\nTranslate-and-tune for Arabic: merge, run, track.")
        with gr.Tabs():
            with gr.Tab("Home", id="home"):
                home.build(demo, settings)
            with gr.Tab("Corpus", id="corpus") as corpus_tab:
                corpus.build(demo, settings, corpus_tab)
            with gr.Tab("Translate", id="translate") as translate_tab:
                translate.build(demo, settings, translate_tab)
            with gr.Tab("Review", id="review") as review_tab:
                review.build(demo, settings, review_tab, secret)
            with gr.Tab("Train", id="train") as train_tab:
                train.build(demo, settings, train_tab)
            with gr.Tab("Merge", id="merge") as merge_tab:
                merge.build(demo, settings, merge_tab)
            with gr.Tab("Quantize", id="quantize") as quantize_tab:
                quantize.build(demo, settings, quantize_tab)
            with gr.Tab("Evaluate", id="evaluate") as evaluate_tab:
                evaluate.build(demo, settings, evaluate_tab)
            with gr.Tab("Leaderboard", id="leaderboard") as leaderboard_tab:
                leaderboard.build(demo, settings, leaderboard_tab)
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat.build(demo, settings, chat_tab)
            with gr.Tab("Runs", id="runs"):
                runs.build(demo, settings, secret)
            with gr.Tab("Artifacts", id="artifacts") as artifacts_tab:
                artifacts.build(demo, settings, artifacts_tab)
            with gr.Tab("Users", id="users"):
                users.build(demo, settings)
    return demo
