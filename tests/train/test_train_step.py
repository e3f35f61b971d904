"""The train step (TRL SFTTrainer) on the demo model with real NTREX-128 data: the translator preset learns, the
model is registered with lineage and a card; stop → checkpoint → resume through a real worker; LoRA merged and
as an adapter; instruction SFT with assistant-only loss; weighted mixing; and the corpus export feeding training.

The demo model has random weights: the assertions are about mechanics (loss goes down, files, lineage, steps),
never about translation quality."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select

from db.models import Job, Segment, Translation
from db.session import read_scope, session_scope
from hala_core.specs import TrainSpec, parse_spec
from hala_core.train import load_mix, train_step
from jobs import queue
from tests.support.workspace import wait_for
from tests.train.conftest import (
    BASE,
    FINAL,
    NTREX,
    add_dataset,
    artifact,
    db_context,
    input_names,
    job,
    message_rows,
    metric_points,
    needs_ntrex,
    pair_rows,
    train_spec,
    write_jsonl,
)

pytestmark = needs_ntrex


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


class _Spy:
    """Records the SFTTrainer the step builds (a subclass that only remembers itself; behaviour unchanged)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import trl

        spy = self
        self.trainers: list[Any] = []

        class RecordingSFTTrainer(trl.SFTTrainer):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                spy.trainers.append(self)

        monkeypatch.setattr(trl, "SFTTrainer", RecordingSFTTrainer)


# ------------------------------------------------------------------------------------ translator preset

def test_translator_preset_on_ntrex_pairs_learns_and_registers_the_model(train_ws, ntrex_lines, monkeypatch):
    add_dataset(train_ws, "ntrex-pairs", pair_rows(ntrex_lines, 128))
    spy = _Spy(monkeypatch)
    spec = parse_spec(train_spec(max_steps=30, learning_rate=1e-3, per_device_train_batch_size=8, max_length=128,
                                 logging_steps=2, eval_split=0.1, eval_steps=10, output="ntrex-translator"))
    ctx = db_context(train_ws, spec)
    train_step(spec, ctx)

    # the loss goes down, the eval loss is logged (every eval_steps and at the end)
    losses = metric_points(train_ws, ctx.job_id, "loss")
    assert [st for st, _ in losses] == list(range(2, 31, 2))
    first, last = statistics.mean(v for _, v in losses[:3]), statistics.mean(v for _, v in losses[-3:])
    assert last < first - 0.1, losses
    evals = metric_points(train_ws, ctx.job_id, "eval_loss")
    assert {10, 20, 30} <= {st for st, _ in evals}
    assert all(0 < v < 20 for _, v in evals)

    # the loss is on the translation only: the prompt's labels are masked, the learned tokens are the completion
    tok = spy.trainers[0].processing_class
    for row in spy.trainers[0].train_dataset.select(range(3)):
        ids, labels = row["input_ids"], row["labels"]
        assert labels[0] == -100 and 0 < sum(x != -100 for x in labels) < len(ids)
        learned = tok.decode([i for i, x in zip(ids, labels, strict=True) if x != -100]).rstrip("\ufffd")
        assert learned and row["completion"].startswith(learned)

    result = job(train_ws, ctx.job_id).result
    assert result["steps"] == 30 and result["model"] == "ntrex-translator"
    assert result["tokens_per_s"] > 0 and result["eval_loss"] > 0
    assert result["data"]["format"] == "pairs" and result["data"]["examples"] == {"ntrex-pairs": 115}
    assert (result["data"]["train"], result["data"]["eval"]) == (115, 13)
    assert result["launch"] == "one process"

    # the final model: an artifact with lineage to the base model and the data, loadable, changed
    art = artifact(train_ws, "ntrex-translator")
    assert art is not None and art.job_id == ctx.job_id
    assert art.meta["base_model"] == BASE and art.meta["preset"] == "translator" and art.meta["method"] == "full"
    assert art.meta["adapter"] is False and art.meta["merged"] is False
    assert {BASE, "ntrex-pairs"} <= input_names(train_ws, art.id)
    final = Path(art.path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(final))
    base = AutoModelForCausalLM.from_pretrained(str(train_ws.models_dir / BASE))
    tuned_sd, base_sd = model.state_dict(), base.state_dict()
    assert tuned_sd.keys() == base_sd.keys()
    assert any(not torch.equal(tuned_sd[k], base_sd[k]) for k in tuned_sd)
    assert AutoTokenizer.from_pretrained(str(final)).chat_template

    # the model card names the base, the data and the hyperparameters
    card = (final / "README.md").read_text(encoding="utf-8")
    assert "base_model: demo-lfm2-a" in card and "`demo-lfm2-a`" in card
    assert "| ntrex-pairs | 115 |" in card and "115 training and 13 held-out" in card
    for line in ("| learning_rate | 0.001 |", "| max_steps | 30 |", "| per_device_train_batch_size | 8 |",
                 "| max_length | 128 |", "| logging_steps | 2 |"):
        assert line in card
    assert "eval_loss" in card and "full fine-tune" in card


