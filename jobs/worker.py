"""The worker: claims queued jobs, runs each through its executor, follows it, and reaps stale jobs.

Any number of workers (processes, on one host or several sharing a database) may run at once; the
atomic claim in ``jobs.queue`` keeps each job to one of them.

One worker runs several executors: ``local`` always (each job a subprocess here, ``max_jobs`` at once) and
``slurm`` when the workspace enables it in ``hala.yaml`` (each job a batch job, ``max_submitted`` at once). Local
jobs end with their worker; Slurm jobs do not: a worker that stops leaves them running on the cluster, and the
next worker adopts them (follows them to their end) instead of reaping them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select, update

from db.models import ACTIVE_STATES, Job, Worker, utcnow
from db.session import read_scope, session_scope
from hala_core.settings import Settings
from jobs.executors import Executor, LocalExecutor, executor_name_of, kill_signal_name, process_alive
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
    executor: str = "local"
    state: str | None = None  # the executor's last word on it (Slurm: PENDING, RUNNING, …), as recorded


@dataclass
class WorkerConfig:
    max_jobs: int = 1  # local jobs at once
    poll_s: float = 0.25
    global_limit: int | None = None
    cancel_grace_s: float = CANCEL_GRACE_S
    # the executors to run; None: ``local`` plus those enabled in HALA_HOME/hala.yaml
    executors: tuple[str, ...] | None = None
    max_submitted: int | None = None  # Slurm jobs at once; None: hala.yaml's ``slurm.max_submitted``
    env: dict[str, str] = field(default_factory=dict)


def _worker_dead(s, job: Job, host: str, cutoff) -> tuple[bool, Worker | None]:  # noqa: ANN001
    worker = s.get(Worker, job.worker_id) if job.worker_id else None
    dead = (worker is None or worker.stopped_at is not None or worker.heartbeat_at < cutoff
            or (worker.host == host and not process_alive(worker.pid)))
    return dead, worker


def reap_stale(s, host: str, executors: Mapping[str, Executor] | Executor,  # noqa: ANN001
               stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """Mark interrupted every active job whose worker is gone and whose process is gone too.

    Jobs of an executor whose jobs outlive their worker (Slurm) are never reaped here: a worker that runs that
    executor adopts them (``JobWorker._adopt``), and a worker that does not leaves them alone."""
    if not isinstance(executors, Mapping):
        executors = {executors.name: executors}
    local = executors.get("local") or LocalExecutor()
    reaped: list[int] = []
    cutoff = stale_cutoff(stale_after_s)
    jobs = list(s.scalars(select(Job).where(Job.status.in_(ACTIVE_STATES))))
    for job in jobs:
        if job.executor_handle and executor_name_of(job.executor_handle) != "local":
            continue  # started on a cluster: it may run on without any worker
        worker_dead, worker = _worker_dead(s, job, host, cutoff)
        if not worker_dead:
            continue
        if job.host == host and job.executor_handle and local.alive(job.executor_handle):
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
                 executor: Executor | None = None, worker_id: str | None = None,
                 executors: Mapping[str, Executor] | None = None) -> None:
        """``executors`` (name → executor) replaces the executors the config and ``hala.yaml`` would make;
        ``executor`` replaces the local one (tests)."""
        self.settings = settings
        self.config = config or WorkerConfig()
        self.host = socket.gethostname()
        self.id = worker_id or f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.capacity: dict[str, int] = {"local": self.config.max_jobs}
        self._cfg_stamp: object = None
        # executors given or named on the command line: fixed; else they follow hala.yaml while the worker runs
        self._follow_config = executors is None and self.config.executors is None
        self.executors: dict[str, Executor] = dict(executors) if executors is not None else {}
        if executors is None:
            self._apply_config(initial=True)
        if executor is not None:
            self.executors[executor.name] = executor
        self.executors.setdefault("local", LocalExecutor())
        self.executor = self.executors["local"]  # the local executor (``run_one``)
        self.running: dict[int, _Running] = {}
        self.stop_event = threading.Event()
        self._last_beat = 0.0
        self._last_reap = 0.0
        self._url = settings.db_url

    def _config_stamp(self) -> object:
        from hala_core.executor_config import config_path

        try:
            st = config_path(self.settings.home).stat()
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def _apply_config(self, initial: bool = False) -> None:
        """Make or update the executors from hala.yaml (or the names the worker was given): ``local`` always,
        ``slurm`` when enabled and this host can submit. Called at start and, for a worker that follows hala.yaml,
        whenever the file changes (the admin enables Slurm in the UI: the running worker takes it up). An executor
        turned off keeps following its running jobs but claims no new ones. Why an executor is off goes to the
        log."""
        from hala_core.executor_config import ExecutorConfig, enabled_executors, load_executor_config
        from jobs.executors import make_executor

        self._cfg_stamp = self._config_stamp()
        try:
            cfg = load_executor_config(self.settings.home)
        except ValueError as e:
            log.error("executor settings not read (%s): %s", e, "running local jobs only" if initial
                      else "keeping the executors as they are")
            if not initial:
                return
            cfg = ExecutorConfig()
            names = ["local", *(self.config.executors or ())]
        else:
            names = list(self.config.executors) if self.config.executors is not None else enabled_executors(cfg)
        names = list(dict.fromkeys(["local", *names]))
        for name in list(self.capacity):
            if name != "local" and name not in names and self.capacity[name]:
                log.info("%s executor off (hala.yaml): its running jobs are still followed, no new ones claimed",
                         name)
                self.capacity[name] = 0
        for name in names:
            if name == "slurm":
                from jobs.slurm import SlurmExecutor

                why = SlurmExecutor.available()
                if why is not None:
                    log.warning("slurm executor off: %s; Slurm jobs stay queued", why)
                    continue
                if not cfg.slurm.enabled:
                    log.info("slurm executor on (asked for), although hala.yaml does not enable it")
                self.capacity["slurm"] = self.config.max_submitted or cfg.slurm.max_submitted
                if "slurm" in self.executors:
                    self.executors["slurm"].config = cfg.slurm  # type: ignore[attr-defined]
                    continue
            if name in self.executors:
                continue
            try:
                self.executors[name] = make_executor(name, cfg)
            except ValueError as e:
                log.error("%s", e)
                continue
            if not initial:
                log.info("%s executor on (hala.yaml changed), up to %d jobs", name, self.capacity.get(name, 1))

    def _maybe_reload_config(self) -> None:
        if self._follow_config and self._config_stamp() != self._cfg_stamp:
            self._apply_config()
            with session_scope(self._url) as s:
                s.execute(update(Worker).where(Worker.id == self.id).values(
                    executor=",".join(n for n in self.executors if self.capacity.get(n, 1))[:32]))

    # -- lifecycle -------------------------------------------------------------------------------
    def register(self) -> None:
        with session_scope(self._url) as s:
            s.add(Worker(id=self.id, host=self.host, pid=os.getpid(), executor=",".join(self.executors)[:32],
                         max_jobs=self.config.max_jobs))

    def run_forever(self) -> None:
        self.register()
        caps = ", ".join(f"{n}: {self.capacity.get(n, 1)}" for n in self.executors)
        log.info("worker %s started (executors %s)", self.id, caps)
        try:
            while not self.stop_event.is_set():
                busy = self.tick()
                if not busy:
                    self.stop_event.wait(self.config.poll_s)
        finally:
            self.shutdown()

    def shutdown(self, reason: str = "worker shut down") -> None:
        """Ask running local jobs to stop, wait for them for the grace period, then record the worker as stopped.
        Jobs of an executor that outlives the worker (Slurm) are left running: the next worker adopts them."""
        for job_id, r in list(self.running.items()):
            if self._ex(r).survives_worker:
                log.info("job %d (%s) left running on %s; the next worker follows it", job_id, r.handle,
                         r.executor)
                del self.running[job_id]
        for r in self.running.values():
            self._ex(r).signal(r.handle, signal.SIGTERM)
        deadline = time.monotonic() + self.config.cancel_grace_s
        while self.running and time.monotonic() < deadline:
            self._follow_children()
            time.sleep(0.1)
        for r in list(self.running.values()):
            self._ex(r).signal(r.handle, signal.SIGKILL)
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
            self._maybe_reload_config()
        if now - self._last_reap >= HEARTBEAT_S * 2:
            self._last_reap = now
            with session_scope(self._url) as s:
                for job_id in reap_stale(s, self.host, self.executors):
                    log.warning("job %d marked interrupted: its worker and process are gone", job_id)
            self._adopt()
        self._refresh()
        self._record_states()
        self._follow_children()
        self._handle_cancels()
        claimed = False
        for name in self.executors:
            cap = self.capacity.get(name, 1)
            while sum(r.executor == name for r in self.running.values()) < cap and not self.stop_event.is_set():
                if not self._claim_and_launch(name):
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

    def _ex(self, r: _Running) -> Executor:
        return self.executors[r.executor]

    def _claim_and_launch(self, executor: str = "local") -> bool:
        with session_scope(self._url) as s:
            job_id = claim_next(s, self.id, self.host, executor, self.config.global_limit)
        if job_id is None:
            return False
        self._launch(job_id, executor)
        return True

    def _launch(self, job_id: int, executor: str = "local") -> None:
        ex = self.executors[executor]
        log_path = self.settings.job_dir(job_id) / "job.log"
        env = {**os.environ, **self.config.env, "HALA_HOME": str(self.settings.home),
               "HALA_DB_URL": self._url, "HALA_WORKER_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        if executor == "local":
            # jobs running side by side share the cores instead of each taking all of them (CPU torch slows
            # down by an order of magnitude when its threads outnumber the free cores)
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(self.config.max_jobs, 1))))
        with session_scope(self._url) as s:
            row = s.execute(select(Job.kind, Job.spec).where(Job.id == job_id)).first()
        kind, spec = (row[0] or "", dict(row[1] or {})) if row else ("", {})
        try:
            handle = ex.launch(job_id, log_path, env, spec=spec, kind=kind)
        except Exception as e:  # noqa: BLE001
            what = "could not start the job process" if executor == "local" else f"could not start the job on {executor}"
            with session_scope(self._url) as s:
                s.execute(update(Job).where(Job.id == job_id).values(log_path=str(log_path)))
                finish(s, job_id, "failed", error=f"{what}: {e}")
            log.warning("job %d: %s: %s", job_id, what, e)
            return
        state = ex.state(handle)
        values: dict[str, object] = {"executor_handle": handle, "log_path": str(log_path)}
        pid = ex.pid(handle)
        if pid is not None:
            values["pid"] = pid
        if state is not None:
            values["executor_state"] = state
        with session_scope(self._url) as s:
            s.execute(update(Job).where(Job.id == job_id).values(**values))
        self.running[job_id] = _Running(job_id, handle, kind=kind, executor=executor, state=state)
        log.info("job %d started (%s)", job_id, handle)

    def _adopt(self) -> None:
        """Follow the active jobs of executors that outlive their worker (Slurm) whose worker is dead."""
        outliving = {n for n, ex in self.executors.items() if ex.survives_worker}
        if not outliving:
            return
        cutoff = stale_cutoff(STALE_AFTER_S)
        with session_scope(self._url) as s:
            for job in list(s.scalars(select(Job).where(Job.status.in_(ACTIVE_STATES),
                                                        Job.executor_handle.is_not(None)))):
                name = executor_name_of(job.executor_handle)
                if name not in outliving or job.id in self.running or job.worker_id == self.id:
                    continue
                dead, _ = _worker_dead(s, job, self.host, cutoff)
                if not dead:
                    continue
                old = job.worker_id
                cond = Job.worker_id.is_(None) if old is None else Job.worker_id == old
                n = s.execute(update(Job).where(Job.id == job.id, cond, Job.status.in_(ACTIVE_STATES))
                              .values(worker_id=self.id)).rowcount
                if n:
                    self.running[job.id] = _Running(job.id, job.executor_handle, kind=job.kind, executor=name,
                                                    state=job.executor_state)
                    log.info("job %d (%s) adopted from worker %s, which is gone", job.id, job.executor_handle, old)

    def _refresh(self) -> None:
        """One look per executor at all its jobs (Slurm: one squeue call for all of them)."""
        by_ex: dict[str, list[str]] = {}
        for r in self.running.values():
            by_ex.setdefault(r.executor, []).append(r.handle)
        for name, handles in by_ex.items():
            try:
                self.executors[name].refresh(handles)
            except Exception as e:  # noqa: BLE001 — a cluster hiccup must not stop the worker
                log.warning("%s: refresh failed: %s", name, e)

    def _record_states(self) -> None:
        """Store the executor's word on each job (PENDING → RUNNING → …) when it changes."""
        changed: dict[int, str] = {}
        for r in self.running.values():
            try:
                state = self._ex(r).state(r.handle)
            except Exception as e:  # noqa: BLE001
                log.warning("job %d: state unknown: %s", r.job_id, e)
                continue
            if state is not None and state != r.state:
                r.state = changed[r.job_id] = state
        if changed:
            with session_scope(self._url) as s:
                for job_id, state in changed.items():
                    s.execute(update(Job).where(Job.id == job_id).values(executor_state=state[:32]))

    def _follow_children(self) -> None:
        for job_id, r in list(self.running.items()):
            ex = self._ex(r)
            try:
                code = ex.poll(r.handle)
            except Exception as e:  # noqa: BLE001
                log.warning("job %d: poll failed: %s", job_id, e)
                continue
            if code is None:
                continue
            del self.running[job_id]
            with session_scope(self._url) as s:
                job = s.get(Job, job_id)
                values: dict[str, object] = {"exit_code": code}
                state = ex.state(r.handle)
                if state is not None:
                    values["executor_state"] = state[:32]
                s.execute(update(Job).where(Job.id == job_id).values(**values))
                override = ex.outcome(r.handle, job.status, bool(job.cancel_requested)) if job is not None else None
                if override is not None:
                    status, error = override
                    # the executor's account wins over no result and over the job's own "interrupted"
                    s.execute(update(Job).where(Job.id == job_id,
                                                Job.status.in_([*ACTIVE_STATES, "interrupted"]))
                              .values(status=status, error=error[-4000:], finished_at=utcnow(), exit_code=code))
                elif job is not None and job.status in ACTIVE_STATES:
                    if r.term_sent_at is not None and job.cancel_requested:
                        finish(s, job_id, "cancelled", error="cancelled: the process was stopped by signal",
                               exit_code=code)
                    elif code < 0:
                        finish(s, job_id, "failed", exit_code=code,
                               error=f"the job process was killed by {kill_signal_name(code)} (exit {code})")
                    else:
                        finish(s, job_id, "failed", exit_code=code,
                               error=f"the job process exited with status {code} without recording a result")
            forget = getattr(ex, "forget", None)
            if forget is not None:
                forget(r.handle)
            log.info("job %d process ended with %s%s", job_id, code, f" ({state})" if state else "")

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
                self._ex(r).signal(r.handle, signal.SIGTERM)
            elif not r.killed and now - r.term_sent_at > STOP_GRACE_S.get(r.kind, self.config.cancel_grace_s):
                r.killed = True
                self._ex(r).signal(r.handle, signal.SIGKILL)


def live_worker(settings: Settings) -> Worker | None:
    """A worker on this host that is alive now (heartbeat fresh and process running), if any."""
    host = socket.gethostname()
    with read_scope(settings.db_url) as s:
        for w in s.scalars(select(Worker).where(Worker.stopped_at.is_(None), Worker.host == host,
                                                Worker.heartbeat_at >= stale_cutoff(STALE_AFTER_S))):
            if process_alive(w.pid):
                return w
    return None
