"""Several GPUs: the ``accelerate launch`` line a multi-process train job runs (DDP or FSDP, one ``jobs.run_rank``
per GPU), checked against accelerate's own argument parser; the one-process fallback where no GPU is visible; the
refusal of more processes than GPUs; and (GPU machines with two or more GPUs only) a real 2-process DDP job."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from accelerate.commands.launch import launch_command_parser

from db.session import session_scope
from hala_core.context import StopRequested
from hala_core.specs import parse_spec
from hala_core.train import distributed_command, train_step
from jobs import queue
from jobs.run import _launch_distributed
from tests.support.workspace import wait_for
from tests.train.conftest import (
    BASE,
    FINAL,
    add_dataset,
    artifact,
    job,
    metric_points,
    pair_rows,
    train_spec,
    write_jsonl,
)


def _spec(**changes):
    return parse_spec(train_spec(**changes))


def _parsed(cmd: list[str]):
    """accelerate's own parser on the arguments after ``python -m accelerate.commands.launch``."""
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    return launch_command_parser().parse_args(cmd[3:])


def test_ddp_launch_line_names_the_processes_the_gpus_and_the_rank_entry_point():
    cmd, env, note = distributed_command(_spec(num_processes=2, gpus="0, 1"), 17, gpus_visible=4)
    assert cmd[-3:] == ["-m", "jobs.run_rank", "17"]
    assert "--multi_gpu" in cmd and "--use_fsdp" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[cmd.index("--num_machines") + 1] == "1"
    assert int(cmd[cmd.index("--main_process_port") + 1]) > 0
    assert env == {"HALA_RANK_CHILD": "1", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert note == " ".join(cmd)
    args = _parsed(cmd)
    assert args.multi_gpu and not args.use_fsdp and args.num_processes == 2 and args.num_machines == 1
    assert args.module and args.training_script == "jobs.run_rank" and args.training_script_args == ["17"]
    assert args.mixed_precision == "bf16"  # precision auto on a GPU


def test_fsdp_launch_line_parses_with_accelerate():
    cmd, env, _ = distributed_command(_spec(num_processes=4, distributed="fsdp", precision="fp16"), 3, 4)
    assert "--use_fsdp" in cmd and "--multi_gpu" not in cmd
    assert "CUDA_VISIBLE_DEVICES" not in env  # all visible GPUs
    args = _parsed(cmd)
    assert args.use_fsdp and args.num_processes == 4 and args.mixed_precision == "fp16"
    assert str(args.fsdp_version) == "2" and args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
    assert args.fsdp_state_dict_type == "FULL_STATE_DICT"
    assert args.training_script == "jobs.run_rank" and args.training_script_args == ["3"]
    cmd32, _, _ = distributed_command(_spec(num_processes=2, precision="fp32"), 3, 2)
    assert _parsed(cmd32).mixed_precision == "no"


def test_one_process_or_no_gpu_runs_here_as_one_process():
    assert distributed_command(_spec(num_processes=1), 5, gpus_visible=8) == (None, {}, "one process")
    cmd, env, note = distributed_command(_spec(num_processes=2, gpus="0,1"), 5, gpus_visible=0)
    assert cmd is None and env == {}
    assert note == ("num_processes 2 asked for, but no GPU is visible here: training as one process on the CPU")


@pytest.mark.parametrize(("n", "gpus", "visible", "where"), [
    (4, "0,1", 8, "2 in gpus=0,1"),
    (3, None, 2, "2 visible"),
])
def test_more_processes_than_gpus_is_refused(n, gpus, visible, where):
    with pytest.raises(ValueError, match=rf"num_processes {n} is more than the GPUs available to the run "
                                         rf"\({where}\); one process per GPU"):
        distributed_command(_spec(num_processes=n, gpus=gpus), 1, gpus_visible=visible)


def test_gpus_must_be_indices():
    assert _spec(gpus=" 0 , 2 ").gpus == "0,2"
    with pytest.raises(ValueError, match="gpus 'a,b': give GPU indices separated by commas"):
        _spec(gpus="a,b")


def test_the_job_launches_accelerate_and_hands_the_line_to_the_ranks(fake_ctx, demo_models_dir, tmp_path,
                                                                     monkeypatch, ntrex_lines):
    """jobs.run's launcher with two GPUs pretended (test doubles for the GPU count and the subprocess)."""
    import subprocess

    ctx = fake_ctx(models={BASE: demo_models_dir[BASE]})
    ctx.register_dataset("ntrex-pairs", write_jsonl(tmp_path / "p.jsonl", pair_rows(ntrex_lines, 8)))
    calls = []
    codes = iter([0, 75, 1])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or next(codes))
    spec = _spec(num_processes=2, gpus="0,1")
    assert _launch_distributed(spec, ctx) is True
    cmd, env = calls[0]
    assert cmd[-3:] == ["-m", "jobs.run_rank", str(ctx.job_id)] and "--multi_gpu" in cmd
    assert env["HALA_LAUNCH_COMMAND"] == " ".join(cmd) and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["HALA_RANK_CHILD"] == "1"
    assert any("launch (2 processes, ddp, CUDA_VISIBLE_DEVICES=0,1)" in line for line in ctx.logs)
    with pytest.raises(StopRequested, match="the last checkpoint is kept"):
        _launch_distributed(spec, ctx)  # the ranks stopped (exit 75)
    with pytest.raises(RuntimeError, match="accelerate launch exited with status 1"):
        _launch_distributed(spec, ctx)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_two_processes_asked_for_on_a_cpu_machine_train_as_one(fake_ctx, demo_models_dir, tmp_path, ntrex_lines):
    ctx = fake_ctx(models={BASE: demo_models_dir[BASE]})
    ctx.register_dataset("ntrex-pairs", write_jsonl(tmp_path / "p.jsonl", pair_rows(ntrex_lines, 8)))
    spec = _spec(num_processes=2, max_steps=2, output="one-proc")
    assert _launch_distributed(spec, ctx) is False
    assert any("training as one process on the CPU" in line for line in ctx.logs)
    train_step(spec, ctx)
    assert ctx.result["launch"] == "one process" and ctx.result["steps"] == 2


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more NVIDIA GPUs")
def test_a_two_process_ddp_job_runs_through_the_worker(train_ws, workers, ntrex_lines):
    add_dataset(train_ws, "ntrex-pairs", pair_rows(ntrex_lines, 64))
    with session_scope(train_ws.db_url) as s:
        job_id = queue.enqueue(s, train_spec(max_steps=6, num_processes=2, gpus="0,1", distributed="ddp",
                                             per_device_train_batch_size=4, output="ddp-model")).id
    workers.start()
    wait_for(lambda: job(train_ws, job_id).status in FINAL, timeout=600, every=0.5, what="the DDP job")
    row = job(train_ws, job_id)
    assert row.status == "succeeded", row.error
    launch = row.result["launch"]
    assert "accelerate.commands.launch" in launch and "--multi_gpu" in launch
    assert "--num_processes 2" in launch and launch.endswith(f"-m jobs.run_rank {job_id}")
    assert row.result["steps"] == 6
    assert [st for st, _ in metric_points(train_ws, job_id, "loss")] == list(range(1, 7))  # rank 0 reports once
    assert artifact(train_ws, "ddp-model") is not None
    log = Path(row.log_path).read_text(encoding="utf-8")
    assert "launch (2 processes, ddp, CUDA_VISIBLE_DEVICES=0,1)" in log
