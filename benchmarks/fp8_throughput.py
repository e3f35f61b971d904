"""Decode throughput of an FP8_DYNAMIC checkpoint against its unquantized original, in one run.

Builds a random-weight LFM2 (sizes below; on a GPU machine pass e.g. --hidden 2048 --layers 16 for a ~1B model),
compresses it with llm-compressor's FP8_DYNAMIC recipe (the Hala report's teacher recipe), and measures
tokens/s of both with the workbench's transformers engine on the same prompts and the same number of new tokens.
On a CPU the FP8 weights are decompressed for every forward pass (emulated), so the ratio is expected to be
below 1 there; the report's ~2x needs FP8 kernels (Hopper/Ada GPU) and a serving engine such as vLLM.

Usage: python benchmarks/fp8_throughput.py [--hidden 512] [--layers 8] [--prompts 32] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tokens_per_s(path: Path, prompts: list[str], new_tokens: int, device: str, dtype: str, batch: int) -> float:
    from hala_core.engine import GenerationSettings, TransformersEngine

    engine = TransformersEngine(str(path), device=device, dtype=dtype)
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=batch)
    engine.generate(prompts[:batch], settings)  # warm-up
    t0 = time.perf_counter()
    engine.generate(prompts, settings)
    elapsed = time.perf_counter() - t0
    n = engine.last_generated_tokens
    engine.close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--naive", type=int, default=0,
                    help="also time the naive loop (one prompt at a time) on this many prompts of the original")
    ap.add_argument("--json", default=None, help="write the figures here as JSON")
    ap.add_argument("--arch", default="lfm2", choices=["lfm2", "llama"],
                    help="lfm2 (the Hala models' architecture) or llama (no conv kernel needed on a GPU)")
    args = ap.parse_args()

    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hala_core.demo_corpus import corpus_lines
    from hala_core.demo_models import build_demo_llama, build_demo_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="hala-fp8-bench-"))
    build = build_demo_llama if args.arch == "llama" else build_demo_model
    src = build(work / "original", seed=0, hidden_size=args.hidden, num_layers=args.layers)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"]))
    fp8 = work / "fp8"
    model.save_pretrained(fp8, save_compressed=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(fp8)
    quant_s = time.perf_counter() - t0

    lines = corpus_lines()
    prompts = [lines[i % len(lines)] for i in range(args.prompts)]
    base_dtype = "bfloat16" if device == "cuda" else "float32"
    base = tokens_per_s(src, prompts, args.new_tokens, device, base_dtype, args.batch)
    quant = tokens_per_s(fp8, prompts, args.new_tokens, device, base_dtype, args.batch)
    print(f"model: random {args.arch}, hidden {args.hidden}, {args.layers} layers, {params / 1e6:.1f}M parameters; "
          f"device {device}; engine transformers; FP8_DYNAMIC oneshot took {quant_s:.1f}s")
    print(f"original ({base_dtype}): {base:,.0f} tokens/s   FP8_DYNAMIC: {quant:,.0f} tokens/s "
          f"({args.prompts} prompts x {args.new_tokens} new tokens, batch {args.batch})")
    print(f"ratio FP8 / original: {quant / base:.2f}x" + ("  (CPU: FP8 is emulated by decompressing the weights)"
                                                          if device == "cpu" else ""))
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "params_m": params / 1e6,
              "arch": args.arch, "hidden": args.hidden, "layers": args.layers, "prompts": args.prompts, "new_tokens": args.new_tokens,
              "batch": args.batch, "dtype": base_dtype, "original_tok_s": base, "fp8_tok_s": quant,
              "fp8_over_original": quant / base, "quantize_s": quant_s}
    if args.naive:
        naive = tokens_per_s(src, prompts[: args.naive], args.new_tokens, device, base_dtype, 1)
        result.update(naive_tok_s=naive, batched_over_naive=base / naive)
        print(f"naive loop ({args.naive} prompts one at a time, {base_dtype}): {naive:,.0f} tokens/s; "
              f"batched / naive: {base / naive:.1f}x")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
