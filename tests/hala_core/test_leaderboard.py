"""Leaderboard rows from scores: display scale, averages, categories, deltas, reported rows, exports."""

from __future__ import annotations

import csv
import io

import pytest

from hala_core.leaderboard import (
    build_table,
    disagreements,
    size_category,
    sweep_points,
    to_csv,
    to_markdown,
)


def score(model, bench, metric, value, params=None, task=None):  # noqa: ANN001, ANN201
    return {"model": model, "benchmark": bench, "task": task or bench, "metric": metric, "value": value,
            "harness_version": "0.4.13", "model_meta": {"parameters": params} if params else {}}


SCORES = [
    score("base", "exams_ar", "acc", 0.25, 350_000_000), score("base", "exams_ar", "acc_norm", 0.30, 350_000_000),
    score("base", "ntrex_en_ar", "chrf++", 20.0, 350_000_000),
    score("tuned", "exams_ar", "acc_norm", 0.40, 350_000_000), score("tuned", "ntrex_en_ar", "chrf++", 30.0),
    score("big", "exams_ar", "acc_norm", 0.60, 9_000_000_000),
]


def test_size_categories_follow_the_report():
    assert [size_category(p) for p in (350e6, 2e9, 2.1e9, 7e9, 9e9, 70e9, None)] == \
        ["nano", "nano", "other", "small", "small", "other", "unknown"]


def test_rows_use_the_headline_metric_as_percent_and_average_only_complete_rows():
    rows = build_table(SCORES, headline=lambda b: "acc_norm" if b == "exams_ar" else "chrf++")
    by = {r["model"]: r for r in rows}
    assert by["base"]["exams_ar"] == 30.0 and by["base"]["ntrex_en_ar"] == 20.0
    assert by["base"]["average"] == 25.0 and by["tuned"]["average"] == 35.0
    assert by["big"]["average"] is None  # no translation score: no average, not a misleading one
    assert [r["model"] for r in rows] == ["tuned", "base", "big"]


def test_delta_against_a_base_and_category_filter():
    rows = build_table(SCORES, benchmarks=["exams_ar"], base_model="base", category="nano")
    assert {r["model"] for r in rows} == {"base", "tuned"}
    tuned = next(r for r in rows if r["model"] == "tuned")
    assert tuned["Δ exams_ar"] == 10.0 and tuned["Δ average"] == 10.0
    with pytest.raises(ValueError, match="base model 'nope' has no scores; evaluated models: base, big, tuned"):
        build_table(SCORES, base_model="nope")


def test_reported_rows_are_labelled_and_never_mixed():
    rows = build_table(SCORES, benchmarks=["exams_ar"], include_reported=True)
    reported = [r for r in rows if r["kind"] == "reported"]
    assert [r["model"] for r in reported] == ["Hala-1.2B (reported)", "Hala-9B (reported)"]
    assert [r["average"] for r in reported] == [51.4, 69.9] and all(r["exams_ar"] is None for r in reported)
    assert rows[-2:] == reported  # after the measured rows, not sorted in among them


def test_exports_round_trip():
    rows = build_table(SCORES, benchmarks=["exams_ar"])
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["model"] for r in parsed] == [r["model"] for r in rows]
    md = to_markdown(rows)
    assert md.splitlines()[0].startswith("| model |") and "| big |" in md and "9.00B" in md


def test_sweep_points_and_disagreements():
    rows = build_table([score("A", "b", "acc", 0.2), score("B", "b", "acc", 0.6), score("m5", "b", "acc", 0.5),
                        score("m3", "b", "acc", 0.3)])
    merges = [{"name": "m5", "base_model": "A", "model": "B", "t": 0.5},
              {"name": "m3", "base_model": "A", "model": "B", "t": 0.3}]
    [(pair, pts)] = sweep_points(merges, rows, "b").items()
    assert pair == "A ↔ B" and [(p[0], p[1]) for p in pts] == [(0.0, 20.0), (0.3, 30.0), (0.5, 50.0), (1.0, 60.0)]
    a = [{"task": "t", "doc_id": i, "prompt": "p", "choices": ["x", "y"], "response": [0.0, -1.0],
          "target": "0", "correct": True} for i in range(3)]
    b = [dict(a[0]), dict(a[1], response=[-1.0, 0.0], correct=False), dict(a[2])]
    [d] = disagreements(a, b)
    assert (d["doc_id"], d["answer_a"], d["answer_b"], d["correct_a"], d["correct_b"]) == (1, "x", "y", True, False)
