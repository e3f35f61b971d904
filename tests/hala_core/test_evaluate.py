"""The eval step with real lm-eval and the demo models: scores, per-sample records, reports and the clear errors."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from hala_core import benchmarks as bm
from hala_core.context import StopRequested
from hala_core.evaluate import evaluate_step, lm_eval_records, plan_lm_eval
from hala_core.specs import EvalSpec

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "exams_ar").is_dir() or not (DATA / "ntrex128_en_ar").is_dir(),
                                reason="sample data folder not present")


def _rows(ev: dict, benchmark: str, task: str | None = None) -> dict[str, dict]:
    return {r["metric"]: r for r in ev["results"] if r["benchmark"] == benchmark and r["task"] == (task or benchmark)}


def _check_mcq_consistency(ev: dict, benchmark: str, n: int) -> None:
    rows = _rows(ev, benchmark)
    samples = [s for s in ev["samples"] if s["benchmark"] == benchmark]
    assert rows["acc"]["n_samples"] == n == len(samples)
    assert sorted(s["doc_id"] for s in samples) == list(range(n))
    assert math.isclose(sum(s["correct"] for s in samples) / n, rows["acc"]["value"])
    assert math.isclose(sum(s["score"] for s in samples) / n, rows["acc_norm"]["value"])
    for s in samples:
        assert isinstance(s["prompt"], str) and s["prompt"].rstrip().endswith("الإجابة:")
        assert len(s["response"]) == len(s["choices"]) and all(isinstance(v, float) for v in s["response"])
        assert s["target"] in s["choices"]
        best = max(range(len(s["response"])), key=lambda i: s["response"][i])
        assert s["correct"] == (s["choices"][best] == s["target"])


@needs_data
def test_demo_model_on_exams_and_ntrex(demo_models_dir, fake_ctx):
    ctx = fake_ctx(models={"demo": demo_models_dir["demo-lfm2-a"]})
    ctx.data_dir = DATA
    spec = EvalSpec(models=("demo",), benchmarks=("exams_ar", "ntrex_en_ar"), limit=30, batch_size=16,
                    translation_max_new_tokens=16)
    evaluate_step(spec, ctx)

    assert len(ctx.evals) == 1
    ev = ctx.evals[0]
    assert ev["model_ref"] == "demo" and ev["model_artifact_id"] is None
    acc = _rows(ev, "exams_ar")
    assert set(acc) == {"acc", "acc_norm"}
    for r in acc.values():
        assert 0.0 <= r["value"] <= 1.0 and abs(r["value"] - 0.25) < 0.22  # random weights: near chance
        assert r["harness_version"] == "0.4.13" and r["task_version"] == "1.0" and r["num_fewshot"] == 0
        assert r["stderr"] is not None and r["stderr"] > 0
    _check_mcq_consistency(ev, "exams_ar", 30)

    tr = _rows(ev, "ntrex_en_ar")
    assert set(tr) == {"chrf++", "bleu"} and all(0.0 <= r["value"] <= 100.0 for r in tr.values())
    assert tr["chrf++"]["n_samples"] == 30 and tr["chrf++"]["harness_version"].startswith("sacrebleu")
    ts = [s for s in ev["samples"] if s["benchmark"] == "ntrex_en_ar"]
    assert len(ts) == 30 and all(isinstance(s["response"], str) and s["target"] and s["correct"] is None for s in ts)
    assert "Translate the following English text into Arabic" in ts[0]["prompt"]

    assert ctx.result["models"][0]["scores"] == {"exams_ar": acc["acc_norm"]["value"],
                                                 "ntrex_en_ar": tr["chrf++"]["value"]}
    assert ctx.result["headline"] == {"exams_ar": "acc_norm", "ntrex_en_ar": "chrf++"}
    assert ctx.progress_events[-1][:2] == (2, 2)
    assert {k for k, _, _ in ctx.metrics} == {"exams_ar acc_norm", "ntrex_en_ar chrf++"}
    rep = ctx.artifact("eval-job1-demo", "report")
    assert rep.metadata["scores"] == ctx.result["models"][0]["scores"] and rep.inputs == []
    saved = json.loads((rep.path / "results.json").read_text(encoding="utf-8"))
    assert saved["lm_eval"][0]["results"]["exams_ar"]["acc,none"] == acc["acc"]["value"]
    assert "samples" not in saved["lm_eval"][0] and saved["translation"][0]["pairs"] == 30
    assert (rep.path / "report.md").is_file()


def test_csv_benchmark_two_models(demo_models_dir, fake_ctx, tmp_path):
    rows = [("ما عاصمة مصر؟", "القاهرة", "دمشق", "بغداد", "A"), ("كم يوما في الأسبوع؟", "ستة", "سبعة", "ثمانية", "B"),
            ("ما لون السماء؟", "أخضر", "أزرق", "أحمر", "B"), ("أي حيوان يطير؟", "قطة", "سمكة", "نسر", "C")] * 3
    src = tmp_path / "quiz.csv"
    src.write_text("question,A,B,C,answer\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    ctx = fake_ctx()
    bm.add_local_benchmark(ctx.workspace, "quiz", src, question="question", choices="A,B,C", answer="answer",
                           choices_as="texts", licence="CC0-1.0")
    a_id = ctx.register_model("demo-a", demo_models_dir["demo-lfm2-a"], metadata={"demo": True})
    spec = EvalSpec(models=("demo-a", str(demo_models_dir["demo-lfm2-b"])), benchmarks=("quiz",))
    evaluate_step(spec, ctx)

    assert [e["model_ref"] for e in ctx.evals] == ["demo-a", str(demo_models_dir["demo-lfm2-b"])]
    assert ctx.evals[0]["model_artifact_id"] == a_id
    for ev in ctx.evals:
        _check_mcq_consistency(ev, "quiz", 12)
        s = next(x for x in ev["samples"] if x["doc_id"] == 3)
        assert s["choices"] == ["قطة", "سمكة", "نسر"] and s["target"] == "نسر"  # texts scored, not letters
        assert "ج. نسر" in s["prompt"]
    reports = {n for (k, n) in ctx.artifacts if k == "report"}
    assert reports == {"eval-job1-demo-a", "eval-job1-demo-lfm2-b"}
    assert ctx.artifact("eval-job1-demo-a", "report").inputs == [a_id]
    assert ctx.artifact("eval-job1-demo-a", "report").metadata["demo"] is True
    assert [m["model"] for m in ctx.result["models"]] == ["demo-a", str(demo_models_dir["demo-lfm2-b"])]


def test_hub_benchmark_offline_fails_fast(demo_models_dir, fake_ctx, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx = fake_ctx(models={"demo": demo_models_dir["demo-lfm2-a"]})
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"benchmark alghafa needs the Hugging Face hub \(its data lives there\) "
                                         r"and the hub cannot be reached from here"):
        evaluate_step(EvalSpec(models=("demo",), benchmarks=("alghafa", "exams_ar")), ctx)
    assert time.perf_counter() - t0 < 5.0
    assert ctx.evals == [] and ctx.result is None


def test_models_are_checked_before_anything_runs(demo_models_dir, fake_ctx, tmp_path):
    ctx = fake_ctx(models={"demo": demo_models_dir["demo-lfm2-a"]})
    ctx.data_dir = DATA
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"model '.*empty' cannot be loaded for evaluation: .*no config.json"):
        evaluate_step(EvalSpec(models=("demo", str(tmp_path / "empty")), benchmarks=("ntrex_en_ar",)), ctx)
    with pytest.raises(ValueError, match=r"model 'LiquidAI/LFM2-350M' looks like a hub id"):
        evaluate_step(EvalSpec(models=("LiquidAI/LFM2-350M",), benchmarks=("ntrex_en_ar",)), ctx)
    with pytest.raises(ValueError, match=r"model 'nope': unknown model 'nope'; known models: demo"):
        evaluate_step(EvalSpec(models=("nope",), benchmarks=("ntrex_en_ar",)), ctx)
    assert ctx.evals == [] and ctx.progress_events == []


@needs_data
def test_stop_before_the_first_unit(demo_models_dir, fake_ctx):
    ctx = fake_ctx(models={"demo": demo_models_dir["demo-lfm2-a"]}, stop=True)
    ctx.data_dir = DATA
    with pytest.raises(StopRequested):
        evaluate_step(EvalSpec(models=("demo",), benchmarks=("exams_ar",), limit=5), ctx)
    assert ctx.evals == []


@needs_data
def test_stop_between_units_keeps_what_was_done(demo_models_dir, fake_ctx):
    ctx = fake_ctx(models={"demo": demo_models_dir["demo-lfm2-a"]}, stop_after_checks=1)
    ctx.data_dir = DATA
    with pytest.raises(StopRequested, match="before evaluating demo on ntrex_en_ar"):
        evaluate_step(EvalSpec(models=("demo",), benchmarks=("exams_ar", "ntrex_en_ar"), limit=4), ctx)
    (ev,) = ctx.evals
    assert {r["benchmark"] for r in ev["results"]} == {"exams_ar"} and len(ev["samples"]) == 4
    assert ctx.result is None


def test_group_members_are_not_requested_twice():
    """ArabicMMLU (a group) and MadinahQA's stand-in (two of its subjects) in one lm-eval call."""
    from lm_eval.tasks import TaskManager

    benches = [bm.BENCHMARKS["arabicmmlu"], bm.BENCHMARKS["madinahqa"]]
    tm = TaskManager(include_path=[str(bm.lm_eval_tasks_dir() / "arabicmmlu")], include_defaults=False)
    calls, leaves = plan_lm_eval(benches, tm.task_index)
    assert calls == [["arabicmmlu"]]
    assert len(leaves["arabicmmlu"]) == 40 and "arabicmmlu_arabic_language_grammar" in leaves["arabicmmlu"]
    assert leaves["arabicmmlu_arabic_language_general"] == ["arabicmmlu_arabic_language_general"]


