"""Training means something here: a small random LFM2 trained as an EN→AR translator through the real train job
(translator preset: NTREX pairs in the Hala translator template, completion-only loss) for a few minutes on the
CPU, then chrF++ and BLEU of greedy translations of held-out NTREX lines, before training (the random init) and
after (the trained artifact), through the workbench's own path: ``TransformersEngine`` +
``build_prompts(..., "hala-translator")`` + ``clean_output`` + ``score``. The absolute numbers are low (a few
million parameters, ~1,900 sentence pairs, minutes of CPU); the point is after > before.

The demo tokenizer (800 tokens, trained on the small built-in corpus) cuts NTREX Arabic into ~1.5 characters a
token, so by default the script trains a byte-level BPE tokenizer (``tokenizers``, same special tokens and chat
template as the demo models) on the training lines of both languages (never on the held-out lines), and builds
the random model around it with ``build_demo_model(..., tokenizer_dir=...)``; ``--tokenizer demo`` keeps the demo
one. By default the job runs a fixed number of steps (1200 at batch 4: about 5 minutes of one core, reproducible
whatever else the machine runs); with ``--minutes``, ``max_steps`` comes instead from timing 16 steps of TRL's own
loop with the job's ``SFTConfig`` on the same model and data, in the script's process (the script prints the
estimate and the job's real step time; on a busy machine the estimate swings with the load, and so does the
result, which depends strongly on the number of steps).
Every process runs with ``--threads`` torch/OpenMP threads (default 1): on a shared 2-core machine two threads per
process slowed training ~20× whenever another process held a core.

Defaults (batch 4, lr 1e-3, cosine, ``train_sampling_strategy: group_by_length`` through the spec's ``advanced``)
came from a few 5-minute runs: at this budget more, smaller updates won (batch 8 / lr 2e-3: loss ~5.4 and, once,
greedy output stuck repeating one diacritic, chrF++ below the random init; batch 4 / lr 1e-3: loss ~4.8).
Near the budget where the model starts to stop and form words, greedy output is fragile: give it more minutes
rather than fewer.

Usage: python benchmarks/translator_learns.py [--max-steps 1200 | --minutes 5] [--hidden 256] [--layers 4]
       [--train-lines 1897] [--held-out 100] [--lr 1e-3] [--batch 4] [--vocab 4000] [--tokenizer ntrex|demo]
       [--max-new-tokens 128] [--gen-batch 50] [--threads 1] [--advanced JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_workspace import add_thread_argument, bench_workspace  # noqa: E402


def train_tokenizer(lines: list[str], vocab_size: int, out_dir: Path) -> Any:
    """A byte-level BPE tokenizer on ``lines``, with the demo models' special tokens (pad 0, bos 1, eos 2) and chat
    template, saved so that ``build_demo_model(tokenizer_dir=...)`` can use it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from hala_core.demo_models import (
        BOS_TOKEN,
        CHAT_TEMPLATE,
        ENDOFTEXT,
        EOS_TOKEN,
        IM_START,
        PAD_TOKEN,
        SPECIAL_TOKENS,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, clean_up_tokenization_spaces=False, model_max_length=2048)
    fast.add_special_tokens({"additional_special_tokens": [IM_START, ENDOFTEXT]})
    fast.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def chars_per_token(tok: Any, lines: list[str]) -> float:
    return sum(len(x) for x in lines) / max(1, sum(len(tok(x)["input_ids"]) for x in lines))


def translate_and_score(model_path: Path, src: list[str], refs: list[str], max_new_tokens: int,
                        batch_size: int) -> tuple[dict[str, float], list[str], float]:
    """The workbench's translation path: engine + hala-translator prompts + clean_output, greedy; then score."""
    from hala_core.engine import GenerationSettings, TransformersEngine
    from hala_core.translation import build_prompts, clean_output, score

    t0 = time.perf_counter()
    engine = TransformersEngine(model_path, device="cpu", dtype="float32")
    prompts = build_prompts(src, "en-ar", "hala-translator", engine.tokenizer)
    raw = engine.generate(prompts, GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size))
    hyps = [clean_output(t, "hala-translator") for t in raw]
    return score(hyps, refs), hyps, time.perf_counter() - t0


