"""Chat latency: time to first token and tokens/s for one chat, then for N concurrent chats on the same model
(threads, as the Chat tab serves several viewers), with the single chat as the baseline of the ratio.

Usage: python benchmarks/chat_latency.py [--concurrent 4] [--tokens 128] [--hidden 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = ["ما هي عاصمة مصر؟", "Write one sentence about the sea.", "اشرح معنى الذكاء الاصطناعي.",
           "ترجم إلى العربية: good morning", "Name three Arabic poets.", "ما هو أطول نهر في العالم؟"]


def one_chat(model, prompt: str, tokens: int, out: list) -> None:  # noqa: ANN001
    from hala_core.engine import GenerationSettings

    settings = GenerationSettings(max_new_tokens=tokens, temperature=0.7, top_p=0.95, repetition_penalty=1.1)
    t0 = time.perf_counter()
    first = None
    stream = model.stream([{"role": "user", "content": prompt}], settings)
    for _ in stream:
        if first is None:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    n = stream.stats.get("tokens", 0)
    out.append({"ttft": first or total, "tokens": n, "seconds": total})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from hala_core.chat import ChatModel
    from hala_core.demo_models import build_demo_model

    path = build_demo_model(Path(tempfile.mkdtemp(prefix="hala-chat-bench-")) / "m", seed=0, hidden_size=args.hidden)
    model = ChatModel.load(path)
    one_chat(model, PROMPTS[0], 8, [])  # warm-up

    single: list[dict] = []
    for r in range(args.rounds):
        one_chat(model, PROMPTS[r % len(PROMPTS)], args.tokens, single)
    many: list[dict] = []
    walls = []
    for _ in range(args.rounds):
        results: list[dict] = []
        threads = [threading.Thread(target=one_chat, args=(model, PROMPTS[i % len(PROMPTS)], args.tokens, results))
                   for i in range(args.concurrent)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        walls.append((time.perf_counter() - t0, sum(x["tokens"] for x in results)))
        many += results

    s_ttft = statistics.median(x["ttft"] for x in single) * 1000
    s_tps = statistics.median(x["tokens"] / x["seconds"] for x in single)
    m_ttft = statistics.median(x["ttft"] for x in many) * 1000
    m_tps = statistics.median(x["tokens"] / x["seconds"] for x in many)
    agg = statistics.median(n / w for w, n in walls)
    print(f"demo LFM2 (hidden {args.hidden}), {args.tokens} new tokens, sampling, CPU, {args.rounds} rounds")
    print(f"1 chat:  time to first token {s_ttft:.0f} ms, {s_tps:.0f} tokens/s")
    print(f"{args.concurrent} concurrent chats: time to first token {m_ttft:.0f} ms (median), "
          f"{m_tps:.0f} tokens/s per chat, {agg:.0f} tokens/s in total")
    print(f"ratio total throughput {args.concurrent} chats / 1 chat: {agg / s_tps:.2f}x; "
          f"time to first token {m_ttft / max(s_ttft, 1e-9):.1f}x")


if __name__ == "__main__":
    main()
