"""Corpus translation throughput: our translate path (a real corpus in a workspace SQLite, translated by
``translate_step`` with the job's ``DbRunContext``: length-sorted left-padded batches, commits, filters) against a
naive loop calling ``model.generate`` one segment at a time with the same prompts, greedy, same token budget.

The translator is a random-weight LFM2 (``build_demo_model``, default hidden 640 × 8 layers ≈ 31.7M parameters,
float32, CPU). Both sides must produce the same strings for every segment; the script prints how many differ.
Tokens are counted exactly on both sides: new token ids up to and including an end-of-sequence token, padding
excluded (the engine's ``last_generated_tokens`` on our side). Runs are not forced to full length: a random model
that emits end-of-sequence early stops early on both sides (the token counts say so), and tokens/s stays comparable.

Usage: python benchmarks/translate_throughput.py [--segments 512] [--baseline-segments 256] [--max-new-tokens 32]
       [--batch-size 32] [--commit-every 64] [--hidden 640] [--layers 8] [--template chat] [--slices 8]
       [--threads N]

The two sides run interleaved in --slices slices (the job resumes its translation each slice through
``spec.limit``, in whole ``commit_every`` chunks, so its batches are the same as in one run), so both see the same
share of other load. Timings on a shared 2-core machine still swing with it (torch's two threads stall badly when
another process takes a core): the load average is printed beside each side; compare ratios from quiet runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=512, help="NTREX English lines imported and translated")
    ap.add_argument("--baseline-segments", type=int, default=256,
                    help="segments the naive loop translates (the first ones by id); 0 = all (slow: ~1 s each)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--commit-every", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--template", default="chat", choices=["chat", "hala-translator"])
    ap.add_argument("--slices", type=int, default=8, help="alternate the two sides in this many slices")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ntrex128_en_ar"))
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hala-translate-bench-"))
    os.environ["HALA_HOME"] = str(home)
    os.environ.pop("HALA_DB_URL", None)
    import torch
    from sqlalchemy import select
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from db.models import Segment, Translation
    from db.session import read_scope, session_scope
    from hala_core.demo_models import build_demo_model
    from hala_core.engine import TransformersEngine
    from hala_core.segment import restore
    from hala_core.settings import load_settings
    from hala_core.specs import TranslateSpec
    from hala_core.translate import translate_step
    from hala_core.translation import build_prompts, clean_output
    from jobs.context import DbRunContext
    from jobs.queue import enqueue
    from workbench.bootstrap import open_workspace
    from workbench.corpus_ops import import_file

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = open_workspace(load_settings())
    t0 = time.perf_counter()
    model_path = build_demo_model(settings.models_dir / "bench-translator", seed=0, hidden_size=args.hidden,
                                  num_layers=args.layers)
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"random LFM2: hidden {args.hidden}, {args.layers} layers, {n_params:,} parameters (float32, CPU, "
          f"{torch.get_num_threads()} torch threads); built in {time.perf_counter() - t0:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f}")

    stats = import_file(settings, args.data, "ntrex-bench", fmt="parallel", limit=args.segments)
    print(f"corpus: {stats['segments']} segments from {stats['rows']} NTREX lines "
          f"({stats['duplicates skipped']} duplicates skipped), imported in {stats['seconds']:.2f} s")

    spec = TranslateSpec(corpus="ntrex-bench", model=str(model_path), name="bench", template=args.template,
                         max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                         commit_every=args.commit_every, device="cpu", dtype="float32")
    with session_scope(settings.db_url) as s:
        job_id = enqueue(s, spec).id
    ctx = DbRunContext(job_id, settings)

    # Count exactly what the engine generates (and how long generate() takes) without touching the engine.
    generate = TransformersEngine.generate
    acc = {"tokens": 0, "seconds": 0.0, "calls": 0}

    def timed_generate(self, prompts, settings=None):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        out = generate(self, prompts, settings)
        acc["seconds"] += time.perf_counter() - t
        acc["tokens"] += self.last_generated_tokens
        acc["calls"] += 1
        return out

    with torch.inference_mode():  # warm-up (first-call allocations, kernels) for both sides
        enc = AutoTokenizer.from_pretrained(str(model_path))("warm up", return_tensors="pt")
        model.generate(**enc, max_new_tokens=4, do_sample=False)

    # The naive loop's prompts: the same masked segment texts through the same template, in id order.
    tok = AutoTokenizer.from_pretrained(str(model_path))
    with read_scope(settings.db_url) as s:
        seg_rows = s.execute(select(Segment.id, Segment.text, Segment.spans).order_by(Segment.id)).all()
    base_rows = seg_rows if args.baseline_segments <= 0 else seg_rows[: args.baseline_segments]
    prompts = build_prompts([r[1] for r in base_rows], spec.direction, args.template, tok)

    # Interleave the two sides in slices (the job resumes its translation each slice: spec.limit), so that
    # both see the same share of whatever else the machine is doing.
    slices = max(1, min(args.slices, len(seg_rows), len(base_rows)))
    ours_per = -(-len(seg_rows) // slices)
    ours_per = -(-ours_per // spec.commit_every) * spec.commit_every  # whole commit chunks: batching unchanged
    naive_per = -(-len(base_rows) // slices)
    slice_spec = spec.model_copy(update={"limit": ours_per})
    loop_s = step_wall = naive_s = 0.0
    loads: dict[str, list[float]] = {"ours": [], "naive": []}
    naive_tokens = naive_eos = 0
    outputs: list[str] = []
    log_path = home / "translate-job.log"
    from db.models import Job

    for i in range(slices):
        TransformersEngine.generate = timed_generate  # type: ignore[method-assign]
        try:
            with open(log_path, "a") as log, contextlib.redirect_stdout(log):
                t0 = time.perf_counter()
                translate_step(slice_spec, ctx)
                step_wall += time.perf_counter() - t0
        finally:
            TransformersEngine.generate = generate  # type: ignore[method-assign]
        with read_scope(settings.db_url) as s:
            loop_s += float((s.get(Job, job_id).result or {})["seconds"])
        loads["ours"].append(os.getloadavg()[0])
        t0 = time.perf_counter()
        with torch.inference_mode():
            for prompt in prompts[i * naive_per:(i + 1) * naive_per]:
                enc = tok(prompt, return_tensors="pt")
                out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
                new = out[0, enc["input_ids"].shape[1]:]
                naive_tokens += int(new.numel())
                naive_eos += int((new == tok.eos_token_id).any())
                outputs.append(tok.decode(new, skip_special_tokens=True))
        naive_s += time.perf_counter() - t0
        loads["naive"].append(os.getloadavg()[0])

    with read_scope(settings.db_url) as s:
        stored = dict(s.execute(select(Translation.segment_id, Translation.text)).all())
    n_done = len(stored)
    ours_tokens = acc["tokens"]
    print(f"\nours: translate_step, batch {args.batch_size}, commit every {args.commit_every}, "
          f"{args.max_new_tokens} new tokens max, template {args.template}, in {slices} resumed slices: "
          f"{n_done} segments, {ours_tokens} generated tokens")
    print(f"  translate loops {loop_s:.1f} s (generate {acc['seconds']:.1f} s in {acc['calls']} calls; db, filters "
          f"and tokenising {loop_s - acc['seconds']:.1f} s); whole steps with model loads and scoring {step_wall:.1f} s")
    ours_tps = ours_tokens / loop_s
    print(f"  {ours_tps:.1f} tokens/s, {n_done / loop_s:.2f} segments/s; "
          f"load average {statistics.mean(loads['ours']):.2f}")

    differ: list[tuple[int, str, str]] = []
    for (sid, _text, spans), raw in zip(base_rows, outputs, strict=True):
        theirs = restore(clean_output(raw, args.template), spans or {})[0]
        if theirs != stored.get(sid):
            differ.append((sid, stored.get(sid) or "", theirs))
    naive_tps = naive_tokens / naive_s
    print(f"\nbaseline: model.generate one segment at a time, greedy, same prompts: {len(base_rows)} segments, "
          f"{naive_tokens} generated tokens ({naive_eos} stopped on end-of-sequence)")
    print(f"  {naive_s:.1f} s, {naive_tps:.1f} tokens/s, {len(base_rows) / naive_s:.2f} segments/s; "
          f"load average {statistics.mean(loads['naive']):.2f}")
    per_seg_ours = ours_tokens / max(n_done, 1)
    per_seg_naive = naive_tokens / max(len(base_rows), 1)
    print(f"  tokens per segment: ours {per_seg_ours:.2f}, baseline {per_seg_naive:.2f}")
    print(f"\noutputs identical: {len(base_rows) - len(differ)}/{len(base_rows)} segments "
          f"({len(differ)} differ)")
    for sid, ours, theirs in differ[:5]:
        print(f"  segment {sid}:\n    ours     {ours[:120]!r}\n    baseline {theirs[:120]!r}")
    print(f"ratio tokens/s ours / baseline: {ours_tps / naive_tps:.2f}x "
          f"(whole step incl. model load: {ours_tokens / step_wall / naive_tps:.2f}x; goal >= 8x)")
    print(f"(job log: {log_path})")


if __name__ == "__main__":
    main()
