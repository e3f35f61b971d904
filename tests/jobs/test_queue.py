"""Queue semantics on a real SQLite file and a real PostgreSQL database: enqueue validation, atomic claims, cancel,
retry, clone."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from db.models import Job, Worker
from db.session import session_scope
from hala_core.specs import SleepSpec
from jobs import queue


def _register_worker(settings, wid: str) -> None:
    with session_scope(settings.db_url) as s:
        s.add(Worker(id=wid, host="h", pid=1))


def test_enqueue_refuses_bad_specs_with_what_is_allowed(workspace):
    with session_scope(workspace.db_url) as s:
        with pytest.raises(ValueError, match="valid kinds: .*merge.*sleep"):
            queue.enqueue(s, {"kind": "teleport"})
        with pytest.raises(ValueError, match=r"t: 1.5 is outside \[0, 1\]"):
            queue.enqueue(s, {"kind": "merge", "base_model": "a", "model": "b", "t": 1.5, "output": "m"})
        with pytest.raises(ValueError, match="output name .* is not allowed"):
            queue.enqueue(s, {"kind": "merge", "base_model": "a", "model": "b", "output": "../etc"})
        with pytest.raises(ValueError, match="Field required|base_model"):
            queue.enqueue(s, {"kind": "merge", "model": "b", "output": "m"})
        assert s.scalars(select(Job)).all() == []


def test_threads_racing_to_claim_never_share_a_job(workspace):
    n_jobs, n_threads = 120, 6
    with session_scope(workspace.db_url) as s:
        for _ in range(n_jobs):
            queue.enqueue(s, SleepSpec())
    for i in range(n_threads):
        _register_worker(workspace, f"w{i}")
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def grab(wid: str) -> None:
        while True:
            with session_scope(workspace.db_url) as s:
                job_id = queue.claim_next(s, wid, "h")
            if job_id is None:
                return
            with lock:
                claimed.append((wid, job_id))

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [j for _, j in claimed]
    assert len(ids) == n_jobs and len(set(ids)) == n_jobs
    with session_scope(workspace.db_url) as s:
        assert {j.attempt for j in s.scalars(select(Job))} == {1}


def test_global_limit_caps_active_jobs(workspace):
    _register_worker(workspace, "w")
    with session_scope(workspace.db_url) as s:
        for _ in range(5):
            queue.enqueue(s, SleepSpec())
    with session_scope(workspace.db_url) as s:
        got = [queue.claim_next(s, "w", "h", global_limit=2) for _ in range(4)]
    assert got[:2] != [None, None] and got[2:] == [None, None]


def test_cancel_retry_and_clone(workspace):
    with session_scope(workspace.db_url) as s:
        a = queue.enqueue(s, SleepSpec(seconds=1), owner="rana").id
    with session_scope(workspace.db_url) as s:
        assert queue.request_cancel(s, a) == "cancelled"
    with session_scope(workspace.db_url) as s:
        assert s.get(Job, a).status == "cancelled"
        with pytest.raises(ValueError, match="only queued or running jobs can be cancelled"):
            queue.request_cancel(s, a)
        r = queue.retry(s, a)
        assert (r.parent_id, r.spec, r.owner, r.status) == (a, s.get(Job, a).spec, "rana", "queued")
        c = queue.clone(s, a, {"seconds": 2.5, "steps": 5}, owner="omar")
        assert c.spec["seconds"] == 2.5 and c.spec["steps"] == 5 and c.parent_id == a and c.owner == "omar"
        with pytest.raises(ValueError, match="retry is for finished jobs"):
            queue.retry(s, r.id)
        with pytest.raises(ValueError, match="a clone keeps the kind"):
            queue.clone(s, a, "kind: merge\nbase_model: a\nmodel: b\noutput: m\n")
        with pytest.raises(ValueError, match="seconds"):
            queue.clone(s, a, {"seconds": -1})


def test_threads_racing_under_a_global_limit_never_exceed_it(workspace):
    """Eight claimers at once with ``global_limit=2``: never more than two active jobs (on PostgreSQL the count is
    checked under an advisory lock; READ COMMITTED alone lets two claimers both see one slot free)."""
    n_threads = 8
    for i in range(n_threads):
        _register_worker(workspace, f"w{i}")
    for _ in range(5):
        with session_scope(workspace.db_url) as s:
            s.query(Job).delete()
            for _ in range(20):
                queue.enqueue(s, SleepSpec())
        start = threading.Barrier(n_threads)
        errors: list[BaseException] = []

        def grab(wid: str, start: threading.Barrier = start, errors: list[BaseException] = errors) -> None:
            try:
                start.wait()
                with session_scope(workspace.db_url) as s:
                    queue.claim_next(s, wid, "h", global_limit=2)
            except BaseException as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        with session_scope(workspace.db_url) as s:
            assert len(s.scalars(select(Job).where(Job.status == "claimed")).all()) == 2
