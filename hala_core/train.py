"""Supervised fine-tuning with TRL's ``SFTTrainer``: the translator preset and instruction SFT.

The step mixes the chosen datasets by weight, holds out an eval split, builds TRL's own ``SFTConfig`` from the
spec (plus any other SFTConfig field from ``advanced``), and trains with a callback that streams the curves into
the run's metrics, saves a checkpoint when asked to stop, and registers every checkpoint as a model artifact.
"""

from __future__ import annotations

import difflib
import json
import math
import time
from pathlib import Path
from typing import Any

from hala_core.context import RunContext, StopRequested
from hala_core.specs import TrainSpec

# SFTConfig fields the spec names itself (passed through as they are).
SPEC_FIELDS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
               "gradient_accumulation_steps", "max_length", "packing", "warmup_steps", "lr_scheduler_type",
               "weight_decay", "assistant_only_loss", "save_steps", "logging_steps", "seed", "gradient_checkpointing")
# SFTConfig fields the workbench sets and ``advanced`` may not: what to use instead.
RESERVED = {"output_dir": "the job folder holds the checkpoints", "report_to": "metrics go to the workbench",
            "logging_dir": "metrics go to the workbench", "resume_from_checkpoint": "use resume_from",
            "push_to_hub": "models are artifacts of the workspace", "hub_model_id": "models are artifacts",
            "hub_token": "models are artifacts", "bf16": "use precision", "fp16": "use precision",
            "use_cpu": "the device follows the machine", "eval_strategy": "set eval_split / eval_steps",
            "do_eval": "set eval_split", "save_strategy": "set save_steps"}
PAIR_COLUMNS = ("prompt", "completion")
CHAT_COLUMN = "messages"
METRIC_KEYS = {"loss": "loss", "eval_loss": "eval_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm",
               "epoch": "epoch", "train_tokens_per_second": "tokens_per_s", "mean_token_accuracy": "token_accuracy",
               "eval_mean_token_accuracy": "eval_token_accuracy", "num_input_tokens_seen": "tokens_seen"}
OOM_HINT = ("out of memory: lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the "
            "effective batch), lower max_length, turn on gradient_checkpointing, or train LoRA adapters instead "
            "of the full model; the last checkpoint of this run stays usable (resume_from)")


# --------------------------------------------------------------------------- checks (also run before queueing)

def sft_config_fields() -> set[str]:
    import dataclasses

    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig)}


def check_advanced(advanced: dict[str, Any]) -> None:
    """Unknown or reserved SFTConfig fields → ValueError naming close matches / what to use instead."""
    fields = sft_config_fields()
    for key in advanced:
        if key in RESERVED:
            raise ValueError(f"advanced: {key} is set by the workbench ({RESERVED[key]})")
        if key in SPEC_FIELDS:
            raise ValueError(f"advanced: {key} is a field of the train spec itself; set it there")
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"advanced: {key!r} is not a field of TRL's SFTConfig{hint} "
                             "(see https://huggingface.co/docs/trl/sft_trainer#trl.SFTConfig)")


def precision_flags(precision: str, device: str) -> dict[str, bool]:
    if precision == "auto":
        if device.startswith("cuda"):
            import torch

            return {"bf16": bool(torch.cuda.is_bf16_supported()), "fp16": False}
        return {"bf16": False, "fp16": False}
    if precision in ("bf16", "fp16") and not device.startswith("cuda"):
        raise ValueError(f"precision {precision} needs a GPU; this run is on {device}: use auto or fp32")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def build_sft_config(spec: TrainSpec, output_dir: Path, device: str, has_eval: bool) -> Any:
    """TRL's ``SFTConfig`` for the spec; TRL's own validation errors come back as ValueError."""
    from trl import SFTConfig

    check_advanced(spec.advanced)
    kw: dict[str, Any] = {k: getattr(spec, k) for k in SPEC_FIELDS}
    kw.update(precision_flags(spec.precision, device))
    kw.update(output_dir=str(output_dir), report_to=[], save_strategy="steps", logging_strategy="steps",
              include_num_input_tokens_seen="non_padding", use_cpu=not device.startswith("cuda"),
              disable_tqdm=True, save_total_limit=None)
    if has_eval:
        kw.update(eval_strategy="steps", eval_steps=spec.eval_steps or spec.logging_steps * 5)
    if spec.preset == "translator":
        kw["completion_only_loss"] = True  # learn the translation, not the prompt
    kw.update(spec.advanced)
    try:
        return SFTConfig(**kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"TRL refused the training configuration: {e}") from None


