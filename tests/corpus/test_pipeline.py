"""End to end on the real sample data: import Alpaca and NTREX → translate with the demo model in real jobs →
filters → chrF++/BLEU → review → export (SFT jsonl/parquet/hf, pairs) → load with ``datasets`` → card and lineage.

The demo model has random weights: the assertions are about mechanics, never about the quality of its text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db import review
from db.artifacts import lineage
from db.corpora import flag_counts
from db.models import CorpusRow, Job, Segment, Translation, TranslationRun
from db.session import dispose_engines, read_scope, session_scope
from hala_core.filters import FLAGS
from hala_core.settings import Settings, load_settings
from hala_core.translation import HALA_TRANSLATOR_TEMPLATE
from jobs import queue
from jobs.precheck import precheck
from tests.corpus.conftest import ALPACA, NTREX, cli, jobs_final, metrics, needs_data, register_demo
from tests.support.workspace import WorkerProcs, wait_for
from workbench import corpus_ops
from workbench.bootstrap import open_workspace

pytestmark = [needs_data, pytest.mark.slow]

MODEL = "demo-lfm2-a"
GEN = {"max_new_tokens": 12, "batch_size": 16, "commit_every": 32, "device": "cpu", "dtype": "float32"}
EDITS = {1: "اكتب ثلاث نصائح للحفاظ على الصحة", 3: "صف تصميم الموقع الإلكتروني بإيجاز"}
ACCEPTED_ROWS = (0, 2, 4)
REJECTED_ROW = 5
PARTIAL_ROW = 6


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, demo_models_dir: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """Import both corpora and run three translate jobs on one real worker process."""
    root = tmp_path_factory.mktemp("pipeline")
    settings = open_workspace(load_settings(home=root / "hala_home", db_url=f"sqlite:///{root / 'hala_home/hala.db'}"))
    register_demo(settings, demo_models_dir)
    imported = {"alpaca": corpus_ops.import_file(settings, str(ALPACA), "alpaca60", limit=60),
                "ntrex": corpus_ops.import_file(settings, str(NTREX), "ntrex40", limit=40)}
    specs = {"alpaca": {"kind": "translate", "corpus": "alpaca60", "model": MODEL, "name": "demo-a", **GEN},
             "ntrex": {"kind": "translate", "corpus": "ntrex40", "model": MODEL, "name": "demo-a", **GEN},
             "sampled": {"kind": "translate", "corpus": "ntrex40", "model": MODEL, "name": "sampled", "limit": 20,
                         **GEN, "temperature": 0.8, "repetition_penalty": 1.3}}
    jobs: dict[str, int] = {}
    for key, raw in specs.items():
        with read_scope(settings.db_url) as s:
            spec = precheck(s, settings, raw)
        with session_scope(settings.db_url) as s:
            jobs[key] = queue.enqueue(s, spec).id
    workers = WorkerProcs(settings, root)
    workers.start(max_jobs=2)
    try:
        wait_for(lambda: jobs_final(settings, list(jobs.values())), timeout=300, what="three translate jobs")
    finally:
        workers.stop_all()
    with read_scope(settings.db_url) as s:
        status = {k: (s.get(Job, j).status, s.get(Job, j).error) for k, j in jobs.items()}
        runs = {(r.corpus_id, r.name): r for r in s.scalars(select(TranslationRun))}
    assert all(st == "succeeded" for st, _ in status.values()), status
    yield {"settings": settings, "imported": imported, "jobs": jobs, "runs": runs, "root": root}
    dispose_engines()


def _run(p: dict[str, Any], corpus: str, name: str) -> TranslationRun:
    with read_scope(p["settings"].db_url) as s:
        from db.corpora import get_run

        return get_run(s, corpus, name)


def _translations(settings: Settings, run_id: int) -> list[tuple[int, int, Translation, Segment]]:
    """(row idx, segment id, translation, segment) in corpus order."""
    with read_scope(settings.db_url) as s:
        q = (select(CorpusRow.idx, Segment.id, Translation, Segment)
             .join(Segment, Segment.row_id == CorpusRow.id)
             .join(Translation, (Translation.segment_id == Segment.id) & (Translation.run_id == run_id))
             .order_by(CorpusRow.idx, Segment.field_idx, Segment.part))
        return [tuple(r) for r in s.execute(q)]


def test_imports_read_the_real_files_with_their_licences(pipeline):
    a, n = pipeline["imported"]["alpaca"], pipeline["imported"]["ntrex"]
    assert a["rows"] == 60 and a["format"] == "alpaca" and a["licence"] == "CC-BY-NC-4.0" and a["segments"] > 60
    assert n["rows"] == 40 and n["format"] == "parallel" and n["licence"] == "CC-BY-SA-4.0"
    assert n["references"] == "yes" and n["segments"] == 40
    for key, corpus in (("alpaca", "alpaca60"), ("ntrex", "ntrex40")):
        run = _run(pipeline, corpus, "demo-a")
        assert run.status == "done" and run.n_total == pipeline["imported"][key]["segments"]
        assert len(_translations(pipeline["settings"], run.id)) == run.n_total


def test_filters_flag_the_random_weight_output(pipeline):
    settings = pipeline["settings"]
    for corpus in ("alpaca60", "ntrex40"):
        run = _run(pipeline, corpus, "demo-a")
        rows = _translations(settings, run.id)
        flagged = [t for _, _, t, _ in rows if t.flags]
        assert len(flagged) >= 0.8 * len(rows), f"{corpus}: only {len(flagged)}/{len(rows)} flagged"
        for _, _, t, seg in rows:
            names = [f for f in t.flags.split(",") if f]
            assert set(names) <= set(FLAGS)
            assert t.passed is (not names)
            if seg.text.strip() and not t.text.strip():
                assert "empty" in names, (seg.text, t.text)
            assert set(t.scores) >= {"script_share", "length_ratio", "repetition", "empty"}
        with read_scope(settings.db_url) as s:
            counts = flag_counts(s, run.id)
        assert counts.get("passed", 0) == len(rows) - len(flagged)
        assert sum(v for k, v in counts.items() if k in ("empty", "wrong_script")) >= 0.8 * len(rows)


def test_ntrex_run_stores_chrf_and_bleu_in_the_run_and_as_job_metrics(pipeline):
    run = _run(pipeline, "ntrex40", "demo-a")
    job_id = pipeline["jobs"]["ntrex"]
    assert set(run.scores) >= {"chrf++", "bleu"} and run.scores["n_fields"] == 40
    m = metrics(pipeline["settings"], job_id)
    for key in ("chrf++", "bleu"):
        assert 0.0 <= run.scores[key] <= 100.0
        assert m[key] == [pytest.approx(run.scores[key])]
    assert m["new_segments"] == [40.0]
    alpaca_run = _run(pipeline, "alpaca60", "demo-a")  # no references: no scores
    assert "chrf++" not in alpaca_run.scores and "chrf++" not in metrics(pipeline["settings"],
                                                                          pipeline["jobs"]["alpaca"])


def test_sampling_settings_reach_the_engine(pipeline):
    settings = pipeline["settings"]
    sampled_run, greedy_run = _run(pipeline, "ntrex40", "sampled"), _run(pipeline, "ntrex40", "demo-a")
    assert sampled_run.settings == {"max_new_tokens": 12, "temperature": 0.8, "top_p": 1.0,
                                    "repetition_penalty": 1.3}
    assert sampled_run.status == "partial"  # limit 20 of 40
    sampled = {sid: t.text for _, sid, t, _ in _translations(settings, sampled_run.id)}
    greedy = {sid: t.text for _, sid, t, _ in _translations(settings, greedy_run.id)}
    assert len(sampled) == 20
    non_empty = [t for t in sampled.values() if t.strip()]
    assert len(non_empty) >= 15, sampled
    assert len(set(non_empty)) >= 0.9 * len(non_empty), "sampled outputs vary"
    differ = sum(1 for sid, text in sampled.items() if text != greedy[sid])
    assert differ >= 15, "sampling gives other text than greedy decoding on the same segments"


@pytest.fixture(scope="module")
def reviewed(pipeline) -> dict[str, Any]:
    """Review the Alpaca translation: accept rows 0, 2, 4; edit the instruction of rows 1 and 3 (Arabic), accept
    the rest of them; reject one segment of row 5; review only part of row 6."""
    settings = pipeline["settings"]
    run = _run(pipeline, "alpaca60", "demo-a")
    rows = _translations(settings, run.id)
    by_row: dict[int, list[tuple[Translation, Segment]]] = {}
    for idx, _, t, seg in rows:
        by_row.setdefault(idx, []).append((t, seg))
    for idx in EDITS:
        assert by_row[idx][0][1].field_name == "instruction" and len(
            [seg for _, seg in by_row[idx] if seg.field_idx == 0]) == 1
    with session_scope(settings.db_url) as s:
        for idx in (*ACCEPTED_ROWS, *EDITS, REJECTED_ROW, PARTIAL_ROW):
            for n, (t, _) in enumerate(by_row[idx]):
                version = review.item(s, t.id)["version"]
                if idx in EDITS and n == 0:
                    review.save(s, t.id, "amira", "edit", version, text=EDITS[idx])
                elif idx == REJECTED_ROW and n == len(by_row[idx]) - 1:
                    review.save(s, t.id, "amira", "reject", version, reason="nonsense")
                elif idx == PARTIAL_ROW and n > 0:
                    break
                else:
                    review.save(s, t.id, "amira", "accept", version)
    # the rows to expect in a reviewed export, from the db directly: every segment accepted or edited
    with read_scope(settings.db_url) as s:
        statuses: dict[int, set[str]] = {}
        for idx, status in s.execute(select(CorpusRow.idx, Translation.status)
                                     .join(Segment, Segment.row_id == CorpusRow.id)
                                     .join(Translation, (Translation.segment_id == Segment.id)
                                           & (Translation.run_id == run.id))):
            statuses.setdefault(idx, set()).add(status)
    expected = sorted(i for i, st in statuses.items() if st <= {"accepted", "edited"})
    assert expected == sorted((*ACCEPTED_ROWS, *EDITS))
    return {"run": run, "expected": expected, "alpaca": json.loads(ALPACA.read_text(encoding="utf-8"))[:60]}


def _load_jsonl(path: str, cache: Path):
    from datasets import load_dataset

    return load_dataset("json", data_files=path, split="train", cache_dir=str(cache))


def _check_sft(records: list[dict[str, Any]], reviewed: dict[str, Any]) -> None:
    expected = reviewed["expected"]
    assert [r["id"] for r in records] == [f"alpaca60-{i}" for i in expected]
    assert f"alpaca60-{REJECTED_ROW}" not in {r["id"] for r in records}
    alpaca = reviewed["alpaca"]
    for r in records:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert [m["role"] for m in r["source_messages"]] == ["user", "assistant"]
        assert r["language"] == "ar"
        idx = int(r["id"].rsplit("-", 1)[1])
        assert r["source_messages"][0]["content"].startswith(alpaca[idx]["instruction"].strip())
        assert r["source_messages"][1]["content"] == alpaca[idx]["output"].strip()
    for idx, text in EDITS.items():
        [rec] = [r for r in records if r["id"] == f"alpaca60-{idx}"]
        assert rec["messages"][0]["content"].startswith(text)


def _check_card(card_path: str, licence: str = "CC-BY-NC-4.0") -> str:
    card = Path(card_path).read_text(encoding="utf-8")
    assert card.startswith("---\n") and f"license: {licence.lower()}" in card
    assert f"**Licence:** {licence}" in card
    assert "alpaca60" in card and MODEL in card
    return card


def _check_lineage(settings: Settings, artifact_id: int) -> None:
    with read_scope(settings.db_url) as s:
        names = {(a["kind"], a["name"]) for a in lineage(s, artifact_id)}
    assert ("dataset", "corpus-alpaca60") in names and ("model", MODEL) in names


def test_export_sft_jsonl_from_the_cli_loads_with_datasets(pipeline, reviewed, tmp_path: Path):
    settings = pipeline["settings"]
    out = tmp_path / "sft.jsonl"
    proc = cli(settings, "corpus", "export", "alpaca60", "--format", "jsonl", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["path"] == str(out) and info["records"] == len(reviewed["expected"])
    assert info["counts"]["kept"] == len(reviewed["expected"]) and info["counts"]["rejected"] == 1
    assert info["counts"]["rows"] == 60 and info["counts"]["unreviewed"] == 60 - len(reviewed["expected"]) - 1
    ds = _load_jsonl(str(out), tmp_path / "cache")
    assert ds.num_rows == len(reviewed["expected"])
    _check_sft(list(ds), reviewed)
    card = _check_card(info["card"])
    assert "| rejected | 1 |" in card
    _check_lineage(settings, info["artifact_id"])


def test_export_sft_parquet_and_hf_folder(pipeline, reviewed, tmp_path: Path):
    from datasets import Dataset, load_from_disk

    settings = pipeline["settings"]
    pq = corpus_ops.export(settings, "alpaca60", fmt="parquet", out=tmp_path / "sft.parquet",
                           name="alpaca60-sft-parquet")
    ds = Dataset.from_parquet(pq["path"], cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == pq["records"] == len(reviewed["expected"])
    _check_sft(list(ds), reviewed)
    _check_card(pq["card"])
    _check_lineage(settings, pq["artifact_id"])

    hf = corpus_ops.export(settings, "alpaca60", fmt="hf")  # default: a folder in the workspace's datasets/
    assert Path(hf["path"]).parent == settings.datasets_dir
    loaded = load_from_disk(hf["path"])
    assert loaded.num_rows == len(reviewed["expected"])
    _check_sft(list(loaded), reviewed)
    assert Path(hf["card"]) == Path(hf["path"]) / "README.md"
    _check_card(hf["card"])
    _check_lineage(settings, hf["artifact_id"])


def test_export_pairs_in_both_directions_in_the_translator_template(pipeline, reviewed, tmp_path: Path):
    settings = pipeline["settings"]
    info = corpus_ops.export(settings, "alpaca60", kind="pairs", fmt="jsonl", out=tmp_path / "pairs.jsonl")
    ds = _load_jsonl(info["path"], tmp_path / "cache")
    pairs = list(ds)
    assert len(pairs) == info["records"] > 0
    assert {p["direction"] for p in pairs} == {"en-ar", "ar-en"}
    names = {"en": "English", "ar": "Arabic"}
    for p in pairs:
        src, tgt = p["direction"].split("-")
        text = p["prompt"][len(f"### Translate {names[src]} to {names[tgt]}\n"):-len(f"\n### {names[tgt]}\n")]
        assert p["prompt"] == HALA_TRANSLATOR_TEMPLATE.format(src_lang=names[src], tgt_lang=names[tgt], text=text)
        assert [m["role"] for m in p["messages"]] == ["user", "assistant"]
        assert p["messages"][1]["content"] == p["completion"]
        assert int(p["id"].split("-")[1]) in reviewed["expected"]
    alpaca = reviewed["alpaca"]
    for idx, edit in EDITS.items():
        english = alpaca[idx]["instruction"].strip()
        en_ar = [p for p in pairs if p["direction"] == "en-ar" and p["completion"] == edit]
        ar_en = [p for p in pairs if p["direction"] == "ar-en" and p["completion"] == english]
        assert len(en_ar) == 1 and len(ar_en) == 1
        assert en_ar[0]["prompt"] == HALA_TRANSLATOR_TEMPLATE.format(src_lang="English", tgt_lang="Arabic",
                                                                     text=english)
        assert ar_en[0]["prompt"] == HALA_TRANSLATOR_TEMPLATE.format(src_lang="Arabic", tgt_lang="English",
                                                                     text=edit)
    card = _check_card(info["card"])
    assert "task_categories: [translation]" in card
    _check_lineage(settings, info["artifact_id"])


class _SilentEngine:
    """An engine whose translator writes ``out`` for every prompt (to pin down what the job stores)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def tokenizer(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * len(t.split()) for t in texts]}

    def generate(self, prompts: list[str], settings: Any) -> list[str]:
        return [self.out] * len(prompts)


def test_the_flags_a_job_stores_are_the_flags_its_thresholds_give():
    from hala_core import filters
    from hala_core.segment import protect
    from hala_core.specs import TranslateSpec
    from hala_core.translate import SegmentToTranslate, translate_items

    spec = TranslateSpec(corpus="c", model="m", template="hala-translator", max_new_tokens=8)
    masked, spans = protect("Sincerely,\n[Your Name]")
    url_masked, url_spans = protect("See https://example.com/a for the details.")
    assert spans and url_spans
    cases = [  # (translator output, thresholds, segment)
        ("", filters.FilterThresholds(), SegmentToTranslate(1, masked, spans, False, None)),
        ("انظر للتفاصيل.", filters.FilterThresholds(check_preserved=False),
         SegmentToTranslate(2, url_masked, url_spans, False, None)),
    ]
    for out, th, seg in cases:
        [item] = translate_items(_SilentEngine(out), [seg], spec, th)
    assert item["flags"] == filters.flags(item["scores"], th), (out, th, item["flags"])
