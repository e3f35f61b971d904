"""The Slurm executor without a cluster: the batch script, the sbatch options merged from hala.yaml and the job,
errors from sbatch, one squeue call for all jobs, how ends are recorded, the executor settings file, the
multi-node launch line, and the reaper leaving Slurm jobs alone."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hala_core.executor_config import (
    ExecutorConfig,
    ExecutorConfigError,
    SlurmConfig,
    enabled_executors,
    load_executor_config,
    save_executor_config,
)
from hala_core.specs import parse_spec
from jobs.executors import executor_name_of
from jobs.slurm import SlurmError, SlurmExecutor, batch_script, format_time_limit, parse_exit_code

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ENV = {"HALA_HOME": "/ws/hala home", "HALA_DB_URL": "postgresql://u:p@db/hala", "HALA_WORKER_PID": "4242"}


def _sleep(**slurm) -> dict:
    return parse_spec({"kind": "sleep", "executor": "slurm", **({"slurm": slurm} if slurm else {})}).model_dump(
        mode="json")


def _sbatch_lines(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


# --------------------------------------------------------------------------- the batch script

def test_batch_script_merges_the_job_over_the_workspace_and_runs_jobs_run(tmp_path):
    cfg = SlurmConfig(enabled=True, partition="debug", time_limit="1-00:00:00", account="hala", mem="8G",
                      sbatch=("--constraint=h100",), python="/opt/hala/.venv/bin/python",
                      setup=("module load cuda",))
    spec = _sleep(partition="gpu", nodes=2, gpus_per_node=4, cpus_per_task=16, time_limit="02:00:00",
                  qos="high", extra_sbatch=["--exclusive"])
    log = tmp_path / "jobs" / "7" / "job.log"
    script = batch_script(7, "sleep", spec, log, ENV, cfg, project_root=Path("/srv/hala"))
    assert script.startswith("#!/bin/bash\n")
    assert _sbatch_lines(script) == [
        "--job-name=hala-7-sleep", f"--output={log}", "--open-mode=append", "--constraint=h100", "--nodes=2",
        "--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=16", "--mem=8G", "--time=02:00:00",
        "--partition=gpu", "--account=hala", "--qos=high", "--exclusive"]
    body = script.split("\n")
    i = body.index("cd /srv/hala || exit 1")
    assert body[i + 1:i + 4] == ["export HALA_HOME='/ws/hala home'", "export HALA_DB_URL=postgresql://u:p@db/hala",
                                 "export PYTHONUNBUFFERED=1"]
    assert "export HALA_WORKER_PID=0" in body  # not the submitting worker's pid: slurmstepd is the parent
    assert "export OMP_NUM_THREADS=16" in body
    assert body.index("module load cuda") < body.index("exec /opt/hala/.venv/bin/python -m jobs.run 7")
    assert body[-2] == "exec /opt/hala/.venv/bin/python -m jobs.run 7"


def test_batch_script_defaults_to_this_python_and_the_workspace_defaults(tmp_path):
    script = batch_script(3, "train", _sleep(), tmp_path / "job.log", ENV, SlurmConfig(partition="debug",
                                                                                        time_limit="30"))
    assert _sbatch_lines(script) == ["--job-name=hala-3-train", f"--output={tmp_path / 'job.log'}",
                                     "--open-mode=append", "--nodes=1", "--time=30", "--partition=debug"]
    assert f"exec {sys.executable} -m jobs.run 3" in script


class FakeSlurm:
    """A stand-in for the Slurm commands: records each call, answers from a table of job states."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.jobs: dict[str, tuple[str, str]] = {}  # id → (state, time limit as squeue prints it)
        self.ended: dict[str, str] = {}  # id → "STATE|code:sig" in the jobcomp log
        self.sbatch: subprocess.CompletedProcess | None = None
        self.next_id = 100

    def __call__(self, args, **kw):  # noqa: ANN001
        self.calls.append(list(args))
        cmd = args[0]
        if cmd == "sbatch":
            if self.sbatch is not None:
                return self.sbatch
            self.next_id += 1
            self.jobs[str(self.next_id)] = ("PENDING", "1:00")
            return subprocess.CompletedProcess(args, 0, f"{self.next_id}\n", "")
        if cmd == "squeue":
            ids = args[args.index("-j") + 1].split(",")
            out = "".join(f"{i}|{self.jobs[i][0]}|{self.jobs[i][1]}|None\n" for i in ids if i in self.jobs)
            return subprocess.CompletedProcess(args, 0, out, "")
        if cmd == "sacct" and "-c" in args:
            i = args[args.index("-j") + 1]
            out = f"{i}|{self.ended[i]}\n" if i in self.ended else ""
            return subprocess.CompletedProcess(args, 0, out, "")
        if cmd == "sacct":
            return subprocess.CompletedProcess(args, 1, "", "sacct: error: Slurm accounting storage is disabled")
        if cmd == "scontrol":
            return subprocess.CompletedProcess(args, 1, "", "slurm_load_jobs error: Invalid job id specified")
        return subprocess.CompletedProcess(args, 0, "", "")

    def count(self, cmd: str) -> int:
        return sum(c[0] == cmd for c in self.calls)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sbatch_errors_say_what_slurm_said(tmp_path):
    fake = FakeSlurm()
    fake.sbatch = subprocess.CompletedProcess([], 1, "", "sbatch: error: invalid partition specified: nope\n")
    ex = SlurmExecutor(SlurmConfig(enabled=True), runner=fake)
    with pytest.raises(SlurmError, match="^sbatch refused the job: sbatch: error: invalid partition specified: nope$"):
        ex.launch(1, tmp_path / "1" / "job.log", ENV, spec=_sleep(), kind="sleep")
    assert (tmp_path / "1" / "slurm.sbatch").exists()

    def missing(args, **kw):  # noqa: ANN001
        raise FileNotFoundError(args[0])

    with pytest.raises(SlurmError, match="sbatch is not installed here"):
        SlurmExecutor(runner=missing).launch(2, tmp_path / "2" / "job.log", ENV, spec=_sleep())


