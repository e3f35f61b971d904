"""Real Slurm, real ``hala worker`` processes, real job processes, a real SQLite file: jobs with ``executor: slurm``
go through sbatch and come back with their states, results, errors, cancels, time limits and adoption.

One workspace and one worker serve the module. The time-limit job is queued first (Slurm's limits have minute
granularity and slurmctld checks them about every 30 s: it takes 60–90 s) and checked last, so that it runs while
the other tests do.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from sqlalchemy import select

from db.models import Job, Worker
from db.session import session_scope
from hala_core.specs import SleepSpec
from jobs import queue
from tests.support.workspace import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _enqueue(settings, **spec) -> int:
    with session_scope(settings.db_url) as s:
        return queue.enqueue(s, SleepSpec(executor="slurm", **spec)).id


def _job(settings, job_id: int) -> Job:
    with session_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def _final(settings, job_id: int) -> Job | None:
    job = _job(settings, job_id)
    return job if job.status in ("succeeded", "failed", "cancelled", "interrupted") else None


def _slurm_id(job: Job) -> str:
    assert job.executor_handle and job.executor_handle.startswith("slurm:"), job.executor_handle
    return job.executor_handle.split(":", 1)[1]


@pytest.fixture(scope="module", autouse=True)
def time_limit_job(slurm_ws, slurm_workers) -> int:
    """Queued before every other test of the module, and the worker started: it runs while they do."""
    job_id = _enqueue(slurm_ws, seconds=600, steps=6000, slurm={"time_limit": "1"})
    slurm_workers.start()
    wait_for(lambda: _job(slurm_ws, job_id).status == "running", timeout=30, what="the time-limit job to run")
    return job_id


def test_a_sleep_job_goes_pending_running_succeeded_and_its_log_has_its_output(slurm_ws):
    job_id = _enqueue(slurm_ws, seconds=1, steps=4, slurm={"extra_sbatch": ["--hold"]})
    held = wait_for(lambda: (j := _job(slurm_ws, job_id)).executor_state == "PENDING" and j, what="PENDING")
    assert held.status == "claimed" and held.pid is None  # queued on Slurm, no process yet
    slurm_id = _slurm_id(held)
    time.sleep(0.6)  # several worker turns: it stays claimed/PENDING while Slurm holds it
    assert (_job(slurm_ws, job_id).status, _job(slurm_ws, job_id).executor_state) == ("claimed", "PENDING")
    script = (slurm_ws.job_dir(job_id) / "slurm.sbatch").read_text()
    assert f"#SBATCH --job-name=hala-{job_id}-sleep" in script and "HALA_WORKER_PID=0" in script

    released = time.monotonic()
    subprocess.run(["scontrol", "release", slurm_id], check=True, capture_output=True)
    running = wait_for(lambda: (j := _job(slurm_ws, job_id)).status == "running" and j, what="running")
    latency = time.monotonic() - released
    wait_for(lambda: _job(slurm_ws, job_id).executor_state == "RUNNING", what="RUNNING recorded")
    assert running.pid and running.started_at
    job = wait_for(lambda: _final(slurm_ws, job_id), timeout=30, what="the job to end")
    assert job.status == "succeeded", job.error  # recorded by jobs.run itself…
    job = wait_for(lambda: (j := _job(slurm_ws, job_id)).executor_state == "COMPLETED" and j,
                   what="…then Slurm's final state, by the worker")
    assert job.exit_code == 0 and job.error is None
    assert job.result == {"steps": 4, "seconds": 1.0}
    log = open(job.log_path).read()
    assert f"=== slurm job {slurm_id} on " in log
    assert f"=== job {job_id} (sleep)" in log and "progress 4/4" in log and f"=== job {job_id} succeeded" in log
    print(f"release → running (jobs.run started on the node): {latency:.2f}s")


def test_a_failing_step_fails_the_job_with_the_steps_error(slurm_ws):
    job_id = _enqueue(slurm_ws, fail=True)
    job = wait_for(lambda: _final(slurm_ws, job_id), timeout=30, what="the job to end")
    assert job.status == "failed"
    assert job.error.startswith("RuntimeError: this sleep job was asked to fail")
    job = wait_for(lambda: (j := _job(slurm_ws, job_id)).executor_state == "FAILED" and j, what="FAILED")
    assert job.exit_code == 1 and job.error.startswith("RuntimeError: this sleep job was asked to fail")
    assert "Traceback" in open(job.log_path).read()


def test_cancel_a_running_job_stops_it_within_seconds(slurm_ws):
    job_id = _enqueue(slurm_ws, seconds=60, steps=600)
    wait_for(lambda: _job(slurm_ws, job_id).progress_done > 2, timeout=30, what="progress")
    asked = time.monotonic()
    with session_scope(slurm_ws.db_url) as s:
        assert queue.request_cancel(s, job_id) == "cancel requested"
    job = wait_for(lambda: _final(slurm_ws, job_id), timeout=15, what="the cancel")
    took = time.monotonic() - asked
    assert job.status == "cancelled" and "stopped at step" in job.error, job.error
    assert job.progress_done < 600 and took < 10
    wait_for(lambda: _job(slurm_ws, job_id).executor_state == "COMPLETED", what="Slurm's final state")


def test_cancel_a_job_slurm_still_holds_pending(slurm_ws):
    job_id = _enqueue(slurm_ws, seconds=1, slurm={"extra_sbatch": ["--hold"]})
    wait_for(lambda: _job(slurm_ws, job_id).executor_state == "PENDING", what="PENDING")
    with session_scope(slurm_ws.db_url) as s:
        queue.request_cancel(s, job_id)
    job = wait_for(lambda: _final(slurm_ws, job_id), timeout=15, what="the cancel")
    assert job.status == "cancelled" and job.executor_state == "CANCELLED"
    assert "before it started" in job.error and job.started_at is None


def test_a_bad_partition_fails_the_job_with_what_slurm_said(slurm_ws):
    job_id = _enqueue(slurm_ws, slurm={"partition": "nope"})
    job = wait_for(lambda: _final(slurm_ws, job_id), timeout=15, what="the job to fail")
    assert job.status == "failed" and job.executor_handle is None
    assert job.error.startswith("could not start the job on slurm: sbatch refused the job: ")
    assert "invalid partition specified: nope" in job.error


def test_workers_that_stop_or_die_leave_the_slurm_job_running_and_the_next_one_adopts_it(slurm_ws, slurm_workers):
    job_id = _enqueue(slurm_ws, seconds=8, steps=80)
    wait_for(lambda: _job(slurm_ws, job_id).status == "running", timeout=30, what="running")
    first = next(p for p in slurm_workers.procs if p.poll() is None)
    first.send_signal(signal.SIGTERM)  # a worker shutting down does not cancel its Slurm jobs…
    first.wait(timeout=30)
    job = _job(slurm_ws, job_id)
    assert job.status == "running" and not job.cancel_requested
    second = slurm_workers.start()  # …the next one adopts them
    wait_for(lambda: _owner_pid(slurm_ws, job_id) == second.pid, timeout=15, what="adoption by the 2nd worker")
    second.send_signal(signal.SIGKILL)  # a killed worker: the same
    second.wait()
    time.sleep(1)
    assert _job(slurm_ws, job_id).status == "running"
    third = slurm_workers.start()
    wait_for(lambda: _owner_pid(slurm_ws, job_id) == third.pid, timeout=15, what="adoption by the 3rd worker")
    job = wait_for(lambda: _final(slurm_ws, job_id), timeout=30, what="the job to end")
    assert job.status == "succeeded", job.error
    assert job.progress_done == 80
    wait_for(lambda: _job(slurm_ws, job_id).executor_state == "COMPLETED", what="COMPLETED")


def _owner_pid(settings, job_id: int) -> int | None:
    with session_scope(settings.db_url) as s:
        wid = s.scalar(select(Job.worker_id).where(Job.id == job_id))
        return s.scalar(select(Worker.pid).where(Worker.id == wid)) if wid else None


def test_zz_a_job_over_its_time_limit_fails_with_slurms_reason(slurm_ws, time_limit_job):
    """Runs last: by now the job queued first has been running for a while (also adopted twice above)."""
    # jobs.run sees Slurm's SIGTERM and records "interrupted"; the worker then records Slurm's reason over it
    job = wait_for(lambda: (j := _job(slurm_ws, time_limit_job)).executor_state == "TIMEOUT" and j, timeout=150,
                   every=0.5, what="the time limit")
    assert job.status == "failed", job.error
    assert job.error == "Slurm stopped the job at its time limit (00:01:00, state TIMEOUT)"
    assert job.executor_state == "TIMEOUT"
    log = open(job.log_path).read()
    assert "DUE TO TIME LIMIT" in log and "SIGTERM received" in log  # the job saw it and stopped itself