def _load_one(path: Path) -> Any:
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    if path.is_dir():
        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        return ds
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return load_dataset("json", data_files=str(path), split="train")
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    raise ValueError(f"{path}: training data must be JSONL/JSON, Parquet or a datasets folder (save_to_disk)")


def data_format(ds: Any, name: str, preset: str) -> str:
    """``"pairs"`` (prompt/completion) or ``"messages"`` for a dataset, or ValueError saying what is missing."""
    cols = set(ds.column_names)
    if preset == "translator" and set(PAIR_COLUMNS) <= cols:
        return "pairs"
    if CHAT_COLUMN in cols:
        return "messages"
    if set(PAIR_COLUMNS) <= cols:
        return "pairs"
    need = ("prompt and completion (the bilingual pairs export) or messages" if preset == "translator"
            else "messages (a list of {role, content} turns; the corpus export) or prompt and completion")
    raise ValueError(f"dataset {name} has the columns {', '.join(sorted(cols)) or '(none)'}; the {preset} preset "
                     f"needs {need}")


def check_rows(ds: Any, name: str, fmt: str, sample: int = 200) -> None:
    """Look at the first rows: conversations need role/content turns and an assistant turn; pairs need text."""
    rows = ds.select(range(min(sample, len(ds)))) if hasattr(ds, "select") else ds[:sample]
    for i, row in enumerate(rows, start=1):
        if fmt == "pairs":
            if not str(row.get("prompt") or "").strip() or not str(row.get("completion") or "").strip():
                raise ValueError(f"dataset {name}, row {i}: empty prompt or completion")
            continue
        turns = row.get(CHAT_COLUMN)
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"dataset {name}, row {i}: messages is empty or not a list of turns")
        for t in turns:
            if not isinstance(t, dict) or "role" not in t or "content" not in t:
                raise ValueError(f"dataset {name}, row {i}: every turn needs role and content (got {t!r:.80})")
        if not any(t["role"] == "assistant" and str(t["content"] or "").strip() for t in turns):
            raise ValueError(f"dataset {name}, row {i}: no assistant turn with text — nothing to learn from")


def load_mix(items: list[tuple[str, Path, float]], preset: str, eval_split: float, seed: int
             ) -> tuple[Any, Any, dict[str, Any]]:
    """Load, check and mix datasets by weight; hold out ``eval_split`` of the mix. Returns (train, eval, info).

    Each dataset contributes ``total × weight / Σweights`` examples (sampled without replacement when it has
    enough, repeated otherwise), so weights are shares of the mix, whatever the datasets' sizes."""
    import random

    from datasets import concatenate_datasets

    loaded = []
    fmts = set()
    for name, path, weight in items:
        ds = _load_one(path)
        if len(ds) == 0:
            raise ValueError(f"dataset {name} is empty")
        fmt = data_format(ds, name, preset)
        check_rows(ds, name, fmt)
        keep = list(PAIR_COLUMNS) if fmt == "pairs" else [CHAT_COLUMN]
        ds = ds.select_columns(keep)
        loaded.append((name, ds, weight, fmt))
        fmts.add(fmt)
    if len(fmts) > 1:
        raise ValueError("the datasets mix formats (" + ", ".join(f"{n}: {f}" for n, _, _, f in loaded)
                         + "); mix datasets of one format")
    rng = random.Random(seed)
    total = sum(len(ds) for _, ds, _, _ in loaded)
    hold_out = eval_split > 0 and total >= 10
    pools, evals = [], []
    for name, ds, weight, _ in loaded:  # the eval rows are set aside first, so no copy of them is trained on
        idx = list(range(len(ds)))
        rng.shuffle(idx)
        n_eval = min(len(idx) - 1, round(len(idx) * eval_split)) if hold_out else 0
        if n_eval > 0:
            evals.append(ds.select(idx[:n_eval]))
        pools.append((name, ds, weight, idx[n_eval:]))
    total = sum(len(idx) for *_, idx in pools)
    wsum = sum(w for _, _, w, _ in pools)
    parts, counts = [], {}
    for name, ds, weight, idx in pools:
        want = max(1, round(total * weight / wsum))
        picked = (idx * math.ceil(want / len(idx)))[:want]
        parts.append(ds.select(picked))
        counts[name] = want
    mix = concatenate_datasets(parts).shuffle(seed=seed) if len(parts) > 1 else parts[0].shuffle(seed=seed)
    eval_ds = (concatenate_datasets(evals) if len(evals) > 1 else evals[0]) if evals else None
    info = {"format": fmts.pop(), "examples": counts, "train": len(mix), "eval": len(eval_ds) if eval_ds else 0}
    return mix, eval_ds, info