def test_one_squeue_call_a_turn_for_all_jobs_and_none_between_turns(tmp_path):
    fake, clock = FakeSlurm(), Clock()
    ex = SlurmExecutor(SlurmConfig(enabled=True, poll_s=2), runner=fake, clock=clock)
    handles = [ex.launch(i, tmp_path / str(i) / "job.log", ENV, spec=_sleep()) for i in range(5)]
    assert handles == [f"slurm:{101 + i}" for i in range(5)] and executor_name_of(handles[0]) == "slurm"
    sub = fake.calls[0]
    assert sub[:2] == ["sbatch", "--parsable"] and sub[2].endswith("0/slurm.sbatch")
    assert fake.count("squeue") == 0 and ex.state(handles[0]) == "PENDING"  # known from sbatch itself
    for turn in range(3):
        clock.t += 2.5
        for h in handles[:3]:
            fake.jobs[h[6:]] = ("RUNNING", "1:00")
        ex.refresh(handles)
        assert [ex.poll(h) for h in handles] == [None] * 5
        assert [ex.state(h) for h in handles] == ["RUNNING"] * 3 + ["PENDING"] * 2
        assert fake.count("squeue") == turn + 1
        ex.refresh(handles)  # within poll_s: the cache answers
        assert fake.count("squeue") == turn + 1
    assert ex.alive(handles[0]) and ex.pid(handles[0]) is None


def test_ends_time_limit_cancel_from_outside_failures_and_forgotten_jobs(tmp_path):
    fake, clock = FakeSlurm(), Clock()
    ex = SlurmExecutor(SlurmConfig(enabled=True, poll_s=1), runner=fake, clock=clock)
    h = {name: ex.launch(i, tmp_path / str(i) / "job.log", ENV, spec=_sleep())
         for i, name in enumerate(["ok", "timeout", "scancel", "fail", "oom", "gone"])}
    for name, state in [("ok", "COMPLETED"), ("timeout", "TIMEOUT"), ("scancel", "CANCELLED"), ("fail", "FAILED"),
                        ("oom", "OUT_OF_MEMORY")]:
        fake.jobs[h[name][6:]] = (state, "1:00")
    fake.ended = {h["ok"][6:]: "COMPLETED|0:0", h["timeout"][6:]: "TIMEOUT|0:0",
                  h["scancel"][6:]: "CANCELLED|0:15", h["fail"][6:]: "FAILED|3:0", h["oom"][6:]: "OUT_OF_MEMORY|0:9"}
    del fake.jobs[h["gone"][6:]]
    clock.t += 5
    ex.refresh(list(h.values()))
    assert fake.count("squeue") == 1
    assert {n: ex.poll(x) for n, x in h.items()} == {"ok": 0, "timeout": 0, "scancel": -15, "fail": 3, "oom": -9,
                                                      "gone": 1}
    # the job recorded its result: keep it
    assert ex.outcome(h["ok"], "succeeded", False) is None
    assert ex.outcome(h["fail"], "failed", False) is None
    # Slurm's time limit wins, also over the job's own "interrupted: SIGTERM received"
    msg = ("failed", "Slurm stopped the job at its time limit (00:01:00, state TIMEOUT)")
    assert ex.outcome(h["timeout"], "interrupted", False) == msg == ex.outcome(h["timeout"], "running", False)
    status, error = ex.outcome(h["scancel"], "interrupted", False)
    assert status == "cancelled" and "cancelled outside the workbench (scancel)" in error
    assert ex.outcome(h["scancel"], "claimed", True)[1].endswith("before it started")
    assert ex.outcome(h["oom"], "running", False) == (
        "failed", "Slurm ended the job: it ran out of memory (state OUT_OF_MEMORY, exit 0:9)")
    assert ex.outcome(h["fail"], "running", False)[1].startswith(
        "the job process on Slurm ended without recording a result (state FAILED, exit 3:0)")
    assert ex.outcome(h["gone"], "running", False)[0] == "interrupted"
    assert ex.state(h["gone"]) == "UNKNOWN"
    # ended jobs are not asked about again
    n = len(fake.calls)
    clock.t += 5
    ex.refresh(list(h.values()))
    assert len(fake.calls) == n


