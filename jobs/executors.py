"""Executors start a job's process and follow it. One small interface; ``local`` now, a cluster one later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import psutil


class Executor(Protocol):
    name: str

    def launch(self, job_id: int, log_path: Path, env: dict[str, str]) -> str:
        """Start ``python -m jobs.run <job_id>``; return a handle that names the process for ``alive``."""
        ...

    def poll(self, handle: str) -> int | None:
        """The exit status if the process has ended (negative: killed by that signal), else None."""
        ...

    def signal(self, handle: str, sig: int) -> None: ...

    def alive(self, handle: str) -> bool:
        """Whether the process a handle names still runs (works from any process on the same host)."""
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

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def launch(self, job_id: int, log_path: Path, env: dict[str, str]) -> str:
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


EXECUTORS = {"local": LocalExecutor}


def make_executor(name: str) -> Executor:
    try:
        return EXECUTORS[name]()
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; executors: {', '.join(EXECUTORS)}") from None


def kill_signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