def check_max_length(tokenizer: Any, fmt: str, max_length: int, train: Any, sample: int = 64) -> float:
    """ValueError if the prompt scaffolding alone fills ``max_length``; else the share of examples cut short."""
    from hala_core.translation import HALA_TRANSLATOR_TEMPLATE

    if fmt == "pairs":
        scaffold = len(tokenizer(HALA_TRANSLATOR_TEMPLATE.format(src_lang="English", tgt_lang="Arabic", text=""))
                       ["input_ids"])
    else:
        msgs = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
        try:
            text = tokenizer.apply_chat_template(msgs, tokenize=False)
            scaffold = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        except Exception:  # noqa: BLE001 — a tokenizer without a chat template: TRL will say so itself
            scaffold = 0
    if scaffold >= max_length:
        raise ValueError(f"max_length {max_length} is shorter than the prompt template itself ({scaffold} tokens); "
                         f"raise max_length well above {scaffold}")
    rows = train.select(range(min(sample, len(train))))
    longer = 0
    for row in rows:
        if fmt == "pairs":
            n = len(tokenizer(row["prompt"] + row["completion"])["input_ids"])
        else:
            n = len(tokenizer(" ".join(str(t["content"]) for t in row[CHAT_COLUMN]))["input_ids"]) + scaffold
        longer += n > max_length
    return longer / max(len(rows), 1)


def check_lora_targets(model_path: Path, targets: tuple[str, ...]) -> None:
    """Every LoRA target must match a module of the model (peft's suffix rule); ValueError lists the choices."""
    if targets == ("all-linear",):
        return
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_path))
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    names = [n for n, _ in model.named_modules() if n]
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    for t in targets:
        if t == "all-linear":
            continue
        if not any(n == t or n.endswith("." + t) for n in names):
            raise ValueError(f"LoRA target {t!r} matches no module of {model_path.name}; its linear layers are: "
                             f"{', '.join(linear)} (or use all-linear)")


def peek_columns(path: Path) -> list[str]:
    """The columns of a training file or datasets folder, reading as little as possible."""
    if path.is_dir():
        return list(_load_one(path).column_names)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(str(path)).names)
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as fh:
            head = fh.read(1 << 20).lstrip()
        if head.startswith("["):
            return list(_load_one(path).column_names)
        first = head.splitlines()[0] if head else ""
        try:
            row = json.loads(first)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: the first line is not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: each line must be a JSON object")
        return list(row)
    raise ValueError(f"{path}: training data must be JSONL/JSON, Parquet or a datasets folder (save_to_disk)")


def peek_rows(path: Path, n: int = 200) -> list[dict[str, Any]]:
    """The first ``n`` rows of a training file or datasets folder (for checks before queueing)."""
    if path.is_dir():
        ds = _load_one(path)
        return [ds[i] for i in range(min(n, len(ds)))]
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(str(path))
        return next(pf.iter_batches(batch_size=n)).to_pylist() if pf.metadata.num_rows else []
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        head = fh.read(1 << 16).lstrip()
    if head.startswith("["):
        ds = _load_one(path)
        return [ds[i] for i in range(min(n, len(ds)))]
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno} is not valid JSON ({e})") from None
            if len(rows) >= n:
                break
    return rows