def test_signals_map_to_scancel(tmp_path):
    fake, clock = FakeSlurm(), Clock()
    ex = SlurmExecutor(SlurmConfig(enabled=True, poll_s=1), runner=fake, clock=clock)
    h = ex.launch(1, tmp_path / "job.log", ENV, spec=_sleep())
    ex.signal(h, signal.SIGTERM)  # still pending: nothing to stop gracefully, cancel it
    fake.jobs[h[6:]] = ("RUNNING", "1:00")
    clock.t += 2
    ex.refresh([h])
    ex.signal(h, signal.SIGTERM)
    ex.signal(h, signal.SIGKILL)
    assert [c for c in fake.calls if c[0] == "scancel"] == [
        ["scancel", "101"], ["scancel", "--signal=TERM", "--full", "101"], ["scancel", "101"]]


@pytest.mark.parametrize(("given", "shown"), [("1:00", "00:01:00"), ("1", "00:01:00"), ("00:01:00", "00:01:00"),
                                              ("2-00:00:00", "2-00:00:00"), ("1-12", "1-12:00:00"),
                                              ("90", "01:30:00"), ("UNLIMITED", "UNLIMITED")])
def test_time_limits_are_shown_as_slurm_does(given, shown):
    assert format_time_limit(given) == shown


def test_exit_codes():
    assert [parse_exit_code(x) for x in ("0:0", "3:0", "0:9", "", None, "x")] == [0, 3, -9, None, None, None]


# --------------------------------------------------------------------------- hala.yaml

def test_executor_settings_default_to_local_and_round_trip(tmp_path):
    assert load_executor_config(tmp_path) == ExecutorConfig()
    assert enabled_executors(ExecutorConfig()) == ["local"]
    (tmp_path / "hala.yaml").write_text("ui:\n  theme: dark\nexecutors:\n  slurm:\n    enabled: true\n"
                                        "    partition: debug\n    time_limit: 90\n    sbatch: '#SBATCH --account=x'\n")
    cfg = load_executor_config(tmp_path)
    assert enabled_executors(cfg) == ["local", "slurm"]
    assert cfg.slurm.time_limit == "90" and cfg.slurm.sbatch == ("--account=x",) and cfg.slurm.max_submitted == 32
    new = cfg.model_copy(update={"slurm": cfg.slurm.model_copy(update={"max_submitted": 4, "setup": ("ml cuda",)})})
    save_executor_config(tmp_path, new)
    assert load_executor_config(tmp_path) == new
    text = (tmp_path / "hala.yaml").read_text()
    assert "theme: dark" in text and "poll_s" not in text  # other sections kept; defaults not written
    save_executor_config(tmp_path, ExecutorConfig())
    assert "executors" not in (tmp_path / "hala.yaml").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["hala.yaml"]  # no temp file left behind


@pytest.mark.parametrize(("text", "error"), [
    ("executors:\n  slurm:\n    enabeld: true\n", r"hala\.yaml: executors\.slurm\.enabeld: unknown setting"),
    ("executors:\n  pbs: {}\n", r"executors\.pbs: unknown setting"),
    ("executors:\n  slurm:\n    time_limit: soon\n", r"executors\.slurm: time_limit: time limit 'soon' is not"),
    ("executors:\n  slurm:\n    max_submitted: 0\n", r"executors\.slurm\.max_submitted: Input should be greater"),
    ("executors:\n  slurm:\n    sbatch: ['--x; rm -rf /']\n", r"sbatch: extra sbatch line .* is not allowed"),
    ("executors: [slurm]\n", r"executors: expected a mapping"),
    ("executors: {slurm: [\n", r"hala\.yaml: not valid YAML"),
])
def test_malformed_executor_settings_name_the_file_and_the_key(tmp_path, text, error):
    (tmp_path / "hala.yaml").write_text(text)
    with pytest.raises(ExecutorConfigError, match=error) as e:
        load_executor_config(tmp_path)
    assert str(e.value).startswith(str(tmp_path / "hala.yaml"))