# ------------------------------------------------------------------------------------ stop, checkpoint, resume

@pytest.mark.slow
def test_cancel_saves_a_checkpoint_and_resume_continues_the_steps(train_ws, workers, ntrex_lines):
    add_dataset(train_ws, "ntrex-pairs", pair_rows(ntrex_lines, 64))
    with session_scope(train_ws.db_url) as s:
        old = queue.enqueue(s, train_spec(max_steps=200, save_steps=10_000, output="stoppable")).id
    workers.start()
    wait_for(lambda: any(st >= 6 for st, _ in metric_points(train_ws, old, "loss"))
             or job(train_ws, old).status in FINAL, timeout=150, every=0.2, what="step 6 of the first job")
    running = job(train_ws, old)
    assert running.status == "running", (running.status, running.error)
    with session_scope(train_ws.db_url) as s:
        assert queue.request_cancel(s, old) == "cancel requested"
    wait_for(lambda: job(train_ws, old).status in FINAL, timeout=120, what="the cancelled job to end")
    first = job(train_ws, old)
    assert first.status == "cancelled", (first.status, first.error)
    n = first.result["stopped_at_step"]
    assert 6 <= n < 200
    assert first.result["checkpoint"] == f"stoppable-step{n}"
    ckpt = artifact(train_ws, f"stoppable-step{n}")
    assert ckpt is not None and ckpt.job_id == old
    assert ckpt.meta["checkpoint"] is True and ckpt.meta["step"] == n
    state = json.loads((Path(ckpt.path) / "trainer_state.json").read_text())
    assert state["global_step"] == n
    assert artifact(train_ws, "stoppable") is None  # no final model for a stopped run

    with session_scope(train_ws.db_url) as s:
        new = queue.resume(s, old, edits={"max_steps": n + 8}).id
    wait_for(lambda: job(train_ws, new).status in FINAL, timeout=150, what="the resumed job")
    second = job(train_ws, new)
    assert second.status == "succeeded", second.error
    assert second.resume_of_id == old and second.spec["resume_from"] == f"stoppable-step{n}"
    assert second.result["steps"] == n + 8

    before = [st for st, _ in metric_points(train_ws, old, "loss")]
    after = [st for st, _ in metric_points(train_ws, new, "loss")]
    assert after[0] == n + 1  # the steps go on from the checkpoint, no restart at 1
    assert before + after == list(range(1, n + 9))
    final = artifact(train_ws, "stoppable")
    assert final is not None and final.job_id == new
    assert {BASE, "ntrex-pairs", f"stoppable-step{n}"} <= input_names(train_ws, final.id)


# ------------------------------------------------------------------------------------ LoRA