def estimate_step_seconds(spec: Any, data: Path, work: Path) -> float:
    """Median seconds per optimizer step of TRL's own loop with the job's ``SFTConfig`` (``build_sft_config``) on the
    same model and data, in this process (the first two steps, a warm-up, not counted). What the job adds around
    each step (its callback) is measured by ``train_overhead.py``."""
    import datasets
    from transformers import AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from hala_core.train import build_sft_config

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            stamps.append(time.perf_counter())

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    trainer = SFTTrainer(model=spec.base_model, args=build_sft_config(spec, work, "cpu", has_eval=False),
                         train_dataset=datasets.load_dataset("json", data_files=str(data), split="train"),
                         processing_class=tokenizer, callbacks=[Stamp()])
    trainer.remove_callback(PrinterCallback)  # keep this estimate quiet
    trainer.train()
    datasets.enable_progress_bars()
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))


def main() -> None:
    ap = argparse.ArgumentParser()
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--max-steps", type=int, default=1200,
                        help="training steps (default 1200: about 5 minutes of one CPU core at batch 4)")
    budget.add_argument("--minutes", type=float, default=None,
                        help="a training time budget instead: max_steps estimated from a short warm-up")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--train-lines", type=int, default=None, help="NTREX pairs to train on (default: all but the "
                    "held-out ones)")
    ap.add_argument("--held-out", type=int, default=100, help="the last N NTREX pairs, never trained on")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--tokenizer", choices=["ntrex", "demo"], default="ntrex")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--gen-batch", type=int, default=50)
    ap.add_argument("--advanced", default='{"train_sampling_strategy": "group_by_length"}',
                    help="other SFTConfig fields for the job, as JSON (the spec's advanced); default: length-grouped "
                    "batches; '{}' for TRL's random sampler")
    ap.add_argument("--seed", type=int, default=42)
    add_thread_argument(ap)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ntrex128_en_ar"))
    args = ap.parse_args()

    started = time.perf_counter()
    settings, load_start = bench_workspace("hala-translator-learns-", args.threads)
    home = settings.home
    import yaml
    from transformers import AutoModelForCausalLM

    from hala_core.demo_models import build_demo_model, build_tokenizer
    from hala_core.specs import TrainSpec
    from hala_core.translation import HALA_TRANSLATOR_TEMPLATE, load_parallel


    en, ar = load_parallel(args.data, 100_000)
    if len(en) <= args.held_out:
        sys.exit(f"{len(en)} pairs in {args.data}: not enough to hold out {args.held_out}")
    test_en, test_ar = en[-args.held_out:], ar[-args.held_out:]
    train_en, train_ar = en[: -args.held_out], ar[: -args.held_out]
    if args.train_lines:
        train_en, train_ar = train_en[: args.train_lines], train_ar[: args.train_lines]
    print(f"data: NTREX-128 newstest2019 EN→AR, {len(train_en)} training pairs, the last {len(test_en)} held out")

    demo_tok = build_tokenizer(None)
    tok_dir = None
    if args.tokenizer == "ntrex":
        tok_dir = home / "tokenizer"
        tok = train_tokenizer(train_en + train_ar, args.vocab, tok_dir)
    else:
        tok = demo_tok
    for name, t in (("demo", demo_tok), (args.tokenizer, tok)) if args.tokenizer == "ntrex" else (("demo", tok),):
        print(f"tokenizer {name} ({len(t)} tokens): held-out chars/token EN {chars_per_token(t, test_en):.2f}, "
              f"AR {chars_per_token(t, test_ar):.2f}")

    init = build_demo_model(settings.models_dir / "translator-init", seed=0, hidden_size=args.hidden,
                            num_layers=args.layers, tokenizer_dir=tok_dir)
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(str(init)).parameters())
    print(f"model: random LFM2, hidden {args.hidden}, {args.layers} layers, {n_params:,} parameters (tied "
          f"embeddings), float32 on CPU")

    prompts = [HALA_TRANSLATOR_TEMPLATE.format(src_lang="English", tgt_lang="Arabic", text=e) for e in train_en]
    data = home / "ntrex-train-pairs.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for p, a in zip(prompts, train_ar, strict=True):
            fh.write(json.dumps({"prompt": p, "completion": a}, ensure_ascii=False) + "\n")

    before, before_hyps, before_s = translate_and_score(init, test_en, test_ar, args.max_new_tokens, args.gen_batch)
    print(f"before training (random init): chrF++ {before['chrf++']:.2f}, BLEU {before['bleu']:.2f} "
          f"({before_s:.1f} s to translate {len(test_en)} lines)")

    def make_spec(max_steps: int, save_steps: int) -> TrainSpec:
        return TrainSpec(preset="translator", base_model=str(init), datasets=(str(data),), eval_split=0.0,
                         learning_rate=args.lr, max_steps=max_steps, per_device_train_batch_size=args.batch,
                         max_length=args.max_length, warmup_steps=0.05, lr_scheduler_type="cosine",
                         logging_steps=max(1, max_steps // 20), save_steps=save_steps, seed=args.seed,
                         advanced=json.loads(args.advanced), output="ntrex-translator")

    if not args.minutes:
        max_steps, step_s = args.max_steps, None
    else:
        step_s = estimate_step_seconds(make_spec(16, 10**6), data, home / "estimate")
        max_steps = max(10, int(args.minutes * 60 / step_s))
        print(f"estimated {step_s:.2f} s a step (TRL's loop, same SFTConfig, 16 steps) → max_steps {max_steps} "
              f"for {args.minutes:g} minutes")
    epochs = max_steps * args.batch / len(train_en)
    spec = make_spec(max_steps, max_steps)
    spec_path = home / "train.yaml"
    spec_path.write_text(yaml.safe_dump(json.loads(spec.model_dump_json())), encoding="utf-8")
    print(f"train job: translator preset, {max_steps} steps × batch {args.batch} ({epochs:.2f} epochs), lr "
          f"{args.lr}, cosine, warmup 5 %, max_length {args.max_length}"
          + (f", advanced {spec.advanced}" if spec.advanced else ""))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "workbench.cli", "run", str(spec_path), "--inline", "--json"],
                       capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "HALA_HOME": str(home), "HALA_DB_URL": settings.db_url})
    job_wall = time.perf_counter() - t0
    try:
        info = json.loads(p.stdout)
    except json.JSONDecodeError:
        sys.exit(f"the train job printed no summary (exit {p.returncode}):\n{p.stderr[-3000:]}")
    if info["status"] != "succeeded":
        sys.exit(f"train job {info['id']} {info['status']}: {info.get('error')}\nlog: {info.get('log_path')}")
    result = info["result"]
    trained = next(Path(a["path"]) for a in info["artifacts"] if a["name"] == result["model"])
    from db.queries import job_metrics
    from db.session import read_scope

    with read_scope(settings.db_url) as s:
        losses = job_metrics(s, info["id"]).get("loss", [])
    curve = ", ".join(f"{step}: {v:.2f}" for step, v in losses[:: max(1, len(losses) // 6)] + losses[-1:])
    print(f"job {info['id']} succeeded: {result['steps']} steps in {result['seconds']:.0f} s of training "
          f"({result['seconds'] / result['steps']:.2f} s a step"
          + (f"; estimated {step_s:.2f}" if step_s else "") + f"), {result.get('tokens_per_s')} tokens/s; "
          f"job process {job_wall:.0f} s; loss curve (step: loss) {curve}")

    after, after_hyps, after_s = translate_and_score(trained, test_en, test_ar, args.max_new_tokens, args.gen_batch)
    print(f"after training ({result['model']}): chrF++ {after['chrf++']:.2f}, BLEU {after['bleu']:.2f} "
          f"({after_s:.1f} s to translate)")
    for i in (0, 1, 2):
        print(f"\n  EN     {test_en[i][:160]}\n  ref    {test_ar[i][:160]}\n  before {before_hyps[i][:160]!r}\n"
              f"  after  {after_hyps[i][:160]!r}")
    print(f"\nheld-out {len(test_en)} NTREX lines, greedy, max_new_tokens {args.max_new_tokens}, hala-translator "
          f"template")
    print(f"{'':10}{'chrF++':>10}{'BLEU':>10}")
    print(f"{'before':10}{before['chrf++']:>10.2f}{before['bleu']:>10.2f}")
    print(f"{'after':10}{after['chrf++']:>10.2f}{after['bleu']:>10.2f}")
    print(f"{'delta':10}{after['chrf++'] - before['chrf++']:>+10.2f}{after['bleu'] - before['bleu']:>+10.2f}")
    verdict = "after > before" if after["chrf++"] > before["chrf++"] else "NO improvement in chrF++"
    print(f"{verdict}; whole script {time.perf_counter() - started:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