# --------------------------------------------------------------------------- several nodes

def test_multi_node_train_launches_one_accelerate_per_node_through_srun():
    from accelerate.commands.launch import launch_command_parser

    from hala_core.train import distributed_command
    from tests.train.conftest import train_spec

    spec = parse_spec({**train_spec(distributed="fsdp"), "executor": "slurm",
                       "slurm": {"nodes": 3, "gpus_per_node": 8}})
    cmd, env, note = distributed_command(spec, 42, gpus_visible=8, main_host="gpu017", port=29611)
    assert cmd[:6] == ["srun", "--nodes=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "bash", "-c"]
    assert env == {"HALA_RANK_CHILD": "1"} and note.startswith("srun --nodes=3")
    # what each node runs: its own rank from Slurm's environment
    for node in ("0", "2"):
        argv = shlex.split(cmd[6].replace('"$SLURM_NODEID"', node))
        assert argv[:4] == ["exec", sys.executable, "-m", "accelerate.commands.launch"]
        args = launch_command_parser().parse_args(argv[4:])
        assert (args.num_processes, args.num_machines, args.machine_rank) == (24, 3, int(node))
        assert (args.main_process_ip, args.main_process_port) == ("gpu017", 29611)
        assert args.use_fsdp and args.training_script == "jobs.run_rank" and args.training_script_args == ["42"]
    assert '--machine_rank "$SLURM_NODEID"' in cmd[6]
    # one node: the existing one-machine path
    one = parse_spec({**train_spec(num_processes=2), "executor": "slurm", "slurm": {"gpus_per_node": 2}})
    cmd1, _, _ = distributed_command(one, 5, gpus_visible=2)
    assert cmd1[0] == sys.executable and cmd1[cmd1.index("--num_machines") + 1] == "1"
    with pytest.raises(ValueError, match="needs GPUs; set slurm.gpus_per_node"):
        distributed_command(parse_spec({**train_spec(), "executor": "slurm", "slurm": {"nodes": 2}}), 1, 0,
                            main_host="n1")


# --------------------------------------------------------------------------- the reaper

def test_the_reaper_leaves_a_slurm_job_of_a_dead_worker_to_adoption(workspace):
    from db.models import Job, Worker
    from db.session import session_scope
    from jobs import queue
    from jobs.executors import LocalExecutor
    from jobs.worker import reap_stale

    with session_scope(workspace.db_url) as s:
        s.add(Worker(id="gone", host="elsewhere", pid=1, stopped_at=None))
        slurm_job = queue.enqueue(s, _sleep())
        local_job = queue.enqueue(s, {"kind": "sleep"})
        s.flush()
        for job, handle in ((slurm_job, "slurm:123"), (local_job, "999999:0")):
            job.status, job.worker_id, job.host, job.executor_handle = "running", "gone", "elsewhere", handle
        ids = (slurm_job.id, local_job.id)
    from datetime import timedelta

    from db.models import utcnow

    with session_scope(workspace.db_url) as s:
        s.get(Worker, "gone").heartbeat_at = utcnow() - timedelta(minutes=5)
    with session_scope(workspace.db_url) as s:
        assert reap_stale(s, "here", {"local": LocalExecutor()}) == [ids[1]]
    with session_scope(workspace.db_url) as s:
        assert [s.get(Job, i).status for i in ids] == ["running", "interrupted"]


def test_a_running_worker_takes_up_slurm_when_hala_yaml_enables_it(workspace):
    from jobs.worker import JobWorker, WorkerConfig

    worker = JobWorker(workspace, WorkerConfig(max_jobs=2))
    assert list(worker.executors) == ["local"] and worker.capacity == {"local": 2}
    save_executor_config(workspace.home, ExecutorConfig(slurm=SlurmConfig(enabled=True, max_submitted=5)))
    worker.register()
    worker._maybe_reload_config()
    if SlurmExecutor.available() is not None:  # no Slurm client here: it stays off (and says why in the log)
        assert "slurm" not in worker.executors
        return
    assert list(worker.executors) == ["local", "slurm"] and worker.capacity == {"local": 2, "slurm": 5}
    save_executor_config(workspace.home, ExecutorConfig())
    worker._maybe_reload_config()
    assert worker.capacity["slurm"] == 0  # off: its running jobs are still followed, no new ones claimed
    fixed = JobWorker(workspace, WorkerConfig(executors=("local",)))
    save_executor_config(workspace.home, ExecutorConfig(slurm=SlurmConfig(enabled=True)))
    fixed._maybe_reload_config()
    assert list(fixed.executors) == ["local"]  # --executors local: hala.yaml does not change it