@pytest.mark.parametrize("merge", [True, False], ids=["merged", "adapter"])
def test_lora_merged_is_a_plain_model_and_unmerged_is_an_adapter(train_ws, ntrex_lines, merge):
    add_dataset(train_ws, "ntrex-pairs", pair_rows(ntrex_lines, 32))
    spec = parse_spec(train_spec(method="lora", lora={"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
                                 merge_lora=merge, max_steps=3, learning_rate=1e-2, output="lora-model"))
    ctx = db_context(train_ws, spec)
    train_step(spec, ctx)
    art = artifact(train_ws, "lora-model")
    final = Path(art.path)
    names = {p.name for p in final.iterdir()}
    card = (final / "README.md").read_text(encoding="utf-8")
    assert "LoRA r=8, alpha=16, targets q_proj, v_proj" in card
    base_dir = train_ws.models_dir / BASE
    if merge:
        assert "adapter_config.json" not in names and "adapter_model.safetensors" not in names
        assert art.meta["merged"] is True and art.meta["adapter"] is False
        assert "(merged into the weights)" in card
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(str(final))
        changed = _changed(_weights(final), _weights(base_dir))
        # only the LoRA targets moved: the merge folded the adapters into q_proj and v_proj, nothing else
        assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), changed
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= names
        assert "model.safetensors" not in names
        assert art.meta["adapter"] is True and art.meta["merged"] is False
        assert "(adapter only)" in card
        cfg = json.loads((final / "adapter_config.json").read_text())
        assert cfg["r"] == 8 and set(cfg["target_modules"]) == {"q_proj", "v_proj"}
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(final))
        lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
        assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained (lora_B starts at zero)
    # every checkpoint of a LoRA run is registered as an adapter
    ckpt = artifact(train_ws, "lora-model-step3")
    assert ckpt.meta["checkpoint"] is True and ckpt.meta["adapter"] is True


def test_a_lora_checkpoint_can_be_resumed(train_ws, ntrex_lines):
    from jobs.precheck import precheck

    add_dataset(train_ws, "ntrex-pairs", pair_rows(ntrex_lines, 16))
    spec = parse_spec(train_spec(method="lora", lora={"r": 4, "target_modules": ["q_proj", "v_proj"]},
                                 merge_lora=False, max_steps=2, output="lora-run"))
    train_step(spec, db_context(train_ws, spec))
    ckpt = artifact(train_ws, "lora-run-step2")
    assert ckpt is not None and (Path(ckpt.path) / "trainer_state.json").is_file()
    resumed = train_spec(method="lora", lora={"r": 4, "target_modules": ["q_proj", "v_proj"]}, merge_lora=False,
                         max_steps=4, output="lora-run-more", resume_from="lora-run-step2")
    with read_scope(train_ws.db_url) as s:
        spec2 = precheck(s, train_ws, resumed)
    ctx = db_context(train_ws, spec2)
    train_step(spec2, ctx)
    assert job(train_ws, ctx.job_id).result["steps"] == 4


# ------------------------------------------------------------------------------------ instruction SFT

def test_instruction_sft_on_messages_with_assistant_only_loss(train_ws, ntrex_lines, monkeypatch):
    rows = message_rows(ntrex_lines, 40, chars=40)
    add_dataset(train_ws, "ntrex-chat", rows)
    spy = _Spy(monkeypatch)
    spec = parse_spec(train_spec(preset="sft", datasets=["ntrex-chat"], assistant_only_loss=True, max_steps=3,
                                 max_length=160, eval_split=0.1, output="chat-model"))
    ctx = db_context(train_ws, spec)
    train_step(spec, ctx)
    result = job(train_ws, ctx.job_id).result
    assert result["steps"] == 3 and result["data"]["format"] == "messages"
    assert len(metric_points(train_ws, ctx.job_id, "loss")) == 3 and metric_points(train_ws, ctx.job_id, "eval_loss")
    assert artifact(train_ws, "chat-model").meta["preset"] == "sft"

    # the loss mask covers the assistant turn and nothing else (the template's {% generation %} block)
    trainer = spy.trainers[0]
    assert trainer.args.assistant_only_loss is True
    tok = trainer.processing_class
    contents = {r["messages"][2]["content"] for r in rows}
    for row in trainer.train_dataset.select(range(3)):
        ids, labels = row["input_ids"], row["labels"]
        assert 0 < sum(x != -100 for x in labels) < len(ids)
        learned = tok.decode([i for i, x in zip(ids, labels, strict=True) if x != -100])
        assert learned.endswith("<|im_end|>") and learned.removesuffix("<|im_end|>") in contents


# ------------------------------------------------------------------------------------ weighted mixing

