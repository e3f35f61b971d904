"""The benchmark registry: OALL v2 mapping onto lm-eval tasks, local benchmarks from files, name resolution and
the can-it-run-here checks."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import yaml

from hala_core import benchmarks as bm
from hala_core.benchmarks import (
    BENCHMARKS,
    OALL_V2,
    add_local_benchmark,
    check_runnable,
    ensure_builtin,
    headline_metric,
    hub_reachable,
    list_local_benchmarks,
    resolve_benchmarks,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
EXAMS = DATA / "exams_ar" / "exams_multilingual_test_arabic.jsonl"
needs_exams = pytest.mark.skipif(not EXAMS.is_file(), reason="sample data folder not present")


# --------------------------------------------------------------------------- the registry

def test_oall_v2_suite_maps_to_pinned_lm_eval_tasks():
    import lm_eval
    from lm_eval.tasks import TaskManager

    assert [b.title for b in OALL_V2] == ["AlGhafa", "ArabicMMLU", "EXAMS", "MadinahQA", "AraTrust", "ArbMMLU-HT"]
    assert lm_eval.__version__ == bm.LM_EVAL_PINNED
    root = bm.lm_eval_tasks_dir()
    for b in OALL_V2:
        assert b.needs_hub and b.kind == "mcq" and b.suite == "oall-v2" and b.source and b.description
        if not b.tasks:  # AraTrust: nothing in lm-eval implements it, and it says so
            assert "no implementation" in b.description and not b.runnable
            continue
        assert set(b.versions) == set(b.tasks)
        # only the pinned folders are indexed (what a job does), and every task is found there
        tm = TaskManager(include_path=[str(root / d) for d in b.task_dirs], include_defaults=False)
        for task in b.tasks:
            entry = tm.task_index.get(task)
            assert entry is not None, f"{b.name}: lm-eval task {task} not in {b.task_dirs}"
            assert str(entry.cfg["metadata"]["version"]) == b.versions[task], f"{task} version drifted"
            leaves = bm._leaf_entries(tm.task_index, task)
            assert leaves and all(not bm._cfg_is_local(e.cfg) for e in leaves)  # their data lives on the hub
            assert all("/" in str(e.cfg.get("dataset_path")) for e in leaves)
        if b.stand_in:
            assert "stand" in b.description or "instead" in b.stand_in
    assert bm.SUITES["oall-v2"] == tuple(b.name for b in OALL_V2)


def test_builtins_are_offline():
    for name in ("exams_ar", "ntrex_en_ar", "ntrex_ar_en"):
        b = BENCHMARKS[name]
        assert not b.needs_hub and b.licence == "CC-BY-SA-4.0"
    assert BENCHMARKS["exams_ar"].kind == "mcq" and BENCHMARKS["exams_ar"].headline == "acc_norm"
    assert BENCHMARKS["ntrex_en_ar"].kind == "translation" and BENCHMARKS["ntrex_en_ar"].headline == "chrf++"
    assert BENCHMARKS["ntrex_ar_en"].direction == "ar-en"
    assert headline_metric("arabicmmlu") == "acc" and headline_metric("ArbMMLU-HT") == "acc_norm"
    assert headline_metric("nothing-like-it") is None


def test_resolve_names_suites_aliases(tmp_path):
    got = resolve_benchmarks(["oall-v2", "EXAMS_AR", "ArbMMLU-HT", "ntrex_en_ar"], tmp_path, allow_raw=False)
    assert [b.name for b in got] == ["alghafa", "arabicmmlu", "exams", "madinahqa", "aratrust", "arbmmlu_ht",
                                     "exams_ar", "ntrex_en_ar"]


def test_unknown_name_lists_close_matches_and_raw_lm_eval_names_resolve(tmp_path):
    with pytest.raises(ValueError) as err:
        resolve_benchmarks(["exams_arr"], tmp_path)
    msg = str(err.value)
    assert "unknown benchmark 'exams_arr'" in msg and "close matches: exams_ar" in msg
    assert "available benchmarks:" in msg and "ntrex_en_ar" in msg and "alghafa" in msg
    # a raw lm-eval task (found lazily in lm-eval's index, cached): its data is on the hub
    raw = resolve_benchmarks(["arabic_exams"], tmp_path)[0]
    assert raw.raw and raw.needs_hub and raw.tasks == ("arabic_exams",) and raw.yaml_dirs
    assert raw.versions == {"arabic_exams": "1.0"}


# --------------------------------------------------------------------------- local benchmarks

@needs_exams
def test_exams_file_with_dotted_mapping(tmp_path):
    lb = add_local_benchmark(tmp_path, "my_exams", EXAMS, question="question.stem",
                             choices="question.choices[].text", answer="answerKey", licence="CC-BY-SA-4.0",
                             source="EXAMS")
    assert lb.rows == 562 and lb.folder == tmp_path / "benchmarks" / "my_exams"
    rows = [json.loads(x) for x in lb.data_path.read_text(encoding="utf-8").splitlines()]
    first = json.loads(EXAMS.read_text(encoding="utf-8").splitlines()[0])
    assert set(rows[0]) == {"question", "choices", "answer"}
    assert rows[0]["question"] == first["question"]["stem"]
    assert rows[0]["choices"] == [c["text"] for c in first["question"]["choices"]]
    assert rows[0]["answer"] == "ABCD".index(first["answerKey"])
    cfg = yaml.safe_load(lb.yaml_path.read_text(encoding="utf-8"))
    assert cfg["task"] == "my_exams" and cfg["dataset_path"] == "json" and cfg["test_split"] == "test"
    assert cfg["dataset_kwargs"]["data_files"]["test"] == str(lb.data_path.resolve())
    assert Path(cfg["dataset_kwargs"]["data_files"]["test"]).is_absolute()
    assert cfg["output_type"] == "multiple_choice" and cfg["metadata"] == {"version": 1.0}
    assert [m["metric"] for m in cfg["metric_list"]] == ["acc", "acc_norm"]
    meta = json.loads((lb.folder / "benchmark.json").read_text(encoding="utf-8"))
    assert meta["rows"] == 562 and meta["licence"] == "CC-BY-SA-4.0" and meta["mapping"]["answer_format"] == "letter"
    assert [x.name for x in list_local_benchmarks(tmp_path)] == ["my_exams"]
    assert resolve_benchmarks(["my_exams"], tmp_path, allow_raw=False)[0].local

    # lm-eval reads the YAML as written: the prompt has the lettered choices and the Arabic cue
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=str(lb.folder), include_defaults=False).load(["my_exams"])["tasks"]["my_exams"]
    doc = task.test_docs()[0]
    text = task.doc_to_text(doc)
    assert text.startswith(rows[0]["question"].strip()) and text.endswith("الإجابة:")
    assert f"أ. {rows[0]['choices'][0]}" in text and f"د. {rows[0]['choices'][3]}" in text
    assert task.doc_to_choice(doc) == ["أ", "ب", "ج", "د"] and task.doc_to_target(doc) == rows[0]["answer"]

    with pytest.raises(ValueError, match="already exists"):
        add_local_benchmark(tmp_path, "my_exams", EXAMS, "question.stem", "question.choices[].text", "answerKey")
    with pytest.raises(ValueError, match="taken by a registry benchmark"):
        add_local_benchmark(tmp_path, "exams_ar", EXAMS, "question.stem", "question.choices[].text", "answerKey")


def _write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_with_letter_columns(tmp_path):
    src = _write_csv(tmp_path / "quiz.csv", ["question", "A", "B", "C", "D", "answer"], [
        ["ما عاصمة مصر؟", "القاهرة", "دمشق", "بغداد", "عمّان", "A"],
        ["كم يوما في الأسبوع؟", "خمسة", "ستة", "سبعة", "ثمانية", "c"],
        ["ما لون السماء؟", "أخضر", "أزرق", "أحمر", "", "B"],  # 3 choices: the empty D column is dropped
    ])
    lb = add_local_benchmark(tmp_path / "ws", "quiz", src, question="question", choices="A,B,C,D", answer="answer")
    rows = [json.loads(x) for x in lb.data_path.read_text(encoding="utf-8").splitlines()]
    assert [r["answer"] for r in rows] == [0, 2, 1]
    assert rows[2]["choices"] == ["أخضر", "أزرق", "أحمر"]
    assert lb.mapping["choices"] == "A,B,C,D" and lb.meta["answer_counts"] == {"A": 1, "B": 1, "C": 1}


@pytest.mark.parametrize("answers, fmt", [(["1", "0"], "index"), (["دمشق", "ستة"], "text"), (["ب", "أ"], "letter")])
def test_answers_as_index_text_or_arabic_letter(tmp_path, answers, fmt):
    src = tmp_path / "q.json"
    src.write_text(json.dumps([
        {"q": "ما عاصمة سوريا؟", "opts": ["القاهرة", "دمشق", "بغداد"], "gold": answers[0]},
        {"q": "كم يوما في الأسبوع؟", "opts": ["ستة", "سبعة"], "gold": answers[1]},
    ], ensure_ascii=False), encoding="utf-8")
    lb = add_local_benchmark(tmp_path / "ws", "q", src, question="q", choices="opts", answer="gold")
    assert [json.loads(x)["answer"] for x in lb.data_path.read_text(encoding="utf-8").splitlines()] == [1, 0]
    assert lb.mapping["answer_format"] == fmt


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _rec(stem: str = "سؤال؟", texts: tuple[str, ...] = ("أ1", "ب2", "ج3", "د4"), key: str = "A") -> dict:
    return {"question": {"stem": stem, "choices": [{"text": t, "label": "ABCDEF"[i]} for i, t in enumerate(texts)]},
            "answerKey": key}


EXAMS_MAPPING = {"question": "question.stem", "choices": "question.choices[].text", "answer": "answerKey"}


def test_missing_field_says_which_and_lists_the_fields(tmp_path):
    bad = _rec()
    bad["question"] = {"stm": "typo", "choices": bad["question"]["choices"]}
    src = _jsonl(tmp_path / "b.jsonl", [_rec(), bad])
    with pytest.raises(ValueError) as err:
        add_local_benchmark(tmp_path / "ws", "b", src, **EXAMS_MAPPING)
    msg = str(err.value)
    assert "line 2" in msg and "'question.stem' is missing" in msg and "stm" in msg
    assert "the fields of this file: question, answerKey" in msg
    src2 = _jsonl(tmp_path / "c.jsonl", [{"question": {"stem": "x", "choices": [{"text": "a"}, {"text": "b"}]}}])
    with pytest.raises(ValueError, match=r"line 1: the answer field 'answerKey' is missing.*fields of this file: "
                                         r"question"):
        add_local_benchmark(tmp_path / "ws", "c", src2, **EXAMS_MAPPING)
    src3 = _write_csv(tmp_path / "d.csv", ["question", "A", "B", "answer"], [["q", "x", "y", "A"]])
    with pytest.raises(ValueError, match=r"d.csv line 2: the choice field 'C' is missing; the fields of this "
                                         r"file: question, A, B, answer"):
        add_local_benchmark(tmp_path / "ws", "d", src3, question="question", choices="A,B,C", answer="answer")
    assert not (tmp_path / "ws" / "benchmarks" / "b").exists()  # nothing half-written


@pytest.mark.parametrize("texts, count", [(("وحيد",), 1), (tuple(f"خيار {i}" for i in range(6)), 6)])
def test_choice_count_must_be_two_to_five(tmp_path, texts, count):
    src = _jsonl(tmp_path / "n.jsonl", [_rec(), _rec(texts=texts)])
    with pytest.raises(ValueError, match=rf"line 2: {count} choice\(s\); a question needs 2 to 5 choices"):
        add_local_benchmark(tmp_path / "ws", "n", src, **EXAMS_MAPPING)


def test_answer_outside_the_choices_names_both(tmp_path):
    src = _jsonl(tmp_path / "o.jsonl", [_rec(key="B"), _rec(key="C"), _rec(texts=("نعم", "لا", "ربما"), key="E")])
    with pytest.raises(ValueError) as err:
        add_local_benchmark(tmp_path / "ws", "o", src, **EXAMS_MAPPING)
    msg = str(err.value)
    assert "line 3" in msg and "answer 'E' is outside the choices" in msg
    assert "A) نعم; B) لا; C) ربما" in msg


def test_empty_file_and_bad_format(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no rows"):
        add_local_benchmark(tmp_path / "ws", "e", empty, **EXAMS_MAPPING)
    only_header = _write_csv(tmp_path / "h.csv", ["question", "A", "B", "answer"], [])
    with pytest.raises(ValueError, match="has no rows"):
        add_local_benchmark(tmp_path / "ws", "h", only_header, question="question", choices="A,B", answer="answer")
    odd = tmp_path / "x.xml"
    odd.write_text("<q/>", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot tell the format"):
        add_local_benchmark(tmp_path / "ws", "x", odd, **EXAMS_MAPPING)
    with pytest.raises(ValueError, match="not allowed"):
        add_local_benchmark(tmp_path / "ws", "bad name", empty, **EXAMS_MAPPING)


# --------------------------------------------------------------------------- built-ins and runnability

@needs_exams
def test_ensure_builtin_builds_exams_once(tmp_path):
    with pytest.raises(ValueError, match="sample data"):
        ensure_builtin("exams_ar", tmp_path, None)
    folder = ensure_builtin("exams_ar", tmp_path, DATA)
    assert folder == tmp_path / "benchmarks" / "exams_ar" and (folder / "exams_ar.yaml").is_file()
    stamp = (folder / "data.jsonl").stat().st_mtime_ns
    assert ensure_builtin("exams_ar", tmp_path, None) == folder  # already built: no data folder needed
    assert (folder / "data.jsonl").stat().st_mtime_ns == stamp
    assert ensure_builtin("ntrex_en_ar", tmp_path, DATA) == DATA / "ntrex128_en_ar"
    with pytest.raises(ValueError, match="needs NTREX-128"):
        ensure_builtin("ntrex_ar_en", tmp_path, tmp_path)
    assert ensure_builtin("alghafa", tmp_path, DATA) is None


def test_hub_checks_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    assert hub_reachable() is False
    with pytest.raises(ValueError, match="benchmark alghafa needs the Hugging Face hub \\(its data lives there\\) "
                                         "and the hub cannot be reached from here"):
        check_runnable([BENCHMARKS["exams_ar"], BENCHMARKS["alghafa"]])
    with pytest.raises(ValueError, match="aratrust.*no implementation.*local benchmark"):
        check_runnable([BENCHMARKS["aratrust"]])
    check_runnable([BENCHMARKS["exams_ar"], BENCHMARKS["ntrex_en_ar"]])  # offline ones pass
    assert time.perf_counter() - t0 < 1.0


def test_hub_probe_never_hangs(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://10.255.255.1")  # unroutable: the probe must give up on time
    t0 = time.perf_counter()
    assert hub_reachable(timeout=0.5, use_cache=False) is False
    assert time.perf_counter() - t0 < 2.0
