"""The Corpus and Translate tabs: handler calls (import, preview, filters, export), roles over HTTP, and the whole
import → translate → scores path in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
from sqlalchemy import func, select

from db.corpora import CorpusStore
from db.models import Corpus, CorpusRow, Job, Segment
from db.session import dispose_engines, read_scope, session_scope
from hala_core.settings import Settings, load_settings
from tests.support.app_server import AppServer, add_user, make_workspace
from tests.ui.test_browser import login, open_tab, wait_text
from workbench import corpus_ops
from workbench.bootstrap import open_workspace
from workbench.tabs import corpus as corpus_tab
from workbench.tabs import translate as translate_tab

IMPORT_DEFAULTS = {"fmt": "auto", "mapping": "", "language": "en", "reference": "", "on_error": "abort",
                   "encoding": "", "max_tokens": 256, "keep_duplicates": False, "limit": 0, "licence": ""}


@pytest.fixture
def settings(tmp_path: Path):  # noqa: ANN201
    st = open_workspace(load_settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'hala.db'}"))
    yield st
    dispose_engines()


def do_import(settings: Settings, upload: str | None, name: str, path: str = "", **kw: object) -> str:
    a = {**IMPORT_DEFAULTS, **kw}
    return corpus_tab.import_action(settings, "layla", upload, path, a["fmt"], a["mapping"], a["language"],
                                    a["reference"], a["on_error"], a["encoding"], a["max_tokens"],
                                    a["keep_duplicates"], a["limit"], a["licence"], name)


def n_corpora(settings: Settings) -> int:
    with read_scope(settings.db_url) as s:
        return int(s.scalar(select(func.count(Corpus.id))) or 0)


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records)
                    + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ handler level


def test_preview_then_import_of_an_uploaded_file(settings, tmp_path):
    upload = write_jsonl(tmp_path / "my data.jsonl", [
        {"question": "What is the capital of Egypt?", "answer": "Cairo."},
        {"question": "ما هي عاصمة مصر؟", "answer": "القاهرة."},
        {"question": "What is the capital of Egypt?", "answer": "Cairo."},  # a duplicate
    ])
    html = corpus_tab.preview_action(settings, str(upload), "", "auto", "instruction=question, output=answer",
                                     "en", "", "")
    assert "<b>format</b> alpaca" in html and "no problems" in html
    # Arabic cells take the direction of their text; markup in cells is escaped
    assert '<td dir="auto" class="bidi">ما هي عاصمة مصر؟</td>' in html

    stats = do_import(settings, str(upload), "", mapping="instruction=question, output=answer")
    assert "imported <b>my-data</b>" in stats  # blank name: from the file name
    assert "<th>rows</th><td dir=\"auto\">2</td>" in stats and "duplicates skipped" in stats
    frame = corpus_tab.corpora_frame(settings)
    assert list(frame["corpus"]) == ["my-data"] and int(frame["rows"][0]) == 2
    # the upload was copied into the workspace (user paths must lie inside the allowed folders)
    assert list((settings.home / "uploads").rglob("my data.jsonl"))

    with pytest.raises(gr.Error, match="exists already"):
        do_import(settings, str(upload), "my-data", mapping="instruction=question, output=answer")
    with pytest.raises(gr.Error, match="outside the allowed folders"):
        do_import(settings, None, "etc", path="/etc/passwd")


def test_malformed_jsonl_with_abort_names_the_line_and_imports_nothing(settings, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "b"},
                                               {"instruction": "c", "output": "d"},
                                               '{"instruction": "broken',
                                               {"instruction": "e", "output": "f"}])
    with pytest.raises(gr.Error) as exc:
        do_import(settings, str(bad), "bad", on_error="abort")
    assert "line 3" in str(exc.value) and "on_error='skip'" in str(exc.value)
    assert n_corpora(settings) == 0

    preview = corpus_tab.preview_action(settings, str(bad), "", "auto", "", "en", "", "")
    assert "line 3" in preview  # the preview lists the problems instead of failing

    stats = do_import(settings, str(bad), "bad", on_error="skip")
    assert "skipped records" in stats and "line 3" in stats
    with read_scope(settings.db_url) as s:
        c = s.scalar(select(Corpus).where(Corpus.name == "bad"))
        assert (c.n_rows, c.n_problems) == (3, 1)


def test_bad_mapping_and_missing_file_are_clear_errors(settings):
    with pytest.raises(gr.Error, match="no file given"):
        do_import(settings, None, "x")
    with pytest.raises(gr.Error, match="instruction"):
        do_import(settings, None, "x", path=str(settings.home), mapping="nonsense")


@pytest.mark.skipif(load_settings().data_dir is None, reason="no ../shared/data here")
def test_sample_data_import_is_one_click_and_idempotent(settings):
    first = corpus_ops.import_sample_data(settings, "layla")
    assert "imported `alpaca-sample`: 500 rows" in first and "imported `ntrex-sample`: 200 rows" in first
    second = corpus_ops.import_sample_data(settings, "layla")
    assert "`alpaca-sample` was imported already" in second and "`ntrex-sample` was imported already" in second
    frame = corpus_tab.corpora_frame(settings)
    assert set(frame["corpus"]) == {"alpaca-sample", "ntrex-sample"}
    ntrex = frame[frame["corpus"] == "ntrex-sample"].iloc[0]
    assert ntrex["references"] == "yes" and ntrex["licence"] == "CC-BY-SA-4.0"
    choices = translate_tab.corpus_choices(settings)
    assert [v for _, v in choices] == ["ntrex-sample", "alpaca-sample"] and "with references" in choices[0][0]


def _fake_translation(settings: Settings, corpus: str, name: str = "demo-en-ar") -> int:
    """A stored translation with real filter scores: even rows good Arabic, odd rows copies of the English."""
    from hala_core.filters import FilterThresholds, flags, score

    store = CorpusStore(settings.db_url)
    info = store.open_run(corpus, name, model_ref="demo-lfm2-a", model_artifact_id=None, direction="en-ar",
                          template="chat", settings={}, job_id=None, double_share=0.0)
    with read_scope(settings.db_url) as s:
        segs = s.execute(select(Segment.id, Segment.text, Segment.verbatim, CorpusRow.idx)
                         .join(CorpusRow, CorpusRow.id == Segment.row_id)
                         .where(Segment.corpus_id == info["corpus_id"]).order_by(Segment.id)).all()
    items = []
    for sid, text, verbatim, row_idx in segs:
        out = "هذه ترجمة عربية جيدة للنص" if row_idx % 2 == 0 else text
        sc = score(text, out, "ar", verbatim=bool(verbatim))
        items.append({"segment_id": sid, "text": out, "n_tokens": 5, "scores": sc,
                      "flags": flags(sc, FilterThresholds(), verbatim=bool(verbatim))})
    store.save(info["run_id"], None, items, 0.0)
    store.finish(info["run_id"], {"chrf++": 12.5, "bleu": 3.25})
    return len(items)


@pytest.fixture
def translated(settings, tmp_path):  # noqa: ANN001, ANN201
    """A corpus ``qa`` of 6 rows with a stored translation ``demo-en-ar``: (key, translations)."""
    animals = ("cat", "dog", "horse", "camel", "falcon", "gazelle")
    upload = write_jsonl(tmp_path / "qa.jsonl", [
        {"instruction": f"Describe the {a} in one short sentence.", "output": f"The {a} is a fine animal."}
        for a in animals])
    do_import(settings, str(upload), "qa")
    return "qa/demo-en-ar", _fake_translation(settings, "qa")


def test_filter_charts_and_stored_thresholds(settings, translated):
    key, n = translated
    assert key in [v for _, v in corpus_tab.translation_choices(settings)]
    fig, summary, share, lo, hi, rep, pres = corpus_tab.filter_view(settings, key)
    assert f"{n} translations charted" in summary and (share, lo, hi, rep, pres) == (0.6, 0.3, 3.0, 0.5, True)
    assert [t.type for t in fig.data] == ["histogram", "histogram", "histogram", "bar"]
    bar = fig.data[3]
    assert "passed" in bar.x and "wrong_script" in bar.x
    with pytest.raises(gr.Error, match="min_length_ratio"):  # refused before anything is stored
        corpus_tab.thresholds_action(settings, key, 0.6, 2.0, 1.0, 0.5, True)
    with pytest.raises(gr.Error, match="choose a translation"):
        corpus_tab.thresholds_action(settings, None, 0.6, 0.3, 3.0, 0.5, True)


def test_apply_thresholds_reflags_the_translations(settings, translated):
    key, n = translated
    fig, *_ = corpus_tab.filter_view(settings, key)
    assert "wrong_script" in fig.data[3].x  # the English copies
    msg = corpus_tab.thresholds_action(settings, key, 0.0, 0.01, 100.0, 1.0, False)
    assert f"re-flagged {n} translations" in msg and "**0 changed**" not in msg
    fig, _, share, lo, hi, rep, pres = corpus_tab.filter_view(settings, key)
    assert (share, lo, hi, rep, pres) == (0.0, 0.01, 100.0, 1.0, False)  # stored on the corpus, read back
    assert "wrong_script" not in fig.data[3].x and "untranslated" in fig.data[3].x  # no script share needed now


def test_export_and_the_translations_table(settings, translated):
    key, n = translated
    out, download, card = corpus_tab.export_action(settings, "layla", key, "passed", "sft", "jsonl")
    assert "<b>3</b> records (SFT messages) written as jsonl" in out and "kept 3" in out
    path = Path(download["value"])
    assert download["visible"] is True and path.is_file() and path.is_relative_to(settings.home)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 3 and "هذه ترجمة" in json.dumps(records[0], ensure_ascii=False)
    assert card.startswith("```yaml\n") and "licence" in card.lower()
    out, download, _ = corpus_tab.export_action(settings, "layla", key, "passed", "pairs", "hf")
    assert download["visible"] is False and "bilingual pairs written as hf" in out
    with pytest.raises(gr.Error, match="nothing to export"):  # nothing reviewed yet
        corpus_tab.export_action(settings, "layla", key, "reviewed", "sft", "parquet")
    with pytest.raises(gr.Error, match="choose a translation"):
        corpus_tab.export_action(settings, "layla", None, "passed", "sft", "jsonl")

    row = translate_tab.runs_frame(settings, "qa").iloc[0]
    assert (row["translation"], row["chrF++"], row["BLEU"]) == ("demo-en-ar", 12.5, 3.25)
    assert row["done / total"] == f"{n} / {n}" and row["reviewed"] == 0 and row["flagged %"] == 50.0


def test_translate_spec_from_the_form():
    spec = translate_tab.build_spec("ntrex-sample", "demo-lfm2-a", "en-ar", "hala-translator", 8, 0, 1.0, 1.0, 4,
                                    16, 0, "")
    assert spec.limit is None and spec.run_name() == "demo-lfm2-a-en-ar" and spec.template == "hala-translator"
    assert "kind: translate" in spec.to_yaml()
    spec = translate_tab.build_spec("c", "/models/x/", "ar-en", "chat", 8, 0.7, 0.9, 1.1, 4, 16, 24, "mine")
    assert (spec.limit, spec.run_name(), spec.temperature) == (24, "mine", 0.7)
    with pytest.raises(ValueError, match="temperature"):
        translate_tab.build_spec("c", "m", "en-ar", "chat", 8, 9.0, 1.0, 1.0, 4, 16, 0, "")
    with pytest.raises(ValueError, match="choose a corpus"):
        translate_tab.build_spec("", "m", "en-ar", "chat", 8, 0, 1.0, 1.0, 4, 16, 0, "")
    with pytest.raises(ValueError, match="translation name"):
        translate_tab.build_spec("c", "m", "en-ar", "chat", 8, 0, 1.0, 1.0, 4, 16, 0, "bad name!")


# ------------------------------------------------------------------------------------------ the running app


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("corpus-tabs")
    settings = make_workspace(root / "home", demo_models_dir)
    add_user(settings, "layla", "researcher", "layla-password")
    add_user(settings, "amal", "annotator", "amal-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


IMPORT_ARGS = [None, "../shared/data/ntrex128_en_ar", "auto", "", "en", "", "abort", "", 256, False, 10, "", "sneaky"]
TRANSLATE_ARGS = ["ntrex-sample", "demo-lfm2-a", "en-ar", "chat", 8, 0, 1.0, 1.0, 8, 16, 24, "sneaky",
                  "transformers", 1, 0.9, 0, "auto", 0,  # engine, then the vLLM options
                  "local", "", 1, 0, 0, "", "", ""]  # where it runs: the executor and its Slurm resources


@pytest.mark.slow
def test_annotators_may_not_import_translate_or_change_thresholds(server):
    amal = server.login("amal", "amal-password")
    with session_scope(server.settings.db_url) as s:
        jobs_before = s.scalar(select(func.count(Job.id)))
    for api, args in (("import_corpus", IMPORT_ARGS), ("import_sample_data", []), ("translate", TRANSLATE_ARGS),
                      ("set_thresholds", ["ntrex-sample/x", 0.6, 0.3, 3.0, 0.5, True]),
                      ("export_corpus", ["ntrex-sample/x", "passed", "sft", "jsonl"])):
        event, data = server.call(amal, api, args)
        assert event == "error", (api, data)
        message = json.loads(data)["error"]
        assert "amal is annotator" in message and "admin or researcher" in message, (api, message)
    with session_scope(server.settings.db_url) as s:
        assert s.scalar(select(func.count(Job.id))) == jobs_before
        assert s.scalar(select(Corpus.id).where(Corpus.name == "sneaky")) is None


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(load_settings().data_dir is None, reason="no ../shared/data here")
def test_import_sample_data_then_translate_and_compare_in_the_browser(server, page):
    login(page, server.url, "layla", "layla-password")
    open_tab(page, "Corpus")
    page.locator("#corpus-import-samples").click()
    wait_text(page, "#corpus-samples-message", "ntrex-sample")
    wait_text(page, "#corpus-table", "ntrex-sample")
    assert "alpaca-sample" in page.locator("#corpus-table").inner_text()

    open_tab(page, "Translate")
    corpus_box = page.locator("#translate-corpus input").first
    corpus_box.click()
    corpus_box.fill("ntrex-sample")
    page.keyboard.press("Enter")
    page.locator("#translate-max-new input").fill("8")
    page.locator("#translate-limit input").fill("24")
    page.locator("#translate-batch input").fill("8")
    page.locator("#translate-run").click()
    wait_text(page, "#translate-job", "succeeded", timeout=120_000)
    assert "24/200" in page.locator("#translate-job").inner_text()
    wait_text(page, "#translate-result", "chrF++")
    page.locator("#translate-metrics .js-plotly-plot").wait_for()
    wait_text(page, "#translate-runs", "demo-lfm2-a-en-ar")
    runs_text = page.locator("#translate-runs").inner_text()
    assert "24 / 200" in runs_text and "partial" in runs_text

    with session_scope(server.settings.db_url) as s:
        job = s.scalar(select(Job).where(Job.kind == "translate").order_by(Job.id.desc()))
        scores = (job.result or {}).get("scores") or {}
        assert job.owner == "layla" and job.spec["limit"] == 24 and job.spec["max_new_tokens"] == 8
    assert f"{scores['chrf++']:.2f}" in page.locator("#translate-result").inner_text()

    # a refresh re-reads the latest job from the db
    page.reload()
    open_tab(page, "Translate")
    wait_text(page, "#translate-job", "succeeded")