def test_weighted_mix_follows_the_weights_and_holds_out_the_eval_split(tmp_path, ntrex_lines):
    small = write_jsonl(tmp_path / "small.jsonl", pair_rows(ntrex_lines, 20))
    large = write_jsonl(tmp_path / "large.jsonl", pair_rows(ntrex_lines, 60, offset=100))
    small_prompts = {r["prompt"] for r in pair_rows(ntrex_lines, 20)}
    # each set gives up its eval share first (2 + 6 rows); weights are shares of the training mix, whatever
    # the sizes: the 18 remaining small rows get 3/4 of 72 (repeated 3 times)
    train, held, info = load_mix([("small", small, 3.0), ("large", large, 1.0)], "translator", 0.1, seed=7)
    assert info["examples"] == {"small": 54, "large": 18}
    assert info["format"] == "pairs" and set(train.column_names) == {"prompt", "completion"}
    assert (info["train"], info["eval"]) == (len(train), len(held)) == (72, 8)
    everything = list(train["prompt"]) + list(held["prompt"])
    assert sum(p in small_prompts for p in everything) == 56
    assert not set(held["prompt"]) & set(train["prompt"])  # no held-out row is trained on
    # no eval split asked for, or too few rows for one: no eval set
    _, none, info0 = load_mix([("small", small, 1.0)], "translator", 0.0, seed=7)
    assert none is None and info0["eval"] == 0
    tiny = write_jsonl(tmp_path / "tiny.jsonl", pair_rows(ntrex_lines, 6))
    _, none, _ = load_mix([("tiny", tiny, 1.0)], "translator", 0.2, seed=7)
    assert none is None


def test_an_upsampled_mix_keeps_its_eval_rows_out_of_training(tmp_path, ntrex_lines):
    a = write_jsonl(tmp_path / "a.jsonl", pair_rows(ntrex_lines, 40))
    b = write_jsonl(tmp_path / "b.jsonl", pair_rows(ntrex_lines, 40, offset=40))
    train, held, _ = load_mix([("a", a, 3.0), ("b", b, 1.0)], "translator", 0.1, seed=42)
    assert not set(held["prompt"]) & set(train["prompt"])


# ------------------------------------------------------------------------------------ corpus export → training

def test_translator_trains_on_the_reviewed_pairs_export(train_ws):
    """Import NTREX → translate it (demo model, a real translate step) → annotators edit every translation to the
    reference → export bilingual pairs → train the translator on them: lineage runs corpus → pairs → model."""
    from db import review
    from hala_core.translate import translate_step
    from workbench import corpus_ops

    corpus_ops.import_file(train_ws, str(NTREX), "ntrex12", limit=12)
    tspec = parse_spec({"kind": "translate", "corpus": "ntrex12", "model": BASE, "name": "demo-mt",
                        "max_new_tokens": 6, "batch_size": 12, "device": "cpu", "dtype": "float32"})
    translate_step(tspec, db_context(train_ws, tspec))
    with session_scope(train_ws.db_url) as s:
        done = s.execute(select(Translation.id, Translation.version, Segment.reference)
                         .join(Segment, Segment.id == Translation.segment_id)).all()
        assert len(done) == 12 and all(ref for _, _, ref in done)
        for tid, version, ref in done:
            review.save(s, tid, "amira", "edit", version, text=ref)
    info = corpus_ops.export(train_ws, "ntrex12", translation="demo-mt", kind="pairs", name="ntrex12-pairs")
    assert info["records"] == 24  # both directions

    spec = TrainSpec(preset="translator", base_model=BASE, datasets=["ntrex12-pairs"], max_steps=2,
                     per_device_train_batch_size=4, max_length=64, eval_split=0.0, logging_steps=1,
                     learning_rate=1e-3, output="ntrex12-translator")
    ctx = db_context(train_ws, spec)
    train_step(spec, ctx)
    assert job(train_ws, ctx.job_id).result["data"] == {"format": "pairs", "examples": {"ntrex12-pairs": 24},
                                                         "train": 24, "eval": 0}
    model = artifact(train_ws, "ntrex12-translator")
    from db.artifacts import lineage

    with read_scope(train_ws.db_url) as s:
        ancestors = {a["name"] for a in lineage(s, model.id)}
        assert s.get(Job, ctx.job_id).kind == "train"
    assert {BASE, "ntrex12-pairs", "corpus-ntrex12"} <= ancestors
