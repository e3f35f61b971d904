"""The corpus translation step: segments → translator (through the engine interface) → filters → the store.

Resumable by construction: segments are read from the store as "not translated in this run yet", generated
in batches, and each batch is committed in one transaction, so a job killed at any point and run again
translates every segment exactly once (the store also refuses a second translation of a segment).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from hala_core.context import RunContext, StopRequested
from hala_core.specs import TranslateSpec


@dataclass
class SegmentToTranslate:
    id: int
    text: str  # masked source (protected spans replaced by markers)
    spans: dict[str, str]
    verbatim: bool
    reference: str | None


class CorpusStore(Protocol):
    """Where a translation job reads its segments and writes its results (``db.corpora.CorpusStore``)."""

    def open_run(self, corpus: str, name: str, *, model_ref: str, model_artifact_id: int | None, direction: str,
                 template: str, settings: dict[str, Any], job_id: int, double_share: float) -> dict[str, Any]: ...

    def pending(self, run_id: int, after_id: int, limit: int, swapped: bool) -> list[Any]: ...

    def save(self, run_id: int, job_id: int, items: list[dict[str, Any]], double_share: float) -> int: ...

    def scored_fields(self, run_id: int, swapped: bool) -> tuple[list[str], list[str]]: ...

    def finish(self, run_id: int, scores: dict[str, float] | None) -> None: ...


def translate_items(engine: Any, batch: list[Any], spec: TranslateSpec, thresholds: Any) -> list[dict[str, Any]]:
    """Translate one batch of segments and score each result; verbatim pieces are copied as they are."""
    from hala_core import filters
    from hala_core.engine import GenerationSettings
    from hala_core.segment import restore
    from hala_core.translation import build_prompts, clean_output

    target_lang = spec.direction.split("-")[1]
    todo = [p for p in batch if not p.verbatim and p.text.strip()]
    settings = GenerationSettings(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
                                  top_p=spec.top_p, repetition_penalty=spec.repetition_penalty,
                                  batch_size=spec.batch_size)
    prompts = build_prompts([p.text for p in todo], spec.direction, spec.template, engine.tokenizer)
    generated = engine.generate(prompts, settings)
    outputs = dict(zip((p.id for p in todo), generated, strict=True))
    lengths = engine.tokenizer(generated, add_special_tokens=False)["input_ids"] if generated else []
    n_tokens = {p.id: len(ids) for p, ids in zip(todo, lengths, strict=True)}
    items = []
    for p in batch:
        source = restore(p.text, p.spans)[0]
        if p.id not in outputs:  # a code block, whitespace or an empty field: kept as it is
            scores = filters.score(source, source, target_lang, verbatim=True)
            items.append({"segment_id": p.id, "text": source, "n_tokens": 0, "scores": scores,
                          "flags": filters.flags(scores, thresholds, verbatim=True)})
            continue
        text, missing = restore(clean_output(outputs[p.id], spec.template), p.spans)
        scores = filters.score(source, text, target_lang)
        if missing:  # a marker the translator dropped: the span it stood for is lost
            scores["preserved"] = 0.0
        flags = filters.flags(scores, thresholds)  # flags follow from the stored scores alone (re-flagging)
        items.append({"segment_id": p.id, "text": text, "n_tokens": n_tokens[p.id], "scores": scores,
                      "flags": flags})
    return items


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def translate_step(spec: TranslateSpec, ctx: RunContext) -> None:
    from hala_core.engine import make_engine
    from hala_core.evaluate import pick_device, resolve_eval_model
    from hala_core.filters import FilterThresholds
    from hala_core.translation import score

    store: CorpusStore = ctx.corpus_store()  # type: ignore[attr-defined]
    model = resolve_eval_model(spec.model, ctx.resolve_model, purpose="translation")
    name = spec.run_name()
    info = store.open_run(spec.corpus, name, model_ref=spec.model, model_artifact_id=model.artifact_id,
                          direction=spec.direction, template=spec.template, settings=spec.settings_key(),
                          job_id=ctx.job_id, double_share=spec.double_share)
    run_id, total, done = info["run_id"], info["total"], info["done"]
    thresholds = FilterThresholds(**info["thresholds"])
    if done:
        ctx.log(f"resuming translation {name!r} of corpus {spec.corpus!r}: {done}/{total} segments already "
                "translated; only the rest is generated")
    else:
        ctx.log(f"translation {name!r} of corpus {spec.corpus!r}: {total} segments, {spec.direction}, "
                f"template {spec.template}, translator {spec.model}")
    ctx.progress(done, total, f"loading the translator ({spec.engine})")
    device, auto_dtype = pick_device(spec.device)
    dtype = auto_dtype if spec.dtype == "auto" else spec.dtype
    t_load = time.monotonic()
    engine = make_engine(spec.engine, model.path, device=device, dtype=dtype, **spec.vllm.engine_kwargs())
    ctx.log(f"engine {spec.engine} on {device} ({dtype}) loaded in {time.monotonic() - t_load:.1f} s")
    chunk = max(spec.commit_every, 1)
    after, new, generated_tokens = 0, 0, 0
    started = time.monotonic()
    try:
        while True:
            if ctx.should_stop():
                raise StopRequested(f"stopped after {new} new segments ({done}/{total}); run it again to resume")
            want = chunk if spec.limit is None else min(chunk, spec.limit - new)
            if want <= 0:
                break
            batch = store.pending(run_id, after, want, info["swapped"])
            if not batch:
                break
            after = batch[-1].id
            items = translate_items(engine, batch, spec, thresholds)
            added = store.save(run_id, ctx.job_id, items, spec.double_share)
            new += added
            done += added
            generated_tokens += sum(it["n_tokens"] for it in items)
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = new / elapsed
            left = (min(total - done, spec.limit - new) if spec.limit else total - done)
            eta = f" · ETA {_eta(left / rate)}" if rate > 0 and left > 0 else ""
            ctx.progress(done, total, f"{done}/{total} segments · {rate:.1f} segments/s · "
                                      f"{generated_tokens / elapsed:.0f} tokens/s{eta}")
            ctx.log_metric("segments_per_s", rate, step=done)
            ctx.log_metric("tokens_per_s", generated_tokens / elapsed, step=done)
            flagged = sum(1 for it in items if it["flags"])
            ctx.log_metric("flagged_share", flagged / max(len(items), 1), step=done)
    finally:
        engine.close()
    elapsed = time.monotonic() - started
    ctx.log(f"translated {new} new segments in {elapsed:.1f} s ({done}/{total} done)")
    ctx.log_metric("new_segments", new)
    scores: dict[str, float] | None = None
    if info["has_references"] or info["swapped"]:
        hyps, refs = store.scored_fields(run_id, info["swapped"])
        if hyps:
            scores = score(hyps, refs)
            scores["n_fields"] = float(len(hyps))
            ctx.log(f"against the references ({len(hyps)} texts): chrF++ {scores['chrf++']:.2f}, "
                    f"BLEU {scores['bleu']:.2f}")
            ctx.log_metric("chrf++", scores["chrf++"], step=done)
            ctx.log_metric("bleu", scores["bleu"], step=done)
    store.finish(run_id, scores)
    ctx.set_result({"translation": name, "corpus": spec.corpus, "run_id": run_id, "segments": total, "done": done,
                    "new_segments": new, "seconds": round(elapsed, 2), "scores": scores or {}})
