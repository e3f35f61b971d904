"""Real worker processes and real job subprocesses: races, kills, cancel, failures, limits."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import func, select

from db.models import Job, Metric
from db.session import session_scope
from hala_core.specs import SleepSpec
from jobs import queue
from tests.support.workspace import job_status, wait_for

pytestmark = pytest.mark.slow


def _enqueue(settings, spec, n: int = 1) -> list[int]:
    with session_scope(settings.db_url) as s:
        return [queue.enqueue(s, spec).id for _ in range(n)]


def _job(settings, job_id: int) -> Job:
    with session_scope(settings.db_url) as s:
        return s.get(Job, job_id)


def _all_final(settings, ids: list[int]) -> bool:
    with session_scope(settings.db_url) as s:
        return all(s.get(Job, i).status in ("succeeded", "failed", "cancelled", "interrupted") for i in ids)


def test_two_worker_processes_race_on_50_jobs_and_each_runs_once(workspace, workers):
    ids = _enqueue(workspace, SleepSpec(), 50)
    workers.start(max_jobs=2)
    workers.start(max_jobs=2)
    wait_for(lambda: _all_final(workspace, ids), timeout=240, what="50 jobs to finish")
    with session_scope(workspace.db_url) as s:
        jobs = list(s.scalars(select(Job).where(Job.id.in_(ids))))
        runs = dict(s.execute(select(Metric.job_id, func.count()).where(Metric.key == "started")
                              .group_by(Metric.job_id)).all())
    assert {j.status for j in jobs} == {"succeeded"}
    assert {j.attempt for j in jobs} == {1}
    assert all(runs.get(i) == 1 for i in ids), "every job's step ran exactly once"
    assert len({j.worker_id for j in jobs}) == 2, "both workers took part"


def test_kill_9_of_the_job_process_fails_the_job_with_the_signal(workspace, workers):
    [jid] = _enqueue(workspace, SleepSpec(seconds=60, steps=600))
    workers.start()
    wait_for(lambda: job_status(workspace, jid) == "running", what="job to run")
    os.kill(_job(workspace, jid).pid, signal.SIGKILL)
    wait_for(lambda: job_status(workspace, jid) == "failed", what="job marked failed")
    job = _job(workspace, jid)
    assert "killed by SIGKILL" in job.error and job.exit_code == -9


def test_kill_9_of_the_worker_interrupts_its_job_and_a_new_worker_carries_on(workspace, workers):
    [long_job] = _enqueue(workspace, SleepSpec(seconds=60, steps=600))
    rest = _enqueue(workspace, SleepSpec(seconds=0.1), 3)
    first = workers.start()
    wait_for(lambda: job_status(workspace, long_job) == "running", what="job to run")
    first.send_signal(signal.SIGKILL)
    first.wait()
    wait_for(lambda: job_status(workspace, long_job) == "interrupted", timeout=30, what="job interrupted")
    assert f"worker process {first.pid} died" in _job(workspace, long_job).error
    workers.start()
    wait_for(lambda: _all_final(workspace, rest), timeout=60, what="the rest of the queue")
    assert [job_status(workspace, j) for j in rest] == ["succeeded"] * 3


def test_worker_and_job_both_killed_the_next_worker_reaps_the_job(workspace, workers):
    [jid] = _enqueue(workspace, SleepSpec(seconds=60, steps=600))
    first = workers.start()
    wait_for(lambda: job_status(workspace, jid) == "running", what="job to run")
    job_pid = _job(workspace, jid).pid
    first.send_signal(signal.SIGKILL)
    os.kill(job_pid, signal.SIGKILL)
    first.wait()
    assert job_status(workspace, jid) == "running"  # nobody is left to say otherwise…
    [after] = _enqueue(workspace, SleepSpec())
    workers.start()  # …until a new worker reaps it on start
    wait_for(lambda: job_status(workspace, jid) == "interrupted", timeout=30, what="stale job reaped")
    err = _job(workspace, jid).error
    assert "stopped without finishing this job" in err and f"process {job_pid} is gone" in err
    wait_for(lambda: job_status(workspace, after) == "succeeded", timeout=30, what="next job")


def test_cancel_a_running_job_stops_it_cleanly(workspace, workers):
    [jid] = _enqueue(workspace, SleepSpec(seconds=60, steps=600))
    workers.start()
    wait_for(lambda: _job(workspace, jid).progress_done > 2, what="progress")
    with session_scope(workspace.db_url) as s:
        assert queue.request_cancel(s, jid) == "cancel requested"
    wait_for(lambda: job_status(workspace, jid) == "cancelled", timeout=20, what="cancelled")
    job = _job(workspace, jid)
    assert job.exit_code == 0 and "stopped at step" in job.error
    assert job.progress_done < 600


def test_a_failing_step_records_its_error_and_the_log_keeps_the_traceback(workspace, workers):
    [jid] = _enqueue(workspace, SleepSpec(fail=True))
    workers.start()
    wait_for(lambda: job_status(workspace, jid) == "failed", what="failed")
    job = _job(workspace, jid)
    assert job.error.startswith("RuntimeError: this sleep job was asked to fail")
    log = open(job.log_path).read()
    assert "Traceback" in log and "=== job" in log


def test_concurrency_limit_of_one_worker(workspace, workers):
    ids = _enqueue(workspace, SleepSpec(seconds=1.5, steps=3), 4)
    workers.start(max_jobs=2)
    peak = 0
    deadline = time.monotonic() + 60
    while not _all_final(workspace, ids) and time.monotonic() < deadline:
        with session_scope(workspace.db_url) as s:
            peak = max(peak, s.scalar(select(func.count()).select_from(Job)
                                      .where(Job.status.in_(["claimed", "running"]))))
        time.sleep(0.05)
    assert _all_final(workspace, ids)
    assert peak == 2
