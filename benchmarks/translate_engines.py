"""The corpus translate step on the vLLM engine vs the transformers engine vs a naive one-at-a-time loop.

Same model (a random-weight Llama built locally with the demo tokenizer, ``build_demo_llama``; default hidden 640 ×
8 layers ≈ 30M parameters), same segments (NTREX English lines imported as a corpus into a temporary workspace),
same prompts (chat template), greedy, same token budget. The two engines run the real ``translate_step`` with the
job's ``DbRunContext`` (batches, commits, filters); the naive loop calls ``model.generate`` per segment on the first
``--naive-segments`` prompts. Tokens are counted exactly (new token ids, EOS included, padding excluded), and
tokens/s is over the time spent in ``generate`` (model loading is reported apart). The script also counts how many
segments the two engines translated differently (0 expected in float32).

Runs in the vLLM environment (it needs vLLM and the workbench):

    .venv-vllm/bin/python benchmarks/translate_engines.py [--segments 256] [--naive-segments 64]
        [--max-new-tokens 32] [--batch-size 32] [--hidden 640] [--layers 8] [--device cpu|cuda] [--dtype float32]
        [--fp8 PATH] [--json OUT.json]

``--fp8 PATH``: also translate with an FP8 checkpoint (e.g. ``hala quantize`` output of the same model) on the vLLM
engine, and give its tokens/s beside the unquantized one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=256)
    ap.add_argument("--naive-segments", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--fp8", default=None, help="an FP8 checkpoint to run on the vLLM engine as well")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ntrex128_en_ar"))
    ap.add_argument("--json", default=None, help="write the result here (default: in the temp workspace)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hala-engines-bench-"))
    os.environ["HALA_HOME"] = str(home)
    os.environ.pop("HALA_DB_URL", None)
    import torch
    from sqlalchemy import select

    from db.models import Segment, Translation, TranslationRun
    from db.session import read_scope, session_scope
    from hala_core.demo_models import build_demo_llama
    from hala_core.engine import TransformersEngine
    from hala_core.engine_vllm import VllmEngine
    from hala_core.settings import load_settings
    from hala_core.specs import TranslateSpec
    from hala_core.translate import translate_step
    from hala_core.translation import build_prompts
    from jobs.context import DbRunContext
    from jobs.queue import enqueue
    from workbench.bootstrap import open_workspace
    from workbench.corpus_ops import import_file

    settings = open_workspace(load_settings())
    model_path = build_demo_llama(settings.models_dir / "bench-llama", seed=0, hidden_size=args.hidden,
                                  num_layers=args.layers)
    stats = import_file(settings, args.data, "ntrex-bench", fmt="parallel", limit=args.segments)
    print(f"random Llama hidden {args.hidden} × {args.layers} layers; {stats['segments']} segments; "
          f"device {args.device}, {args.dtype}; load average {os.getloadavg()[0]:.2f}", flush=True)

    acc: dict[str, dict[str, float]] = {}

    def timed(cls: type, key: str) -> None:
        generate = cls.generate

        def wrapper(self, prompts, settings=None):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            out = generate(self, prompts, settings)
            a = acc.setdefault(key, {"tokens": 0, "seconds": 0.0})
            a["seconds"] += time.perf_counter() - t
            a["tokens"] += self.last_generated_tokens
            return out

        cls.generate = wrapper

    timed(TransformersEngine, "transformers")
    timed(VllmEngine, "vllm")

    def run(engine: str, name: str, model: Path) -> float:
        spec = TranslateSpec(corpus="ntrex-bench", model=str(model), name=name, max_new_tokens=args.max_new_tokens,
                             batch_size=args.batch_size, commit_every=max(args.batch_size, 64), device=args.device,
                             dtype=args.dtype, engine=engine, double_share=0.0)
        with session_scope(settings.db_url) as s:
            job_id = enqueue(s, spec).id
        t = time.perf_counter()
        translate_step(spec, DbRunContext(job_id, settings))
        return time.perf_counter() - t

    results: dict[str, dict[str, float]] = {}
    for engine, name, path in [("vllm", "vllm", model_path), ("transformers", "hf", model_path)] + (
            [("vllm", "vllm-fp8", Path(args.fp8))] if args.fp8 else []):
        key = "transformers" if engine == "transformers" else "vllm"
        acc.pop(key, None)
        total = run(engine, name, path)
        a = acc[key]
        results[name] = {"tokens": a["tokens"], "generate_s": round(a["seconds"], 2), "step_s": round(total, 2),
                         "tokens_per_s": round(a["tokens"] / a["seconds"], 1)}
        print(f"{name:>12}: {a['tokens']} tokens in {a['seconds']:.1f} s of generate = "
              f"{a['tokens'] / a['seconds']:.0f} tok/s (whole step {total:.1f} s, load included)", flush=True)

    # the naive loop: one segment at a time, the same prompts
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=getattr(torch, args.dtype)).to(args.device)
    model.eval()
    with read_scope(settings.db_url) as s:
        texts = [r for r in s.scalars(select(Segment.text).order_by(Segment.id))][: args.naive_segments]
    prompts = build_prompts(texts, "en-ar", "chat", tok)
    n_tok, t = 0, time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            enc = tok(p, return_tensors="pt").to(args.device)
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            n_tok += int(out.shape[1] - enc["input_ids"].shape[1])
    naive_s = time.perf_counter() - t
    results["naive"] = {"tokens": n_tok, "generate_s": round(naive_s, 2), "tokens_per_s": round(n_tok / naive_s, 1),
                        "segments": len(prompts)}
    print(f"{'naive':>12}: {n_tok} tokens in {naive_s:.1f} s ({len(prompts)} segments) = {n_tok / naive_s:.0f} tok/s")

    with read_scope(settings.db_url) as s:
        runs = {r.name: r.id for r in s.scalars(select(TranslationRun))}
        by = {n: dict(s.execute(select(Translation.segment_id, Translation.text)
                                .where(Translation.run_id == runs[n])).all()) for n in ("vllm", "hf")}
    differ = sum(1 for k in by["hf"] if by["vllm"].get(k) != by["hf"][k])
    v, h, n = (results[k]["tokens_per_s"] for k in ("vllm", "hf", "naive"))
    ratios = {"vllm/transformers": round(v / h, 2), "vllm/naive": round(v / n, 2), "transformers/naive": round(h / n, 2)}
    if "vllm-fp8" in results:
        ratios["vllm-fp8/vllm"] = round(results["vllm-fp8"]["tokens_per_s"] / v, 2)
    print("ratios: " + ", ".join(f"{k} {x}×" for k, x in ratios.items()))
    print(f"segments translated differently by the two engines: {differ} of {len(by['hf'])}")
    payload = {"args": vars(args), "results": results, "ratios": ratios, "differ": differ,
               "segments": len(by["hf"]), "load_average": os.getloadavg()[0],
               "torch_threads": torch.get_num_threads()}
    out_path = Path(args.json) if args.json else home / "translate_engines.json"
    out_path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
