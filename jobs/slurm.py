"""The Slurm executor: each job is a batch job (``sbatch``) that runs ``python -m jobs.run <id>`` on a node.

Handles are ``slurm:<jobid>``. The worker follows its Slurm jobs through one cached ``squeue`` call per
refresh (``refresh``, at most every ``poll_s`` seconds, for all of them at once); a job that has left the queue
is looked up once in the job completion log (``sacct -c``), then accounting (``sacct -X``), then
``scontrol show job``. The job's own process (``jobs.run``) records its result in the database as with the local
executor; ``outcome`` says how to record an end that Slurm caused (time limit, out of memory, node failure,
a cancel from outside) or that left no result.

Slurm jobs outlive the worker that submitted them (``survives_worker``): a worker that stops leaves them
running, and the next worker adopts them.

Requirements: the worker host can run ``sbatch``/``squeue``/``scancel``, and the compute nodes see the project,
``HALA_HOME`` and the database at the same paths (a shared file system; the database a server, or a SQLite file
on the shared file system for a single node).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal as _signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hala_core.executor_config import SlurmConfig

log = logging.getLogger("hala.slurm")

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "slurm:"

# squeue states of a job that is still in Slurm's hands (not ended yet)
LIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                         "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
                         "RESV_DEL_HOLD"})
ALIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"})

Runner = Callable[..., subprocess.CompletedProcess]


class SlurmError(RuntimeError):
    """A Slurm command failed; the message says what Slurm said."""


def job_id_of(handle: str) -> str:
    if not handle.startswith(PREFIX):
        raise ValueError(f"{handle!r} is not a Slurm handle (slurm:<jobid>)")
    return handle[len(PREFIX):]


def format_time_limit(value: str | None) -> str | None:
    """Slurm's time formats (``1:00``, ``1``, ``00:01:00``, ``2-00:00:00``, ``UNLIMITED``) as ``[D-]HH:MM:SS``."""
    if not value:
        return None
    v = value.strip()
    if v.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A", "PARTITION_LIMIT"):
        return v.upper()
    days = 0
    if "-" in v:
        d, _, v = v.partition("-")
        if not d.isdigit():
            return value
        days = int(d)
        parts = v.split(":")  # D-HH, D-HH:MM, D-HH:MM:SS
        parts += ["0"] * (3 - len(parts))
        h, m, s = parts[:3]
    else:
        parts = v.split(":")
        if len(parts) == 1:  # minutes
            h, m, s = "0", parts[0], "0"
        elif len(parts) == 2:  # MM:SS
            h, m, s = "0", parts[0], parts[1]
        else:
            h, m, s = parts[:3]
    try:
        total = ((days * 24 + int(h)) * 60 + int(m)) * 60 + int(s)
    except ValueError:
        return value
    d, rest = divmod(total, 86400)
    hh, rest = divmod(rest, 3600)
    mm, ss = divmod(rest, 60)
    return (f"{d}-" if d else "") + f"{hh:02d}:{mm:02d}:{ss:02d}"


def parse_exit_code(text: str | None) -> int | None:
    """Slurm's ``code:signal`` as one number: the exit status, or minus the signal that killed the job."""
    if not text:
        return None
    code, _, sig = text.strip().partition(":")
    try:
        c, s = int(code), int(sig or 0)
    except ValueError:
        return None
    return -s if s else c


# --------------------------------------------------------------------------- the batch script

def _directive(option: str) -> str:
    """One ``#SBATCH`` line; a value with spaces is quoted (sbatch reads quoted directive values)."""
    if " " in option and "=" in option:
        key, _, value = option.partition("=")
        option = f'{key}="{value}"'
    return f"#SBATCH {option}"


def sbatch_options(job_id: int, kind: str, spec: Mapping[str, Any], log_path: Path,
                   config: SlurmConfig) -> list[str]:
    """The sbatch options for a job: the workspace's defaults and ``sbatch`` lines, overridden by the job's own
    ``slurm:`` section (its named fields, then its ``extra_sbatch`` lines, which come last and so win)."""
    res = dict(spec.get("slurm") or {})
    opts = [f"--job-name=hala-{job_id}-{kind}", f"--output={log_path}", "--open-mode=append"]
    opts += list(config.sbatch)
    nodes = int(res.get("nodes") or 1)
    opts.append(f"--nodes={nodes}")
    if nodes > 1:
        opts.append("--ntasks-per-node=1")
    if int(res.get("gpus_per_node") or 0) > 0:
        opts.append(f"--gpus-per-node={int(res['gpus_per_node'])}")
    cpus = res.get("cpus_per_task") or config.cpus_per_task
    if cpus:
        opts.append(f"--cpus-per-task={int(cpus)}")
    for key, option in (("mem", "--mem"), ("time_limit", "--time"), ("partition", "--partition"),
                        ("account", "--account"), ("qos", "--qos")):
        value = res.get(key) or getattr(config, key)
        if value:
            opts.append(f"{option}={value}")
    opts += list(res.get("extra_sbatch") or ())
    return opts