def check_train(spec: TrainSpec, resolve_model: Any, resolve_dataset: Any, workspace: Path | None = None) -> None:
    """What can be checked before queueing: model, data columns, SFTConfig fields, LoRA targets, checkpoint."""
    from hala_core.evaluate import resolve_eval_model

    base = resolve_eval_model(spec.base_model, resolve_model, purpose="training")
    check_advanced(spec.advanced)
    fmts = {}
    for d in spec.datasets:
        path = Path(resolve_dataset(d.dataset)[0])

        class _Cols:  # data_format wants something with column_names
            column_names = peek_columns(path)

        fmts[d.dataset] = data_format(_Cols, d.dataset, spec.preset)
        check_rows(peek_rows(path), d.dataset, fmts[d.dataset])
    if len(set(fmts.values())) > 1:
        raise ValueError("the datasets mix formats (" + ", ".join(f"{n}: {f}" for n, f in fmts.items())
                         + "); mix datasets of one format")
    if spec.method == "lora":
        check_lora_targets(base.path, spec.lora.target_modules)
    if spec.precision in ("bf16", "fp16") and spec.num_processes == 1:
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"precision {spec.precision} needs a GPU and there is none here: use auto or fp32")
    if spec.evaluate_after:
        from hala_core.benchmarks import resolve_benchmarks

        resolve_benchmarks(list(spec.evaluate_after), workspace)
    if spec.resume_from:
        resolved = resolve_model(spec.resume_from)
        path = Path(resolved.path) if resolved.path else Path(spec.resume_from)
        if not (path / "trainer_state.json").is_file():
            raise ValueError(f"resume_from {spec.resume_from!r} is not a training checkpoint (no "
                             f"trainer_state.json in {path})")
        done_step = json.loads((path / "trainer_state.json").read_text()).get("global_step", 0)
        if 0 < spec.max_steps <= done_step:
            raise ValueError(f"the checkpoint is at step {done_step} and max_steps is {spec.max_steps}: raise "
                             "max_steps (or the epochs) to train further")


# --------------------------------------------------------------------------- the step

