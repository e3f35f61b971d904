"""Bad training input is refused with a message that says what is wrong and what is allowed: before anything is
queued (``jobs.precheck.precheck``, ``hala run`` exit status 2) where it can be seen up front, and by the step
itself where only the loaded data or tokenizer can tell (max_length, rows). An out-of-memory error is turned
into advice, and the checkpoints made before it stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from sqlalchemy import func, select

from db.models import Artifact, Job
from db.session import dispose_engines, read_scope, session_scope
from hala_core.settings import Settings
from hala_core.specs import parse_spec
from hala_core.train import OOM_HINT, build_sft_config, check_max_length, load_mix, train_step
from jobs import queue
from jobs.precheck import precheck
from tests.support.app_server import make_workspace
from tests.train.conftest import (
    BASE,
    add_dataset,
    artifact,
    db_context,
    message_rows,
    needs_ntrex,
    pair_rows,
    train_spec,
    write_jsonl,
)

pytestmark = needs_ntrex
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, demo_models_dir: dict[str, Path], ntrex_lines
       ) -> Iterator[Settings]:
    """One workspace for the module: demo-lfm2-a, a pairs dataset, a chat dataset, a dataset with other columns,
    and a finished 2-step run whose checkpoint ``done-step2`` the resume tests start from."""
    home = tmp_path_factory.mktemp("train_bad") / "hala_home"
    settings = make_workspace(home, {BASE: demo_models_dir[BASE]})
    add_dataset(settings, "ntrex-pairs", pair_rows(ntrex_lines, 16))
    add_dataset(settings, "ntrex-chat", message_rows(ntrex_lines, 16))
    add_dataset(settings, "alpaca-like", [{"instruction": en, "output": ar} for en, ar in ntrex_lines[:8]])
    spec = parse_spec(train_spec(max_steps=2, output="done"))
    ctx = db_context(settings, spec)
    train_step(spec, ctx)
    yield settings
    dispose_engines()


def _precheck(settings: Settings, **changes: Any) -> Any:
    with read_scope(settings.db_url) as s:
        return precheck(s, settings, train_spec(**changes))


def _jobs(settings: Settings) -> int:
    with read_scope(settings.db_url) as s:
        return s.scalar(select(func.count(Job.id)))


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HALA_HOME": str(settings.home), "HALA_DB_URL": settings.db_url, "HALA_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)


# ----------------------------------------------------------------------------------------------- data

@pytest.mark.parametrize(("preset", "need"), [
    ("translator", "needs prompt and completion (the bilingual pairs export) or messages"),
    ("sft", "needs messages (a list of {role, content} turns; the corpus export) or prompt and completion"),
], ids=["translator", "sft"])
def test_a_dataset_without_the_needed_columns_is_refused(ws, preset, need):
    with pytest.raises(ValueError) as e:
        _precheck(ws, preset=preset, datasets=["alpaca-like"])
    assert "dataset alpaca-like has the columns instruction, output" in str(e.value)
    assert f"the {preset} preset {need}" in str(e.value)


@pytest.mark.slow
def test_hala_run_refuses_a_dataset_without_the_columns_with_status_2(ws, tmp_path):
    jobs_before = _jobs(ws)
    spec_file = tmp_path / "columns.yaml"
    spec_file.write_text(yaml.safe_dump(train_spec(datasets=["alpaca-like"], output="cli-a")))
    r = _cli(ws, "run", str(spec_file), "--inline")
    assert r.returncode == 2, r.stderr
    assert "error: dataset alpaca-like has the columns instruction, output; the translator preset needs prompt " \
           "and completion" in r.stderr
    assert _jobs(ws) == jobs_before  # nothing was queued


def test_datasets_of_two_formats_are_not_mixed(ws):
    with pytest.raises(ValueError, match=r"the datasets mix formats \(ntrex-pairs: pairs, ntrex-chat: messages\)"):
        _precheck(ws, preset="sft", datasets=["ntrex-pairs", "ntrex-chat"])


def _chat_without_assistant(tmp_path: Path, ntrex_lines) -> Path:
    rows = message_rows(ntrex_lines, 6)
    rows[3] = {"messages": [{"role": "user", "content": "Translate: hello"}]}  # the 4th line: row 4 (1-based, like import line numbers)
    return write_jsonl(tmp_path / "no-assistant.jsonl", rows)


def test_a_conversation_without_an_assistant_turn_is_named_by_row(tmp_path, ntrex_lines):
    path = _chat_without_assistant(tmp_path, ntrex_lines)
    with pytest.raises(ValueError, match=r"dataset chats, row 4: no assistant turn with text — nothing to learn"):
        load_mix([("chats", path, 1.0)], "sft", 0.0, seed=1)
    empty_turn = message_rows(ntrex_lines, 3)
    empty_turn[1]["messages"][2]["content"] = "   "
    with pytest.raises(ValueError, match=r"row 2: no assistant turn"):
        load_mix([("blank", write_jsonl(tmp_path / "blank.jsonl", empty_turn), 1.0)], "sft", 0.0, seed=1)


def test_precheck_refuses_a_conversation_without_an_assistant_turn(ws, tmp_path, ntrex_lines):
    path = _chat_without_assistant(ws.datasets_dir, ntrex_lines)
    with pytest.raises(ValueError, match="row 4"):
        _precheck(ws, preset="sft", datasets=[str(path)], output="rows")


# ----------------------------------------------------------------------------------------------- lengths

def test_max_length_shorter_than_the_translator_template_is_refused(fake_ctx, demo_models_dir, tmp_path,
                                                                    ntrex_lines):
    ctx = fake_ctx(models={BASE: demo_models_dir[BASE]})
    ctx.register_dataset("pairs", write_jsonl(tmp_path / "pairs.jsonl", pair_rows(ntrex_lines, 16)))
    spec = parse_spec(train_spec(datasets=["pairs"], max_length=16))
    with pytest.raises(ValueError, match=r"max_length 16 is shorter than the prompt template itself \((\d+) tokens\); "
                                         r"raise max_length well above \1"):
        train_step(spec, ctx)
    assert not ctx.metrics and not [a for a in ctx.artifacts.values() if a.kind == "model" and a.name != BASE]


def test_max_length_shorter_than_the_chat_template_is_refused(demo_models_dir, ntrex_lines):
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(demo_models_dir[BASE]))
    scaffold = tok.apply_chat_template([{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
                                       tokenize=False)
    assert len(tok(scaffold)["input_ids"]) > 12
    ds = Dataset.from_list(message_rows(ntrex_lines, 4))
    with pytest.raises(ValueError, match="shorter than the prompt template"):
        check_max_length(tok, "messages", 12, ds)


# ----------------------------------------------------------------------------------------------- model, LoRA

def test_a_lora_target_that_matches_nothing_lists_the_linear_layers(ws):
    with pytest.raises(ValueError) as e:
        _precheck(ws, method="lora", lora={"target_modules": ["q_proj", "query_key_value"]})
    msg = str(e.value)
    assert "LoRA target 'query_key_value' matches no module of demo-lfm2-a" in msg
    assert "its linear layers are: in_proj, k_proj, lm_head, out_proj, q_proj, v_proj, w1, w2, w3" in msg
    assert "all-linear" in msg
    assert _precheck(ws, method="lora", lora={"target_modules": ["q_proj", "w2"]}).method == "lora"


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_base_model_path_that_does_not_exist_is_refused(ws, tmp_path, where):
    missing = (ws.models_dir if where == "inside" else tmp_path) / "no-such-model"
    with pytest.raises(ValueError) as e:
        _precheck(ws, base_model=str(missing))
    assert str(missing) in str(e.value)
    assert ("does not exist" if where == "inside" else "outside the allowed folders") in str(e.value)


# ----------------------------------------------------------------------------------------------- SFTConfig fields

@pytest.mark.parametrize(("advanced", "message"), [
    ({"learnig_rate": 1e-4}, "'learnig_rate' is not a field of TRL's SFTConfig; did you mean learning_rate"),
    ({"gradient_acumulation_steps": 2}, "did you mean gradient_accumulation_steps"),
    ({"output_dir": "/tmp/elsewhere"}, "advanced: output_dir is set by the workbench (the job folder holds the "
                                       "checkpoints)"),
    ({"resume_from_checkpoint": "x"}, "resume_from_checkpoint is set by the workbench (use resume_from)"),
    ({"bf16": True}, "bf16 is set by the workbench (use precision)"),
    ({"max_length": 32}, "advanced: max_length is a field of the train spec itself; set it there"),
])
def test_unknown_and_reserved_sftconfig_fields_are_refused(ws, advanced, message):
    with pytest.raises(ValueError) as e:
        _precheck(ws, advanced=advanced)
    assert message in str(e.value)


def test_a_known_advanced_field_passes_and_reaches_sftconfig(ws, tmp_path):
    spec = _precheck(ws, advanced={"max_grad_norm": 0.5, "optim": "adamw_torch"})
    config = build_sft_config(spec, tmp_path, "cpu", has_eval=False)
    assert config.max_grad_norm == 0.5 and config.output_dir == str(tmp_path) and config.report_to == []
    with pytest.raises(ValueError, match="TRL refused the training configuration"):
        build_sft_config(parse_spec(train_spec(advanced={"optim": "no-such-optimizer"})), tmp_path, "cpu", False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: bf16 is allowed")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_a_cpu_machine_is_refused(ws, tmp_path, precision):
    with pytest.raises(ValueError, match=f"precision {precision} needs a GPU and there is none here: use auto or "
                                         "fp32"):
        _precheck(ws, precision=precision)
    with pytest.raises(ValueError, match=f"precision {precision} needs a GPU; this run is on cpu"):
        build_sft_config(parse_spec(train_spec(precision=precision)), tmp_path, "cpu", False)


# ----------------------------------------------------------------------------------------------- resume

def test_resume_from_something_that_is_not_a_checkpoint_is_refused(ws):
    with pytest.raises(ValueError, match=r"resume_from 'demo-lfm2-a' is not a training checkpoint \(no "
                                         r"trainer_state.json in .*demo-lfm2-a\)"):
        _precheck(ws, resume_from=BASE)
    with pytest.raises(ValueError, match="'no-such-checkpoint' is not a model artifact, an existing folder"):
        _precheck(ws, resume_from="no-such-checkpoint")
    assert _precheck(ws, resume_from="done-step2", max_steps=4, output="more").resume_from == "done-step2"


def test_resume_with_max_steps_not_above_the_checkpoint_is_refused_by_the_step(ws):
    done = artifact(ws, "done-step2")
    assert done.meta["step"] == 2
    spec = parse_spec(train_spec(resume_from="done-step2", max_steps=2, output="not-more"))
    ctx = db_context(ws, spec)
    with pytest.raises(ValueError, match=r"the checkpoint is at step 2 and max_steps is 2: raise max_steps \(or the "
                                         r"epochs\) to train further"):
        train_step(spec, ctx)
    with read_scope(ws.db_url) as s:
        assert not s.scalars(select(Artifact).where(Artifact.job_id == ctx.job_id)).all()


def test_resume_with_max_steps_not_above_the_checkpoint_is_refused_before_queueing(ws):
    with pytest.raises(ValueError, match="max_steps"):
        _precheck(ws, resume_from="done-step2", max_steps=2, output="not-more-2")
    job_id = artifact(ws, "done-step2").job_id
    with session_scope(ws.db_url) as s:  # the step ran in-process here: record its job as finished
        queue.finish(s, job_id, "succeeded", only_if_active=False)
    with session_scope(ws.db_url) as s, pytest.raises(ValueError, match="max_steps"):
        queue.resume(s, job_id, edits={"max_steps": 1})


# ----------------------------------------------------------------------------------------------- out of memory

@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total)"),
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
], ids=["OutOfMemoryError", "RuntimeError"])
def test_out_of_memory_suggests_smaller_settings_and_keeps_the_checkpoints(fake_ctx, demo_models_dir, tmp_path,
                                                                          ntrex_lines, monkeypatch, error):
    """A test double for an OOM that cannot happen on this CPU machine: the real trainer runs two steps (and saves
    checkpoint-2), then its third training step raises what PyTorch raises when the GPU is full."""
    import trl

    real = trl.SFTTrainer.training_step
    calls = {"n": 0}

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(trl.SFTTrainer, "training_step", training_step)
    ctx = fake_ctx(models={BASE: demo_models_dir[BASE]})
    ctx.register_dataset("pairs", write_jsonl(tmp_path / "pairs.jsonl", pair_rows(ntrex_lines, 16)))
    spec = parse_spec(train_spec(datasets=["pairs"], max_steps=6, save_steps=2, output="oom"))
    with pytest.raises(RuntimeError) as e:
        train_step(spec, ctx)
    msg = str(e.value)
    assert msg.startswith(OOM_HINT)
    for advice in ("lower per_device_train_batch_size", "lower max_length", "gradient_checkpointing",
                   "LoRA adapters", "the last checkpoint of this run stays usable (resume_from)"):
        assert advice in msg
    assert "out of memory" in msg.split(OOM_HINT, 1)[1]  # the original error is quoted
    ckpt = ctx.artifact("oom-step2")
    assert ckpt.metadata["checkpoint"] is True and ckpt.metadata["step"] == 2
    assert json.loads((ckpt.path / "trainer_state.json").read_text())["global_step"] == 2
    assert (ckpt.path / "model.safetensors").is_file()
    assert ("model", "oom") not in ctx.artifacts and ctx.result is None
