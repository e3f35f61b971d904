"""Training throughput of the workbench's train job against a plain TRL ``SFTTrainer`` script: same random LFM2
(built once), same NTREX pairs in the Hala translator template, same ``SFTConfig``, same data order. Goal: the
job's training-loop tokens/s ÷ the plain script's ≥ 0.95 (the workbench costs ≤ 5 %).

Each side runs in a fresh process, alternating in ABBA order (plain, job, job, plain, …), each with an empty
datasets cache:
- job: ``hala run spec.yaml --inline`` (CLI, precheck, enqueue, the worker spawning ``python -m jobs.run``, the
  train step with its db-writing callback, final save, model card, artifacts);
- plain: ``SFTTrainer(model=path, args=SFTConfig(...), train_dataset=..., processing_class=tokenizer)``,
  ``trainer.train()``, ``trainer.save_model()``.
The script checks that the two ``SFTConfig`` objects are equal (the job's from ``hala_core.train.build_sft_config``)
and that both sides saw the same number of tokens.

Three training-loop measures, each compared like with like:
- "train()": wall time around ``trainer.train()`` (the job's ``result.seconds``, the plain script's own timer);
- "train_runtime": the Trainer's own ``train_runtime`` (the plain script's metrics; the job's from its log, where
  TRL's PrinterCallback writes every log dict).
- "CPU-s": CPU seconds (all threads) of the training process between the line it logs just before
  ``trainer.train()`` and TRL's last log dict of ``train()``, read from /proc by polling both sides the same way
  (every 50 ms) — less sensitive than wall time when other work shares the cores.
Tokens are ``trainer.state.num_input_tokens_seen`` (both sides set ``include_num_input_tokens_seen="non_padding"``,
as the workbench does: real tokens, padding excluded; TRL's ``num_tokens`` is printed beside it). End-to-end wall and CPU
time of each side's whole process tree (imports, model load, tokenization, training, save; for the job also the
CLI, precheck and worker processes) are reported separately.

Every process runs with ``--threads`` torch/OpenMP threads (default 1, set through OMP_NUM_THREADS): on a shared
2-core machine, two threads per process made a training step of a similar small LFM2 ~20× slower (5.7 s instead
of 0.25 s) whenever another process held a core, which buries any overhead in noise; ``--threads 0`` keeps
torch's default.

Usage: python benchmarks/train_overhead.py [--pairs 400] [--max-steps 60] [--batch 8] [--max-length 256]
       [--logging-steps 10] [--hidden 256] [--layers 4] [--runs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_workspace import add_thread_argument, bench_workspace  # noqa: E402

# The baseline: what one would write with TRL alone (config fields passed in as JSON, so both sides match).
PLAIN = """
import json, random, sys, time
t_start = time.perf_counter()
from datasets import load_dataset
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer

model, data, out, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
ds = load_dataset("json", data_files=data, split="train")
idx = list(range(len(ds)))
random.Random(cfg["seed"]).shuffle(idx)
ds = ds.select(idx).shuffle(seed=cfg["seed"])  # the order the workbench's weighted mix gives one dataset
tokenizer = AutoTokenizer.from_pretrained(model)
trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=out + "/checkpoints", **cfg), train_dataset=ds,
                     processing_class=tokenizer)
print("[plain] training on cpu", flush=True)
t0, c0 = time.perf_counter(), time.process_time()
res = trainer.train()
loop, loop_cpu_inside = time.perf_counter() - t0, time.process_time() - c0
trainer.save_model(out + "/final")
tokenizer.save_pretrained(out + "/final")
print("PLAIN-RESULT " + json.dumps({"train_s": loop, "train_runtime": res.metrics["train_runtime"],
                                    "tokens": trainer.state.num_input_tokens_seen, "steps": trainer.state.global_step,
                                    "train_loss": res.training_loss, "before_train_s": t0 - t_start,
                                    "loop_cpu_inside": loop_cpu_inside}), flush=True)