class _Reporter:
    """The TrainerCallback: curves into the db, progress, stop → save a checkpoint, checkpoints → artifacts."""

    def __init__(self, ctx: RunContext, spec: TrainSpec, inputs: list[int], base_ref: str) -> None:
        self.ctx, self.spec, self.inputs, self.base_ref = ctx, spec, inputs, base_ref
        self.stopped = False
        self.checkpoints: list[tuple[int, Path, int]] = []
        self.last: dict[str, float] = {}
        self.started = time.monotonic()

    def callback(self) -> Any:
        from transformers import TrainerCallback

        reporter = self

        class HalaCallback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, ANN201
                if state.is_world_process_zero and logs:
                    reporter.on_log(state.global_step, logs)

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                if state.is_world_process_zero:
                    loss = reporter.last.get("loss")
                    reporter.ctx.progress(state.global_step, state.max_steps,
                                          f"step {state.global_step}/{state.max_steps}"
                                          + (f" · loss {loss:.4f}" if loss is not None else ""))
                stop = reporter.ctx.should_stop()
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized():  # every rank stops at the same step
                    import torch

                    flag = torch.tensor([1.0 if stop else 0.0],
                                        device="cuda" if torch.cuda.is_available() else "cpu")
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop = bool(flag.item())
                if stop and not reporter.stopped:
                    reporter.stopped = True
                    control.should_save = True
                    control.should_training_stop = True
                return control

            def on_save(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                if state.is_world_process_zero:
                    reporter.on_save(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)

        return HalaCallback()

    def on_log(self, step: int, logs: dict[str, Any]) -> None:
        for key, name in METRIC_KEYS.items():
            v = logs.get(key)
            if isinstance(v, int | float) and math.isfinite(float(v)):
                self.ctx.log_metric(name, float(v), step=step)
                self.last[name] = float(v)

    def on_save(self, folder: Path, step: int) -> None:
        name = f"{self.spec.output}-step{step}"
        meta = {"checkpoint": True, "step": step, "base_model": self.base_ref, "train_job": self.ctx.job_id,
                "adapter": self.spec.method == "lora", "loss": self.last.get("loss")}
        art = self.ctx.add_artifact("model", name, folder, meta, inputs=self.inputs)
        self.checkpoints.append((step, folder, art))
        self.ctx.log(f"checkpoint at step {step}: artifact {name}")


def _checkpoint_path(ctx: RunContext, ref: str) -> Path:
    resolved = ctx.resolve_model(ref)
    path = Path(resolved.path) if resolved.path else Path(ref)
    if not (path / "trainer_state.json").is_file():
        raise ValueError(f"resume_from {ref!r} is not a training checkpoint (no trainer_state.json in {path}); "
                         "pick a checkpoint artifact (<output>-step<N>) of an earlier run")
    return path


def model_card(spec: TrainSpec, base_ref: str, data: dict[str, Any], metrics: dict[str, Any], merged: bool) -> str:
    hp = {k: getattr(spec, k) for k in SPEC_FIELDS} | dict(spec.advanced)
    hp_lines = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    data_lines = "\n".join(f"| {n} | {c} |" for n, c in data.get("examples", {}).items())
    metric_lines = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                             for k, v in metrics.items())
    method = "full fine-tune" if spec.method == "full" else (
        f"LoRA r={spec.lora.r}, alpha={spec.lora.alpha}, targets {', '.join(spec.lora.target_modules)}"
        + (" (merged into the weights)" if merged else " (adapter only)"))
    return f"""---
base_model: {base_ref}
library_name: transformers
tags: [hala, trl, sft, {spec.preset}]
---
# {spec.output}

Fine-tuned by the Hala Workbench with TRL `SFTTrainer` ({'translator preset: bilingual pairs in the Hala translator '
'template, loss on the translation' if spec.preset == 'translator' else 'instruction SFT on conversations'}).

- base model: `{base_ref}`
- method: {method}
- data: {data.get('format')} — {data.get('train')} training and {data.get('eval')} held-out examples

| dataset | examples in the mix |
|---|---|
{data_lines}

## Hyperparameters
| field | value |
|---|---|
{hp_lines}

## Final metrics
| metric | value |
|---|---|
{metric_lines}

Licence: that of the base model and of the training data (see their cards).
"""