def batch_script(job_id: int, kind: str, spec: Mapping[str, Any], log_path: Path, env: Mapping[str, str],
                 config: SlurmConfig, project_root: Path = ROOT, python: str | None = None) -> str:
    """The batch script of a job: its ``#SBATCH`` lines, the environment ``jobs.run`` needs, the workspace's setup
    lines, then ``exec python -m jobs.run <id>`` (so Slurm's signals reach the job process itself)."""
    python = python or config.python or sys.executable
    lines = ["#!/bin/bash", f"# hala job {job_id} ({kind}), written by the workbench's Slurm executor"]
    lines += [_directive(o) for o in sbatch_options(job_id, kind, spec, log_path, config)]
    lines += [
        f"cd {shlex.quote(str(project_root))} || exit 1",
        f"export HALA_HOME={shlex.quote(env.get('HALA_HOME', ''))}",
        f"export HALA_DB_URL={shlex.quote(env.get('HALA_DB_URL', ''))}",
        "export PYTHONUNBUFFERED=1",
        "# the job's parent is slurmstepd, not a worker: jobs.run does not watch for an orphaning",
        "export HALA_WORKER_PID=0",
        "export HALA_EXECUTOR=slurm",
    ]
    if env.get("HALA_READ_ROOTS"):
        lines.append(f"export HALA_READ_ROOTS={shlex.quote(env['HALA_READ_ROOTS'])}")
    cpus = (spec.get("slurm") or {}).get("cpus_per_task") or config.cpus_per_task
    if cpus:
        lines.append(f"export OMP_NUM_THREADS={int(cpus)}")
    lines += list(config.setup)
    lines.append('echo "=== slurm job $SLURM_JOB_ID on $(hostname) (nodes: $SLURM_JOB_NODELIST)"')
    lines.append(f"exec {shlex.quote(python)} -m jobs.run {int(job_id)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- following jobs

@dataclass
class SlurmJob:
    """What the executor last learnt of one Slurm job."""

    job_id: str
    state: str | None = None  # PENDING, RUNNING, COMPLETED, TIMEOUT, … (None: not known yet)
    time_limit: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    raw_exit: str | None = None
    gone: bool = False  # not in squeue any more
    final: bool = False  # ended, and the end is looked up

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES and not self.gone


def _first_state(text: str) -> str:
    """``CANCELLED by 0`` → ``CANCELLED``."""
    return text.strip().split()[0].upper() if text.strip() else ""


class SlurmExecutor:
    """Submit with ``sbatch``, follow with ``squeue``/``sacct``, stop with ``scancel``."""

    name = "slurm"
    survives_worker = True  # its jobs run on the cluster: a stopping worker leaves them, the next adopts them

    def __init__(self, config: SlurmConfig | None = None, project_root: Path = ROOT,
                 runner: Runner | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or SlurmConfig(enabled=True)
        self.project_root = project_root
        self._run = runner or subprocess.run
        self._clock = clock
        self._jobs: dict[str, SlurmJob] = {}
        self._refreshed_at: dict[str, float] = {}
        self.squeue_calls = 0  # for tests and diagnostics

    # -- availability -------------------------------------------------------------------------------
    @staticmethod
    def available() -> str | None:
        """None when this host can submit jobs; else why not."""
        missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
        if missing:
            return f"{', '.join(missing)} not found on PATH (install the Slurm client tools, e.g. slurm-client)"
        return None

    def _cmd(self, args: list[str], timeout: float = 30.0, env: Mapping[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
        try:
            return self._run(args, capture_output=True, text=True, timeout=timeout,
                             env=dict(env) if env is not None else None, cwd=cwd)
        except FileNotFoundError:
            raise SlurmError(f"{args[0]} is not installed here (not found on PATH)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{args[0]} did not answer within {timeout:.0f}s (is slurmctld up?)") from None

    # -- Executor protocol --------------------------------------------------------------------------
    def launch(self, job_id: int, log_path: Path, env: dict[str, str], spec: Mapping[str, Any] | None = None,
               kind: str = "") -> str:
        spec = dict(spec or {})
        kind = kind or str(spec.get("kind") or "job")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        script = log_path.parent / "slurm.sbatch"
        script.write_text(batch_script(job_id, kind, spec, log_path, env, self.config, self.project_root),
                          encoding="utf-8")
        script.chmod(0o600)  # it may hold the database password (HALA_DB_URL)
        env = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "HALA_WORKER_PID")}
        p = self._cmd(["sbatch", "--parsable", str(script)], env=env, cwd=log_path.parent)
        if p.returncode != 0:
            said = (p.stderr or p.stdout or "").strip() or f"exit status {p.returncode}"
            raise SlurmError(f"sbatch refused the job: {said}")
        out = (p.stdout or "").strip().splitlines()
        slurm_id = out[-1].split(";")[0].strip() if out else ""
        if not slurm_id.isdigit():
            raise SlurmError(f"sbatch did not print a job id: {(p.stdout or '').strip()!r}")
        self._jobs[slurm_id] = SlurmJob(slurm_id, state="PENDING")
        self._refreshed_at[slurm_id] = self._clock()
        return PREFIX + slurm_id

    def refresh(self, handles: Iterable[str], force: bool = False) -> None:
        """Ask squeue once about all these jobs (at most every ``poll_s`` seconds unless ``force``)."""
        now = self._clock()
        ids = []
        for h in handles:
            jid = job_id_of(h)
            job = self._jobs.get(jid)
            if job is not None and job.final:
                continue
            if force or now - self._refreshed_at.get(jid, -1e9) >= self.config.poll_s:
                ids.append(jid)
        if not ids:
            return
        self.squeue_calls += 1
        try:
            p = self._cmd(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%l|%r"], timeout=20)
        except SlurmError as e:
            log.warning("squeue failed (%s); keeping the last known states", e)
            return
        if p.returncode != 0 and "Invalid job id" not in (p.stderr or ""):
            log.warning("squeue failed (exit %d: %s); keeping the last known states", p.returncode,
                        (p.stderr or "").strip())
            return
        seen: dict[str, tuple[str, str, str]] = {}
        for line in (p.stdout or "").splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 4:
                seen[parts[0]] = (parts[1].upper(), parts[2], parts[3])
        for jid in ids:
            job = self._jobs.setdefault(jid, SlurmJob(jid))
            self._refreshed_at[jid] = now
            if jid in seen:
                job.state, limit, reason = seen[jid]
                job.time_limit = format_time_limit(limit) or job.time_limit
                job.reason = None if reason in ("None", "") else reason
            else:
                job.gone = True

    def info(self, handle: str) -> SlurmJob:
        """The cached view of a job (refreshing it alone when it is not cached), with its end looked up once it
        has ended."""
        jid = job_id_of(handle)
        if jid not in self._jobs or jid not in self._refreshed_at:
            self.refresh([handle], force=True)
        job = self._jobs.setdefault(jid, SlurmJob(jid))
        if not job.final and (job.gone or (job.state is not None and job.state not in LIVE_STATES)):
            self._look_up_end(job)
        return job

    def poll(self, handle: str) -> int | None:
        job = self.info(handle)
        if not job.final:
            return None
        if job.exit_code is not None:
            return job.exit_code
        return 0 if job.state == "COMPLETED" else 1

    def state(self, handle: str) -> str | None:
        """What Slurm says of the job: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, … (cached)."""
        return self.info(handle).state

    def alive(self, handle: str) -> bool:
        """Whether Slurm still has the job pending or running (squeue, cached for ``poll_s``)."""
        self.refresh([handle])
        job = self._jobs.get(job_id_of(handle))
        return job is not None and not job.gone and job.state in ALIVE_STATES

    def signal(self, handle: str, sig: int) -> None:
        """SIGTERM: ``scancel --signal=TERM --full`` (the job saves and stops itself; a pending job is simply
        cancelled); SIGKILL (or anything else): ``scancel`` (Slurm ends the job: TERM, then KILL after
        KillWait)."""
        jid = job_id_of(handle)
        job = self._jobs.get(jid)
        if sig == _signal.SIGTERM and not (job is not None and job.state == "PENDING"):
            args = ["scancel", "--signal=TERM", "--full", jid]
        else:
            args = ["scancel", jid]
        try:
            p = self._cmd(args, timeout=20)
        except SlurmError as e:
            log.warning("%s: %s", " ".join(args), e)
            return
        if p.returncode != 0:
            log.warning("%s: exit %d: %s", " ".join(args), p.returncode, (p.stderr or "").strip())
        self._refreshed_at.pop(jid, None)  # look again on the next poll

    def pid(self, handle: str) -> int | None:
        return None  # the process runs on a compute node: jobs.run records its own pid there

    def forget(self, handle: str) -> None:
        jid = job_id_of(handle)
        self._jobs.pop(jid, None)
        self._refreshed_at.pop(jid, None)

    # -- how it ended -------------------------------------------------------------------------------
    def _look_up_end(self, job: SlurmJob) -> None:
        """Fill in the final state and exit code of an ended job: jobcomp log, accounting, then scontrol."""
        for args in (["sacct", "-c", "-j", job.job_id, "-n", "-P", "-o", "JobID,State,ExitCode"],
                     ["sacct", "-X", "-j", job.job_id, "-n", "-P", "-o", "JobID,State,ExitCode"]):
            try:
                p = self._cmd(args, timeout=20)
            except SlurmError:
                continue
            if p.returncode != 0:
                continue
            rows = [r.split("|") for r in (p.stdout or "").splitlines() if r.split("|")[0] == job.job_id]
            if rows and len(rows[-1]) >= 3:  # the last line: ids restart when the cluster restarts clean
                _, state, code = rows[-1][:3]
                job.state = _first_state(state) or job.state
                job.raw_exit, job.exit_code = code, parse_exit_code(code)
                job.final = job.state not in LIVE_STATES
                if job.final:
                    return
        try:
            p = self._cmd(["scontrol", "-o", "show", "job", job.job_id], timeout=20)
        except SlurmError:
            p = None
        if p is not None and p.returncode == 0:
            fields = dict(re.findall(r"(\w+)=(\S*)", p.stdout or ""))
            state = _first_state(fields.get("JobState", ""))
            if state:
                job.state = state
                job.raw_exit = fields.get("ExitCode")
                job.exit_code = parse_exit_code(job.raw_exit)
                job.time_limit = format_time_limit(fields.get("TimeLimit")) or job.time_limit
                if fields.get("Reason") not in (None, "None"):
                    job.reason = fields["Reason"]
                job.final = state not in LIVE_STATES
                return
        if job.gone:  # Slurm has forgotten it and nothing recorded its end
            job.state = job.state if job.state and job.state not in LIVE_STATES else "UNKNOWN"
            job.final = True
        elif job.state not in LIVE_STATES:  # squeue's final state; no exit code to be had
            job.final = True

    def outcome(self, handle: str, status: str, cancel_requested: bool) -> tuple[str, str] | None:
        """How to record the end of an ended job whose row says ``status`` now, when Slurm's view should win:
        (final status, error) or None to keep what the job recorded (or the worker's generic message).

        Slurm wins over a job that recorded nothing (still claimed/running) and over ``interrupted`` (the job
        saw Slurm's SIGTERM at the time limit or a cancel from outside and saved itself)."""
        job = self.info(handle)
        if not job.final or status not in ("claimed", "running", "interrupted"):
            return None
        state, code = job.state or "UNKNOWN", job.raw_exit or "?"
        reason = f", reason {job.reason}" if job.reason else ""
        if state == "TIMEOUT":
            limit = job.time_limit or "?"
            return "failed", f"Slurm stopped the job at its time limit ({limit}, state TIMEOUT)"
        if state in ("CANCELLED", "DEADLINE") and cancel_requested:
            return "cancelled", (f"cancelled: Slurm cancelled job {job.job_id} (state {state})"
                                 + (" before it started" if status == "claimed" else ""))
        if state == "CANCELLED":
            return "cancelled", (f"Slurm cancelled job {job.job_id} (state CANCELLED{reason}): it was cancelled "
                                 "outside the workbench (scancel) or by the cluster")
        if state == "OUT_OF_MEMORY":
            return "failed", f"Slurm ended the job: it ran out of memory (state OUT_OF_MEMORY, exit {code})"
        if state == "NODE_FAIL":
            return "failed", f"Slurm ended the job: a node it ran on failed (state NODE_FAIL{reason})"
        if state in ("PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"):
            return "failed", f"Slurm ended the job (state {state}, exit {code}{reason})"
        if status == "interrupted":
            return None  # FAILED/COMPLETED after the job recorded its own stop: keep its account
        if state == "UNKNOWN":
            return "interrupted", (f"Slurm no longer knows job {job.job_id} and nothing recorded how it ended "
                                   "(no job completion or accounting record)")
        if status == "claimed":
            return "failed", (f"the job never started its process on Slurm (state {state}, exit {code}{reason}); "
                              "see the job log")
        return "failed", (f"the job process on Slurm ended without recording a result (state {state}, exit "
                          f"{code}{reason}); see the job log")


def main_host(nodelist: str, runner: Runner | None = None) -> str:
    """The first host of a Slurm node list (``node[01-04]`` → ``node01``), by ``scontrol show hostnames``."""
    run = runner or subprocess.run
    p = run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
    hosts = (p.stdout or "").split()
    if p.returncode != 0 or not hosts:
        raise SlurmError(f"scontrol show hostnames {nodelist!r} failed: {(p.stderr or '').strip()}")
    return hosts[0]


def slurm_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("SLURM_")}