def test_benchmark_score_is_the_mean_over_its_tasks():
    """A several-task benchmark: its own row is the unweighted mean of its leaf tasks; lm-eval's group row kept."""
    b = bm.Benchmark(name="two", title="two", kind="mcq", tasks=("grp",), headline="acc_norm",
                     task_versions=(("grp", "2.0"),))
    res = {
        "results": {"t1": {"acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.6,
                           "acc_norm_stderr,none": 0.1},
                    "t2": {"acc,none": 0.25, "acc_stderr,none": 0.1, "acc_norm,none": 0.2,
                           "acc_norm_stderr,none": 0.1},
                    "grp": {"acc,none": 0.45, "acc_stderr,none": 0.08, "sample_len": 40}},
        "versions": {"t1": 1.0, "t2": 1.0, "grp": "2.0"}, "n-shot": {"t1": 0, "t2": 0, "grp": 0},
        "n-samples": {"t1": {"original": 30, "effective": 30}, "t2": {"original": 10, "effective": 10}},
        "configs": {"t1": {"output_type": "multiple_choice"}, "t2": {"output_type": "multiple_choice"}},
        "samples": {"t1": [], "t2": []},
    }
    results, samples, scores, used = lm_eval_records(res, [b], {"grp": ["t1", "t2"]}, "0.4.13")
    own = {r["metric"]: r for r in results if r["task"] == "two"}
    assert math.isclose(own["acc_norm"]["value"], 0.4) and math.isclose(own["acc"]["value"], 0.375)
    assert math.isclose(own["acc_norm"]["stderr"], math.sqrt(0.02) / 2) and own["acc_norm"]["n_samples"] == 40
    assert own["acc_norm"]["task_version"] == "2.0" and scores == {"two": 0.4} and used == {"two": "acc_norm"}
    group = {r["metric"]: r for r in results if r["task"] == "grp"}
    assert group["acc"]["value"] == 0.45 and group["acc"]["n_samples"] == 40
    assert {r["task"] for r in results} == {"two", "grp", "t1", "t2"}