def train_step(spec: TrainSpec, ctx: RunContext) -> None:
    import torch
    from transformers import AutoTokenizer

    from hala_core.evaluate import pick_device, resolve_eval_model

    base = resolve_eval_model(spec.base_model, ctx.resolve_model, purpose="training")
    items, inputs = [], [base.artifact_id] if base.artifact_id else []
    for d in spec.datasets:
        path, art_id = ctx.resolve_dataset(d.dataset)
        items.append((d.dataset, Path(path), d.weight))
        if art_id:
            inputs.append(art_id)
    if spec.method == "lora":
        check_lora_targets(base.path, spec.lora.target_modules)
    device, _ = pick_device("auto")
    resume = _checkpoint_path(ctx, spec.resume_from) if spec.resume_from else None
    done_step, done_tokens = 0, 0
    if resume is not None:
        state = json.loads((resume / "trainer_state.json").read_text())
        done_step, done_tokens = int(state.get("global_step", 0)), int(state.get("num_input_tokens_seen", 0) or 0)
        if 0 < spec.max_steps <= done_step:
            raise ValueError(f"the checkpoint is at step {done_step} and max_steps is {spec.max_steps}: raise "
                             "max_steps (or the epochs) to train further")
        resumed = ctx.resolve_model(spec.resume_from)
        if resumed.artifact_id:
            inputs.append(resumed.artifact_id)
        ctx.log(f"resuming from {resume} (step {done_step})")
    train_ds, eval_ds, data = load_mix(items, spec.preset, spec.eval_split, spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base.path))
    cut = check_max_length(tokenizer, data["format"], spec.max_length, train_ds)
    ctx.log(f"data: {data['format']}, {data['train']} training / {data['eval']} eval examples, mix {data['examples']}"
            + (f"; {cut:.0%} of sampled examples are longer than max_length {spec.max_length} and get cut"
               if cut else ""))
    out_dir = ctx.job_dir / "checkpoints"
    config = build_sft_config(spec, out_dir, device, has_eval=eval_ds is not None)
    peft_config = None
    if spec.method == "lora":
        from peft import LoraConfig

        targets = spec.lora.target_modules
        peft_config = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                                 target_modules="all-linear" if targets == ("all-linear",) else list(targets),
                                 task_type="CAUSAL_LM")
    from trl import SFTTrainer

    reporter = _Reporter(ctx, spec, inputs, spec.base_model)
    ctx.progress(0, 0, f"loading {spec.base_model} on {device}")
    trainer = SFTTrainer(model=str(base.path), args=config, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[reporter.callback()])
    ctx.log(f"training on {device}: {sum(p.numel() for p in trainer.model.parameters() if p.requires_grad):,} "
            f"trainable parameters; {config.max_steps if config.max_steps > 0 else 'epoch-based'} steps")
    started = time.monotonic()
    try:
        out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.cuda.OutOfMemoryError as e:
        raise RuntimeError(f"{OOM_HINT} ({e})") from None
    except RuntimeError as e:
        if "out of memory" in str(e).lower():
            raise RuntimeError(f"{OOM_HINT} ({str(e).splitlines()[0]})") from None
        raise
    elapsed = time.monotonic() - started
    step = trainer.state.global_step
    if reporter.stopped:
        last = reporter.checkpoints[-1] if reporter.checkpoints else None
        where = f"; checkpoint {spec.output}-step{last[0]} saved — resume from it" if last else ""
        ctx.set_result({"stopped_at_step": step, "checkpoint": f"{spec.output}-step{last[0]}" if last else None})
        raise StopRequested(f"stopped at step {step}{where}")
    # the trainer averages its loss over all steps, those before the checkpoint included: take this job's share
    own_steps = max(step - done_step, 1)
    metrics: dict[str, Any] = {"steps": step, "train_loss": float(out.training_loss) * step / own_steps,
                               "seconds": round(elapsed, 1)}
    if done_step:
        metrics["resumed_at_step"] = done_step
    if reporter.last.get("loss") is not None:
        metrics["final_loss"] = reporter.last["loss"]
    if eval_ds is not None:
        metrics["eval_loss"] = float(trainer.evaluate()["eval_loss"])  # logged through the callback too
    tokens = (trainer.state.num_input_tokens_seen or 0) - done_tokens  # this job's tokens only
    if tokens > 0 and elapsed > 0:
        metrics["tokens_per_s"] = round(tokens / elapsed, 1)
    final = ctx.artifact_path("model", spec.output)
    merged = False
    if trainer.is_world_process_zero():
        final.mkdir(parents=True, exist_ok=True)
        if spec.method == "lora" and spec.merge_lora:
            model = trainer.model.merge_and_unload()
            model.save_pretrained(str(final))
            merged = True
        else:
            trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
        (final / "README.md").write_text(model_card(spec, spec.base_model, data, metrics, merged), encoding="utf-8")
        meta = {"base_model": spec.base_model, "preset": spec.preset, "method": spec.method, "merged": merged,
                "adapter": spec.method == "lora" and not merged, "train_job": ctx.job_id, **metrics}
        art = ctx.add_artifact("model", spec.output, final, meta, inputs=inputs)
        import os

        ctx.set_result({**metrics, "model": spec.output, "artifact_id": art, "data": data,
                        "launch": os.environ.get("HALA_LAUNCH_COMMAND", "one process"),
                        "checkpoints": [f"{spec.output}-step{s}" for s, _, _ in reporter.checkpoints]})
    ctx.log(f"done: {step} steps in {elapsed:.1f} s; model {spec.output} → {final}")
    if spec.evaluate_after and trainer.is_world_process_zero():
        job = ctx.enqueue({"kind": "eval", "models": [spec.output], "benchmarks": list(spec.evaluate_after)})
        ctx.log(f"evaluation of {spec.output} on {', '.join(spec.evaluate_after)} queued as job {job}")


