"""Executors start a job's process and follow it: ``local`` (a child process of the worker) and ``slurm`` (a batch
job on a cluster, ``jobs.slurm``). One small interface; the worker runs several executors at once.

Handles name what an executor started: ``<pid>:<create time>`` for local processes, ``slurm:<jobid>`` for Slurm
jobs; ``executor_name_of(handle)`` tells which executor a stored handle belongs to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import psutil


class Executor(Protocol):
    name: str
    # True when the executor's jobs run on without the worker (a cluster): a stopping worker leaves them
    # running and a later worker adopts them instead of reaping them
    survives_worker: bool

    def launch(self, job_id: int, log_path: Path, env: dict[str, str], spec: Mapping[str, Any] | None = None,
               kind: str = "") -> str:
        """Start ``python -m jobs.run <job_id>``; return a handle that names the process for ``alive``.
        ``spec`` (the job's spec, as stored) and ``kind`` are for executors that size the job from it."""
        ...

    def poll(self, handle: str) -> int | None:
        """The exit status if the process has ended (negative: killed by that signal), else None."""
        ...

    def signal(self, handle: str, sig: int) -> None: ...

    def alive(self, handle: str) -> bool:
        """Whether the process a handle names still runs (works from any process on the same host)."""
        ...

    def refresh(self, handles: Iterable[str]) -> None:
        """Look at all these jobs at once (the worker calls it once a turn, before ``poll``/``state``)."""
        ...

    def state(self, handle: str) -> str | None:
        """What the executor itself says of the job (Slurm: PENDING, RUNNING, TIMEOUT, …); None: nothing to add."""
        ...

    def outcome(self, handle: str, status: str, cancel_requested: bool) -> tuple[str, str] | None:
        """For an ended job whose row says ``status``: (status, error) to record instead, or None."""
        ...

    def pid(self, handle: str) -> int | None:
        """The process id to store on the job row, when the process runs on this host."""
        ...


def _parse(handle: str) -> tuple[int, float]:
    pid, _, created = handle.partition(":")
    return int(pid), float(created or 0)


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """True if ``pid`` runs and (when given) was started at ``create_time`` — not a recycled pid."""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or create_time == 0 or abs(p.create_time() - create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def process_handle(pid: int) -> str:
    try:
        return f"{pid}:{psutil.Process(pid).create_time():.3f}"
    except psutil.NoSuchProcess:
        return f"{pid}:0"


class LocalExecutor:
    """Each job is a child process in its own session (process group), its output in the job's log file."""

    name = "local"
    survives_worker = False

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def launch(self, job_id: int, log_path: Path, env: dict[str, str], spec: Mapping[str, Any] | None = None,
               kind: str = "") -> str:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jobs.run", str(job_id)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, close_fds=True,
            )
        handle = process_handle(proc.pid)
        self._procs[handle] = proc
        return handle

    def poll(self, handle: str) -> int | None:
        proc = self._procs.get(handle)
        if proc is None:
            return None if self.alive(handle) else -1
        code = proc.poll()
        if code is not None:
            self._procs.pop(handle, None)
        return code

    def signal(self, handle: str, sig: int) -> None:
        pid, _ = _parse(handle)
        try:
            os.killpg(pid, sig)  # the job's own process group: its helpers go too
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)

    def alive(self, handle: str) -> bool:
        pid, created = _parse(handle)
        return process_alive(pid, created)

    def refresh(self, handles: Iterable[str]) -> None:
        return None

    def state(self, handle: str) -> str | None:
        return None

    def outcome(self, handle: str, status: str, cancel_requested: bool) -> tuple[str, str] | None:
        return None

    def pid(self, handle: str) -> int | None:
        return _parse(handle)[0]


EXECUTORS = ("local", "slurm")


def executor_name_of(handle: str) -> str:
    """Which executor a stored handle belongs to: ``slurm:<id>`` → slurm; ``<pid>:<time>`` → local."""
    prefix = handle.partition(":")[0]
    return "local" if prefix.isdigit() else prefix


def make_executor(name: str, config: Any = None) -> Executor:
    """An executor by name; ``config`` is the workspace's ``ExecutorConfig`` (``hala_core.executor_config``)."""
    if name == "local":
        return LocalExecutor()
    if name == "slurm":
        from jobs.slurm import SlurmExecutor

        return SlurmExecutor(config.slurm if config is not None else None)
    raise ValueError(f"unknown executor {name!r}; executors: {', '.join(EXECUTORS)}")


def kill_signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