"""


def last_log(text: str, key: str) -> dict[str, Any] | None:
    """The last log dict (printed by TRL's PrinterCallback as a Python dict) that holds ``key``."""
    found = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and f"'{key}'" in line:
            try:
                found = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                continue
    return found


def num(v: Any) -> float:
    return float(v) if v is not None else float("nan")


TICK = os.sysconf("SC_CLK_TCK")
START_MARK = "] training on "  # the job's log line just before trainer.train(); the plain script prints it too
END_MARK = "'train_loss'"  # TRL's PrinterCallback: the last log dict of trainer.train()


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid: int) -> float:
    """The peak resident set (VmHWM) of a process so far, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def job_child(cli_pid: int, home: Path) -> tuple[int, Path] | None:
    """The ``python -m jobs.run ID`` child of the CLI process, and its log file."""
    for children in Path(f"/proc/{cli_pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"jobs.run" in argv:
                job_id = argv[argv.index(b"jobs.run") + 1].decode()
                return int(pid), home / "jobs" / job_id / "job.log"
    return None


def watched(cmd: list[str], env: dict[str, str], cwd: Path, out: Path, target: Any) -> dict[str, Any]:
    """Run ``cmd`` and measure, from outside and the same way for both sides, the CPU seconds the training
    process spends between START_MARK and END_MARK in its log (polled every 50 ms), the process tree's
    end-to-end wall and CPU (every descendant is reaped, so RUSAGE_CHILDREN holds them all)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(out, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    found, pos, text, cpu0, cpu1, t_loop0, t_loop1, rss = None, 0, "", None, None, None, None, float("nan")
    while p.poll() is None:
        time.sleep(0.05)
        if found is None:
            found = target(p.pid)
            continue
        pid, log = found
        try:
            with open(log, encoding="utf-8", errors="replace") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
        except OSError:
            continue
        text += chunk
        if cpu0 is None and START_MARK in text:
            cpu0, t_loop0 = proc_cpu(pid), time.perf_counter()
            text = text[text.index(START_MARK):]
            if END_MARK in text:  # both in one poll: the start was missed
                cpu0 = float("nan")
        if cpu0 is not None and cpu1 is None and END_MARK in text:
            cpu1, t_loop1, rss = proc_cpu(pid), time.perf_counter(), peak_rss_mb(pid)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    loop_cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else float("nan")
    loop_wall = (t_loop1 - t_loop0) if t_loop0 is not None and t_loop1 is not None else float("nan")
    return {"rc": p.returncode, "wall": wall, "cpu": cpu, "loop_cpu": loop_cpu, "loop_wall_seen": loop_wall,
            "peak_rss_mb": rss}


def run_plain(model: Path, data: Path, work: Path, cfg: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out = work / "stdout.log"
    w = watched([sys.executable, "-c", PLAIN, str(model), str(data), str(work), json.dumps(cfg)], env, work, out,
                lambda pid: (pid, out))
    text = out.read_text(encoding="utf-8", errors="replace")
    if w["rc"] != 0:
        sys.exit(f"plain TRL script failed:\n{text[-3000:]}")
    res = json.loads(text.split("PLAIN-RESULT ", 1)[1].splitlines()[0])
    final = last_log(text, "num_tokens") or {}
    return {**res, **w, "num_tokens": num(final.get("num_tokens"))}


def run_job(spec_path: Path, env: dict[str, str], home: Path) -> dict[str, Any]:
    out = spec_path.with_suffix(".out")
    w = watched([sys.executable, "-m", "workbench.cli", "run", str(spec_path), "--inline", "--json"], env, ROOT,
                out, lambda pid: job_child(pid, home))
    text = out.read_text(encoding="utf-8", errors="replace")
    try:
        info = json.loads(text[text.index("{"):])
    except ValueError:
        sys.exit(f"the train job printed no summary (exit {w['rc']}):\n{text[-3000:]}")
    if info["status"] != "succeeded":
        sys.exit(f"train job {info['id']} {info['status']}: {info.get('error')}\nlog: {info.get('log_path')}")
    result = info["result"]
    log = Path(info["log_path"]).read_text(encoding="utf-8", errors="replace")
    final = last_log(log, "train_loss") or {}
    last_step_log = last_log(log, "num_tokens") or {}
    return {**w, "train_s": float(result["seconds"]), "train_runtime": num(final.get("train_runtime")),
            "tokens": int(final.get("num_input_tokens_seen") or 0), "steps": result["steps"],
            "train_loss": result["train_loss"], "num_tokens": num(last_step_log.get("num_tokens")),
            "tokens_per_s_result": result.get("tokens_per_s"), "job_id": info["id"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=400, help="NTREX EN→AR pairs in the training file")
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--logging-steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=2, help="runs of each side, alternating")
    add_thread_argument(ap)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ntrex128_en_ar"))
    args = ap.parse_args()

    settings, load_start = bench_workspace("hala-train-bench-", args.threads)
    home = settings.home
    import yaml

    from hala_core.demo_models import build_demo_model
    from hala_core.specs import TrainSpec
    from hala_core.train import build_sft_config
    from hala_core.translation import HALA_TRANSLATOR_TEMPLATE, load_parallel

    model = build_demo_model(settings.models_dir / "bench-train-base", seed=0, hidden_size=args.hidden,
                             num_layers=args.layers)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model))
    n_params, vocab = sum(p.numel() for p in base.parameters()), base.config.vocab_size
    del base
    en, ar = load_parallel(args.data, args.pairs)
    data = home / "ntrex-pairs.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for e, a in zip(en, ar, strict=True):
            prompt = HALA_TRANSLATOR_TEMPLATE.format(src_lang="English", tgt_lang="Arabic", text=e)
            fh.write(json.dumps({"prompt": prompt, "completion": a}, ensure_ascii=False) + "\n")

    common = {"learning_rate": args.lr, "max_steps": args.max_steps, "per_device_train_batch_size": args.batch,
              "max_length": args.max_length, "logging_steps": args.logging_steps, "seed": 42}
    # Everything else the job's SFTConfig holds (build_sft_config): the spec's defaults and the workbench's fixed
    # fields. The check below compares the two configs field by field.
    plain_cfg = {**common, "num_train_epochs": 1.0, "gradient_accumulation_steps": 1, "packing": False,
                 "warmup_steps": 0.03, "lr_scheduler_type": "cosine", "weight_decay": 0.0,
                 "assistant_only_loss": False, "save_steps": 500, "gradient_checkpointing": False, "bf16": False,
                 "fp16": False, "report_to": [], "save_strategy": "steps", "logging_strategy": "steps",
                 "include_num_input_tokens_seen": "non_padding", "use_cpu": True, "disable_tqdm": True,
                 "save_total_limit": None, "completion_only_loss": True}

    def spec_for(i: int) -> TrainSpec:
        return TrainSpec(preset="translator", base_model=str(model), datasets=(str(data),), eval_split=0.0,
                         output=f"bench-translator-{i}", **common)

    from trl import SFTConfig

    ours = build_sft_config(spec_for(0), home / "x", "cpu", has_eval=False).to_dict()
    theirs = SFTConfig(output_dir=str(home / "x"), **plain_cfg).to_dict()
    diff = {k: (ours.get(k), theirs.get(k)) for k in set(ours) | set(theirs)
            if k not in ("output_dir", "logging_dir") and ours.get(k) != theirs.get(k)}
    if diff:
        sys.exit(f"the two SFTConfigs differ: {diff}")
    print(f"model: random LFM2, hidden {args.hidden}, {args.layers} layers, {n_params:,} parameters, "
          f"vocab {vocab} (demo tokenizer); data: {len(en)} NTREX EN→AR pairs in the Hala translator template")
    print(f"SFTConfig (identical on both sides, checked field by field): max_steps {args.max_steps}, batch "
          f"{args.batch}, max_length {args.max_length}, logging_steps {args.logging_steps}, lr {args.lr}, seed 42, "
          "completion_only_loss, no eval, fp32 on CPU")

    plain, job = [], []

    def line(side: str, r: dict[str, Any]) -> str:
        return (f"{side}: train() {r['train_s']:.1f} s wall / {r['loop_cpu']:.1f} s CPU, train_runtime "
                f"{r['train_runtime']:.1f} s, {r['tokens']:,} tokens ({r['num_tokens']:,.0f} non-padding) → "
                f"{r['tokens'] / r['train_s']:.0f} tok/s; process tree {r['wall']:.1f} s wall / {r['cpu']:.1f} s CPU; "
                f"peak RSS {r['peak_rss_mb']:.0f} MiB; loss {r['train_loss']:.4f}; load {os.getloadavg()[0]:.2f}")

    def do_plain(i: int) -> None:
        work = home / f"plain-{i}"
        work.mkdir()
        env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-datasets")}
        plain.append(run_plain(model, data, work, plain_cfg, env))
        print(f"run {i + 1} " + line("plain", plain[-1])
              + f" (CPU inside the script: {plain[-1]['loop_cpu_inside']:.1f} s)", flush=True)

    def do_job(i: int) -> None:
        spec_path = home / f"spec-{i}.yaml"
        spec_path.write_text(yaml.safe_dump(json.loads(spec_for(i).model_dump_json())), encoding="utf-8")
        env = {**os.environ, "HALA_DB_URL": settings.db_url,
               "HF_DATASETS_CACHE": str(home / f"job-{i}-hf-datasets")}
        job.append(run_job(spec_path, env, home))
        r = job[-1]
        print(f"run {i + 1} " + line(f"job {r['job_id']}", r) + f" (result.tokens_per_s {r['tokens_per_s_result']})",
              flush=True)

    for i in range(args.runs):  # ABBA order: plain, job, job, plain, …
        for do in (do_plain, do_job) if i % 2 == 0 else (do_job, do_plain):
            do(i)
        if job[-1]["tokens"] != plain[-1]["tokens"] or job[-1]["steps"] != plain[-1]["steps"]:
            print(f"  warning: the sides differ in work: job {job[-1]['steps']} steps / {job[-1]['tokens']} tokens, "
                  f"plain {plain[-1]['steps']} steps / {plain[-1]['tokens']} tokens")

    def tps(rows: list[dict[str, Any]], key: str) -> list[float]:
        return [r["tokens"] / r[key] for r in rows]

    print(f"\n{args.runs} runs of each side, alternating (ABBA), fresh processes; load average at start "
          f"{load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    print(f"{'':42}{'plain TRL':>12}{'workbench job':>15}{'job/plain':>11}")
    for key, label in (("train_s", "tokens/s, train() wall"), ("train_runtime", "tokens/s, Trainer train_runtime"),
                       ("loop_cpu", "tokens per CPU-s, train()")):
        p, j = tps(plain, key), tps(job, key)
        print(f"{label + ' (best)':42}{max(p):>12.1f}{max(j):>15.1f}{max(j) / max(p):>11.3f}")
        print(f"{label + ' (median)':42}{statistics.median(p):>12.1f}{statistics.median(j):>15.1f}"
              f"{statistics.median(j) / statistics.median(p):>11.3f}")
    for key, label in (("wall", "end-to-end wall s"), ("cpu", "end-to-end CPU s (process tree)"),
                       ("peak_rss_mb", "training process peak RSS MiB")):
        p, j = [r[key] for r in plain], [r[key] for r in job]
        print(f"{label + ' (best)':42}{min(p):>12.1f}{min(j):>15.1f}{min(j) / min(p):>11.3f}")
        print(f"{label + ' (median)':42}{statistics.median(p):>12.1f}{statistics.median(j):>15.1f}"
              f"{statistics.median(j) / statistics.median(p):>11.3f}")
    ratio = statistics.median(tps(job, "train_s")) / statistics.median(tps(plain, "train_s"))
    print(f"goal: job/plain tokens/s ≥ 0.95 (train() wall, median): {'met' if ratio >= 0.95 else 'NOT met'} "
          f"({ratio:.3f}); on a busy machine trust tokens per CPU-second and the best runs more than the median")

if __name__ == "__main__":
    main()