# --------------------------------------------------------------------------- several GPUs

def _accelerate_options(spec: TrainSpec) -> list[str]:
    opts = ["--mixed_precision", "bf16" if spec.precision in ("auto", "bf16")
            else ("fp16" if spec.precision == "fp16" else "no")]
    if spec.distributed == "fsdp":
        opts += ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                 "--fsdp_state_dict_type", "FULL_STATE_DICT"]
    else:
        opts += ["--multi_gpu"]
    return opts


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_command(spec: TrainSpec, job_id: int, gpus_visible: int, main_host: str | None = None,
                        port: int | None = None) -> tuple[list[str] | None, dict[str, str], str]:
    """The ``accelerate launch`` line for a multi-process run: (argv or None, extra env, a note for the log).

    None when one process will do: ``num_processes`` 1, or no GPU here (then the run goes on as one process on
    the CPU, and the note says so).

    Several Slurm nodes (``executor: slurm`` with ``slurm.nodes`` N > 1; run inside the allocation, ``main_host``
    the allocation's first host): ``srun --nodes=N --ntasks-per-node=1 bash -c 'exec … accelerate launch
    --num_machines N --machine_rank "$SLURM_NODEID" --main_process_ip <main_host> --main_process_port <port>
    --num_processes N*gpus_per_node … -m jobs.run_rank <id>'`` — one launcher per node (each reads its own
    ``SLURM_NODEID``), one rank per GPU; ``num_processes`` and ``gpus`` of the spec do not apply."""
    import shlex
    import socket
    import sys

    slurm = getattr(spec, "slurm", None)
    if getattr(spec, "executor", "local") == "slurm" and slurm is not None and slurm.nodes > 1:
        nodes = slurm.nodes
        per_node = slurm.gpus_per_node or gpus_visible
        if per_node < 1:
            raise ValueError(f"slurm.nodes is {nodes}: a multi-node run needs GPUs; set slurm.gpus_per_node "
                             "(one process per GPU)")
        if not main_host:
            raise ValueError("a multi-node run needs the allocation's first host (main_host)")
        if port is None:  # the batch script runs on the first node: probe there, else a port of this job's own
            here = socket.gethostname().split(".")[0]
            port = _free_port() if here == main_host.split(".")[0] else 29500 + job_id % 1000
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nodes * per_node),
                  "--num_machines", str(nodes), "--machine_rank", "$SLURM_NODEID", "--main_process_ip", main_host,
                  "--main_process_port", str(port), *_accelerate_options(spec), "-m", "jobs.run_rank", str(job_id)]
        script = "exec " + " ".join('"$SLURM_NODEID"' if a == "$SLURM_NODEID" else shlex.quote(a) for a in launch)
        cmd = ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "bash", "-c", script]
        return cmd, {"HALA_RANK_CHILD": "1"}, " ".join(cmd[:-1]) + " " + shlex.quote(script)

    n = spec.num_processes
    if n <= 1:
        return None, {}, "one process"
    if gpus_visible == 0:
        return None, {}, (f"num_processes {n} asked for, but no GPU is visible here: training as one process on "
                          "the CPU")
    wanted = len(spec.gpus.split(",")) if spec.gpus else gpus_visible
    if n > wanted:
        raise ValueError(f"num_processes {n} is more than the GPUs available to the run ({wanted}"
                         f"{' in gpus=' + spec.gpus if spec.gpus else ' visible'}); one process per GPU")
    port = port or _free_port()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), "--num_machines", "1",
           "--main_process_port", str(port), *_accelerate_options(spec), "-m", "jobs.run_rank", str(job_id)]
    env = {"HALA_RANK_CHILD": "1"}
    if spec.gpus:
        env["CUDA_VISIBLE_DEVICES"] = spec.gpus
    return cmd, env, " ".join(cmd)
