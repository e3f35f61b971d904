"""The leaderboard as plain data: OALL-style rows from scores, size categories, deltas, exports and charts.

Scores in [0, 1] (accuracies) are shown as percentages, as the Open Arabic LLM Leaderboard does; chrF++ and
BLEU are already on a 0–100 scale. Published numbers of the Hala report can be added as rows labelled
"reported": they are never averaged or compared with measured rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

REPORTED = (
    {"model": "Hala-1.2B", "parameters": 1_200_000_000, "average": 51.4,
     "source": "Hala technical report (arXiv 2509.14008), six-benchmark average"},
    {"model": "Hala-9B", "parameters": 9_000_000_000, "average": 69.9,
     "source": "Hala technical report (arXiv 2509.14008), six-benchmark average"},
)
METRIC_PREFERENCE = ("acc_norm", "acc", "chrf++", "bleu", "exact_match")
CATEGORIES = ("nano", "small", "other", "unknown")


def size_category(parameters: int | None) -> str:
    """"nano" ≤ 2B, "small" 7–9B (the report's categories), "other" otherwise."""
    if not parameters:
        return "unknown"
    if parameters <= 2_000_000_000:
        return "nano"
    if 7_000_000_000 <= parameters <= 9_500_000_000:
        return "small"
    return "other"


def _display(metric: str, value: float) -> float:
    return value * 100.0 if metric in ("acc", "acc_norm", "exact_match") and value <= 1.0 else value


def headline_scores(scores: list[dict[str, Any]],
                    headline: Callable[[str], str | None] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """model → benchmark → the score row shown for it (the benchmark's headline metric, or the best known one).

    A benchmark's own row (task == benchmark) wins over its sub-tasks."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in scores:
        grouped.setdefault((r["model"], r["benchmark"]), []).append(r)
    for (model, bench), rows in grouped.items():
        own = [r for r in rows if r["task"] == bench] or rows
        want = headline(bench) if headline else None
        order = ([want] if want else []) + [m for m in METRIC_PREFERENCE if m != want]
        pick = next((r for m in order for r in own if r["metric"] == m), None)
        if pick is not None:
            out.setdefault(model, {})[bench] = pick
    return out


def build_table(scores: list[dict[str, Any]], benchmarks: list[str] | None = None,
                headline: Callable[[str], str | None] | None = None, base_model: str | None = None,
                category: str | None = None, include_reported: bool = False,
                parameters: Callable[[str, dict[str, Any]], int | None] | None = None) -> list[dict[str, Any]]:
    """Rows: model, parameters, category, one column per benchmark, average, deltas against ``base_model``."""
    per_model = headline_scores(scores, headline)
    all_benches = sorted({b for m in per_model.values() for b in m})
    chosen = [b for b in (benchmarks or all_benches) if b in all_benches]
    meta: dict[str, dict[str, Any]] = {}
    for r in scores:  # any row of a model may carry its artifact metadata
        m = meta.setdefault(r["model"], {**r, "model_meta": {}})
        m["model_meta"] = {**(r.get("model_meta") or {}), **m["model_meta"]}
        m["model_path"] = m.get("model_path") or r.get("model_path")
    rows: list[dict[str, Any]] = []
    for model, benches in per_model.items():
        info = meta[model]
        params = (parameters(model, info) if parameters else None) or (info.get("model_meta") or {}).get("parameters")
        row: dict[str, Any] = {"model": model, "kind": "measured", "parameters": params,
                               "category": size_category(params)}
        values = []
        for b in chosen:
            r = benches.get(b)
            v = round(_display(r["metric"], r["value"]), 2) if r else None
            row[b] = v
            if v is not None:
                values.append(v)
        row["average"] = round(sum(values) / len(values), 2) if values and len(values) == len(chosen) else None
        row["harness"] = ", ".join(sorted({str(r.get("harness_version")) for r in benches.values()
                                           if r.get("harness_version")}))
        rows.append(row)
    if base_model:
        base = next((r for r in rows if r["model"] == base_model), None)
        if base is None:
            raise ValueError(f"base model {base_model!r} has no scores; evaluated models: "
                             f"{', '.join(sorted(per_model)) or 'none'}")
        for r in rows:
            for b in [*chosen, "average"]:
                if r.get(b) is not None and base.get(b) is not None:
                    r[f"Δ {b}"] = round(r[b] - base[b], 2)
    if category:
        rows = [r for r in rows if r["category"] == category]
    rows.sort(key=lambda r: (r["average"] is None, -(r["average"] or 0), r["model"]))
    if include_reported:
        for rep in REPORTED:
            cat = size_category(rep["parameters"])
            if not category or category == cat:
                rows.append({"model": f"{rep['model']} (reported)", "kind": "reported",
                             "parameters": rep["parameters"], "category": cat,
                             **{b: None for b in chosen}, "average": rep["average"], "harness": rep["source"]})
    return rows


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns_of(rows))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, int) and v > 10_000_000:
        return f"{v / 1e9:.2f}B" if v >= 1e9 else f"{v / 1e6:.1f}M"
    return str(v).replace("|", "\\|")


def to_markdown(rows: list[dict[str, Any]]) -> str:
    cols = columns_of(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def bar_figure(rows: list[dict[str, Any]]):  # noqa: ANN201
    import plotly.graph_objects as go

    shown = [r for r in rows if r.get("average") is not None]
    fig = go.Figure(go.Bar(x=[r["model"] for r in shown], y=[r["average"] for r in shown],
                           marker_color=["#9ca3af" if r["kind"] == "reported" else "#0f766e" for r in shown],
                           text=[f"{r['average']:.1f}" for r in shown], textposition="outside"))
    fig.update_layout(title="Average over the chosen benchmarks (grey: reported, not measured here)",
                      yaxis_title="score", height=360, margin={"t": 50, "b": 80})
    return fig


def radar_figure(rows: list[dict[str, Any]], benchmarks: list[str]):  # noqa: ANN201
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in rows:
        if r["kind"] != "measured":
            continue
        vals = [r.get(b) or 0.0 for b in benchmarks]
        fig.add_trace(go.Scatterpolar(r=[*vals, vals[0]] if vals else [], theta=[*benchmarks, benchmarks[0]]
                                      if benchmarks else [], name=r["model"], fill="toself", opacity=0.5))
    fig.update_layout(title="Per benchmark", height=380, polar={"radialaxis": {"range": [0, 100]}})
    return fig


def sweep_points(merges: list[dict[str, Any]], rows: list[dict[str, Any]], benchmark: str) -> dict[str, list]:
    """For slerp merges sharing A and B: (t, score) points per pair, with A at t=0 and B at t=1 when evaluated."""
    score = {r["model"]: r.get(benchmark) for r in rows if r["kind"] == "measured"}
    pairs: dict[str, list[tuple[float, float, str]]] = {}
    for m in merges:
        t = m.get("t")
        if not isinstance(t, (int, float)) or score.get(m["name"]) is None:
            continue
        key = f"{m['base_model']} ↔ {m['model']}"
        pts = pairs.setdefault(key, [])
        pts.append((float(t), score[m["name"]], m["name"]))
        for end_t, end in ((0.0, m["base_model"]), (1.0, m["model"])):
            if score.get(end) is not None and not any(p[2] == end for p in pts):
                pts.append((end_t, score[end], end))
    return {k: sorted(v) for k, v in pairs.items() if len(v) >= 2}


def sweep_figure(points: dict[str, list], benchmark: str):  # noqa: ANN201
    import plotly.graph_objects as go

    fig = go.Figure()
    for pair, pts in points.items():
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], text=[p[2] for p in pts],
                                 mode="lines+markers", name=pair))
    fig.update_layout(title=f"slerp t sweep: {benchmark} against t (0 = A, 1 = B)", xaxis_title="t",
                      yaxis_title=benchmark, height=360)
    return fig


def disagreements(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples (matched by task and doc id) where two models answered differently or one was right."""
    index = {(x["task"], x["doc_id"]): x for x in b}
    out = []
    for x in a:
        y = index.get((x["task"], x["doc_id"]))
        if y is None:
            continue
        ans_a, ans_b = answer_of(x), answer_of(y)
        if ans_a != ans_b or x.get("correct") != y.get("correct"):
            out.append({"task": x["task"], "doc_id": x["doc_id"], "prompt": x["prompt"], "target": x.get("target"),
                        "answer_a": ans_a, "correct_a": x.get("correct"), "answer_b": ans_b,
                        "correct_b": y.get("correct")})
    return out


def answer_of(sample: dict[str, Any]) -> str:
    """What the model answered: the highest-scoring choice for multiple choice, else its generated text."""
    resp, choices = sample.get("response"), sample.get("choices")
    if isinstance(resp, list) and resp and all(isinstance(v, (int, float)) for v in resp):
        best = max(range(len(resp)), key=lambda i: resp[i])
        return str(choices[best]) if choices and best < len(choices) else str(best)
    return "" if resp is None else str(resp)
