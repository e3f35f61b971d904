"""The worker: claims queued jobs, runs each as its own subprocess, follows it, and reaps stale jobs.

Any number of workers (processes, on one host or several sharing a database) may run at once; the
atomic claim in ``jobs.queue`` keeps each job to one of them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select, update

from db.models import ACTIVE_STATES, Job, Worker, utcnow
from db.session import read_scope, session_scope
from hala_core.settings import Settings
from jobs.executors import Executor, LocalExecutor, kill_signal_name, process_alive
from jobs.queue import claim_job, claim_next, finish, stale_cutoff

log = logging.getLogger("hala.worker")

HEARTBEAT_S = 2.0
STALE_AFTER_S = 15.0  # a worker without a heartbeat for this long is taken for dead
CANCEL_GRACE_S = 10.0


# How long a job may take to stop after SIGTERM before it is killed, per kind (training saves a checkpoint).
STOP_GRACE_S = {"train": float(os.environ.get("HALA_TRAIN_STOP_GRACE_S", "600"))}


@dataclass
class _Running:
    job_id: int
    handle: str
    term_sent_at: float | None = None
    killed: bool = False
    kind: str = ""


@dataclass
class WorkerConfig:
    max_jobs: int = 1
    poll_s: float = 0.25
    global_limit: int | None = None
    cancel_grace_s: float = CANCEL_GRACE_S
    executor: str = "local"
    env: dict[str, str] = field(default_factory=dict)


def reap_stale(s, host: str, executor: Executor, stale_after_s: float = STALE_AFTER_S) -> list[int]:  # noqa: ANN001
    """Mark interrupted every active job whose worker is gone and whose process is gone too."""
    reaped: list[int] = []
    cutoff = stale_cutoff(stale_after_s)
    jobs = list(s.scalars(select(Job).where(Job.status.in_(ACTIVE_STATES))))
    for job in jobs:
        worker = s.get(Worker, job.worker_id) if job.worker_id else None
        worker_dead = (
            worker is None or worker.stopped_at is not None or worker.heartbeat_at < cutoff
            or (worker.host == host and not process_alive(worker.pid))
        )
        if not worker_dead:
            continue
        if job.host == host and job.executor_handle and executor.alive(job.executor_handle):
            continue  # still running: its own watchdog stops it, then it records how it ended
        if job.host != host and job.heartbeat_at and job.heartbeat_at >= cutoff:
            continue  # on another host and still beating
        who = f"worker {job.worker_id}" + (f" (pid {worker.pid} on {worker.host})" if worker else "")
        where = f"its process {job.pid} is gone" if job.pid else "it had not started yet"
        if finish(s, job.id, "interrupted", error=f"{who} stopped without finishing this job; {where}"):
            reaped.append(job.id)
    return reaped


class JobWorker:
    def __init__(self, settings: Settings, config: WorkerConfig | None = None,
                 executor: Executor | None = None, worker_id: str | None = None) -> None:
        self.settings = settings
        self.config = config or WorkerConfig()
        self.executor = executor or LocalExecutor()
        self.host = socket.gethostname()
        self.id = worker_id or f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.running: dict[int, _Running] = {}
        self.stop_event = threading.Event()
        self._last_beat = 0.0
        self._last_reap = 0.0
        self._url = settings.db_url

    # -- lifecycle -------------------------------------------------------------------------------
    def register(self) -> None:
        with session_scope(self._url) as s:
            s.add(Worker(id=self.id, host=self.host, pid=os.getpid(), executor=self.executor.name,
                         max_jobs=self.config.max_jobs))

    def run_forever(self) -> None:
        self.register()
        log.info("worker %s started (max %d jobs)", self.id, self.config.max_jobs)
        try:
            while not self.stop_event.is_set():
                busy = self.tick()
                if not busy:
                    self.stop_event.wait(self.config.poll_s)
        finally:
            self.shutdown()

    def shutdown(self, reason: str = "worker shut down") -> None:
        """Ask running jobs to stop, wait for them for the grace period, then record the worker as stopped."""
        for r in self.running.values():
            self.executor.signal(r.handle, signal.SIGTERM)
        deadline = time.monotonic() + self.config.cancel_grace_s
        while self.running and time.monotonic() < deadline:
            self._follow_children()
            time.sleep(0.1)
        for r in list(self.running.values()):
            self.executor.signal(r.handle, signal.SIGKILL)
            with session_scope(self._url) as s:
                finish(s, r.job_id, "interrupted", error=f"{reason}; the job was killed after the grace period")
        self.running.clear()
        with session_scope(self._url) as s:
            s.execute(update(Worker).where(Worker.id == self.id).values(stopped_at=utcnow()))
        log.info("worker %s stopped", self.id)

    # -- one turn of the loop --------------------------------------------------------------------
    def tick(self) -> bool:
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_S:
            self._last_beat = now
            with session_scope(self._url) as s:
                s.execute(update(Worker).where(Worker.id == self.id).values(heartbeat_at=utcnow()))
        if now - self._last_reap >= HEARTBEAT_S * 2:
            self._last_reap = now
            with session_scope(self._url) as s:
                for job_id in reap_stale(s, self.host, self.executor):
                    log.warning("job %d marked interrupted: its worker and process are gone", job_id)
        self._follow_children()
        self._handle_cancels()
        claimed = False
        while len(self.running) < self.config.max_jobs and not self.stop_event.is_set():
            if not self._claim_and_launch():
                break
            claimed = True
        return claimed

    def run_one(self, job_id: int, on_tick=None) -> None:  # noqa: ANN001
        """Run one given queued job here and now (``hala run --inline``, ``hala demo-models``)."""
        self.register()
        try:
            with session_scope(self._url) as s:
                if not claim_job(s, job_id, self.id, self.host):
                    raise ValueError(f"job {job_id} is not queued any more")
            self._launch(job_id)
            while self.running:
                self._follow_children()
                self._handle_cancels()
                if on_tick:
                    on_tick()
                time.sleep(0.2)
        finally:
            self.shutdown()

    def _claim_and_launch(self) -> bool:
        with session_scope(self._url) as s:
            job_id = claim_next(s, self.id, self.host, self.executor.name, self.config.global_limit)
        if job_id is None:
            return False
        self._launch(job_id)
        return True

    def _launch(self, job_id: int) -> None:
        log_path = self.settings.job_dir(job_id) / "job.log"
        env = {**os.environ, **self.config.env, "HALA_HOME": str(self.settings.home),
               "HALA_DB_URL": self._url, "HALA_WORKER_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        # jobs running side by side share the cores instead of each taking all of them (CPU torch slows down
        # by an order of magnitude when its threads outnumber the free cores)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(self.config.max_jobs, 1))))
        try:
            handle = self.executor.launch(job_id, log_path, env)
        except Exception as e:  # noqa: BLE001
            with session_scope(self._url) as s:
                finish(s, job_id, "failed", error=f"could not start the job process: {e}")
            return
        with session_scope(self._url) as s:
            s.execute(update(Job).where(Job.id == job_id).values(
                executor_handle=handle, log_path=str(log_path), pid=int(handle.split(":")[0])))
            kind = s.scalar(select(Job.kind).where(Job.id == job_id)) or ""
        self.running[job_id] = _Running(job_id, handle, kind=kind)
        log.info("job %d started (%s)", job_id, handle)

    def _follow_children(self) -> None:
        for job_id, r in list(self.running.items()):
            code = self.executor.poll(r.handle)
            if code is None:
                continue
            del self.running[job_id]
            with session_scope(self._url) as s:
                job = s.get(Job, job_id)
                s.execute(update(Job).where(Job.id == job_id).values(exit_code=code))
                if job is not None and job.status in ACTIVE_STATES:
                    if r.term_sent_at is not None and job.cancel_requested:
                        finish(s, job_id, "cancelled", error="cancelled: the process was stopped by signal",
                               exit_code=code)
                    elif code < 0:
                        finish(s, job_id, "failed", exit_code=code,
                               error=f"the job process was killed by {kill_signal_name(code)} (exit {code})")
                    else:
                        finish(s, job_id, "failed", exit_code=code,
                               error=f"the job process exited with status {code} without recording a result")
            log.info("job %d process ended with %s", job_id, code)

    def _handle_cancels(self) -> None:
        if not self.running:
            return
        with session_scope(self._url) as s:
            wanted = set(s.scalars(select(Job.id).where(Job.id.in_(list(self.running)),
                                                         Job.cancel_requested.is_(True))))
        now = time.monotonic()
        for job_id in wanted:
            r = self.running[job_id]
            if r.term_sent_at is None:
                r.term_sent_at = now
                self.executor.signal(r.handle, signal.SIGTERM)
            elif not r.killed and now - r.term_sent_at > STOP_GRACE_S.get(r.kind, self.config.cancel_grace_s):
                r.killed = True
                self.executor.signal(r.handle, signal.SIGKILL)


def live_worker(settings: Settings) -> Worker | None:
    """A worker on this host that is alive now (heartbeat fresh and process running), if any."""
    host = socket.gethostname()
    with read_scope(settings.db_url) as s:
        for w in s.scalars(select(Worker).where(Worker.stopped_at.is_(None), Worker.host == host,
                                                Worker.heartbeat_at >= stale_cutoff(STALE_AFTER_S))):
            if process_alive(w.pid):
                return w
    return None
