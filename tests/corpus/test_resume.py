"""A translate job killed with SIGKILL half-way and retried: every segment translated exactly once, the first
job's committed work kept, the retry resumes; a resume with other generation settings is refused up front."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import func, select

from db.models import Segment, Translation, TranslationRun
from db.session import read_scope, session_scope
from jobs import queue
from jobs.precheck import precheck
from tests.corpus.conftest import NTREX, job_row, metrics, needs_data, snapshot
from tests.support.workspace import job_status, wait_for
from workbench import corpus_ops

pytestmark = [needs_data, pytest.mark.slow]

N_ROWS = 200


def _spec(**changes) -> dict:
    spec = {"kind": "translate", "corpus": "ntrex200", "model": "demo-lfm2-a", "name": "resumable",
            "max_new_tokens": 12, "batch_size": 8, "commit_every": 8, "temperature": 0.8, "device": "cpu",
            "dtype": "float32"}
    return {**spec, **changes}


def _done(settings, run_name: str = "resumable") -> int:
    with read_scope(settings.db_url) as s:
        run_id = s.scalar(select(TranslationRun.id).where(TranslationRun.name == run_name))
        if run_id is None:
            return 0
        return s.scalar(select(func.count(Translation.id)).where(Translation.run_id == run_id)) or 0


def test_kill_9_half_way_then_retry_translates_every_segment_exactly_once(demo_workspace, workers):
    settings = demo_workspace
    stats = corpus_ops.import_file(settings, str(NTREX), "ntrex200", limit=N_ROWS)
    n = stats["segments"]
    assert n >= N_ROWS
    with read_scope(settings.db_url) as s:
        spec = precheck(s, settings, _spec())
    with session_scope(settings.db_url) as s:
        first = queue.enqueue(s, spec).id
    workers.start()
    # wait until between a quarter and three quarters of the segments are committed, then kill -9 the job process
    done = wait_for(lambda: (d := _done(settings)) >= n // 4 and d, timeout=120, every=0.02,
                    what="a quarter of the segments")
    assert done <= 3 * n // 4, f"the job ran too fast to be killed half-way ({done}/{n} done at first look)"
    pid = job_row(settings, first).pid
    assert pid and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: job_status(settings, first) in ("failed", "interrupted"), timeout=30, what="the kill noticed")
    killed = job_row(settings, first)
    assert "SIGKILL" in (killed.error or "")
    time.sleep(0.3)
    kept = _done(settings)
    assert n // 4 <= kept < n, f"{kept}/{n} segments at the kill"
    with read_scope(settings.db_url) as s:
        run = s.scalar(select(TranslationRun).where(TranslationRun.name == "resumable"))
        assert run.status in ("running", "partial")
        first_rows = {sid for sid, in s.execute(select(Translation.segment_id).where(
            Translation.run_id == run.id, Translation.job_id == first))}
    assert len(first_rows) == kept

    with session_scope(settings.db_url) as s:
        second = queue.retry(s, first).id
    wait_for(lambda: job_status(settings, second) in ("succeeded", "failed", "cancelled", "interrupted"),
             timeout=180, what="the retry to finish")
    job2 = job_row(settings, second)
    assert job2.status == "succeeded", job2.error
    assert job2.parent_id == first

    with read_scope(settings.db_url) as s:
        run = s.scalar(select(TranslationRun).where(TranslationRun.name == "resumable"))
        rows = s.execute(select(Translation.segment_id, Translation.job_id).where(Translation.run_id == run.id)).all()
        corpus_segments = set(s.scalars(select(Segment.id).where(Segment.corpus_id == run.corpus_id)))
        assert run.status == "done" and run.job_id == second
    seg_ids = [sid for sid, _ in rows]
    assert len(rows) == n and len(set(seg_ids)) == n, "every segment exactly once"
    assert set(seg_ids) == corpus_segments
    by_job = {j: {sid for sid, jj in rows if jj == j} for j in (first, second)}
    assert by_job[first] == first_rows, "the first job's rows were kept as they were"
    assert len(by_job[first]) + len(by_job[second]) == n
    # the killed job never reached its end-of-job metric (it is written once, after the loop): its committed rows
    # are what it contributed; the retry's metric counts only what the retry added
    new_second = metrics(settings, second)["new_segments"]
    assert new_second == [float(n - kept)]
    assert kept + sum(new_second) == n
    assert sum(metrics(settings, first).get("new_segments", [])) in (0.0, float(kept))
    assert job2.result["new_segments"] == n - kept and job2.result["done"] == n
    log = open(job2.log_path, encoding="utf-8").read()
    assert "resuming translation 'resumable'" in log and f"{kept}/{n} segments already translated" in log

    # changing how text is generated under the same translation name is refused before anything is queued
    before = snapshot(settings)
    for change, word in (({"temperature": 0.2}, "temperature"), ({"max_new_tokens": 16}, "max_new_tokens"),
                         ({"repetition_penalty": 1.3}, "repetition_penalty")):
        with read_scope(settings.db_url) as s, pytest.raises(ValueError) as err:
            precheck(s, settings, _spec(**change))
        msg = str(err.value)
        assert "already has a translation 'resumable'" in msg and word in msg and "another translation name" in msg
    assert snapshot(settings) == before
    with read_scope(settings.db_url) as s:  # the same settings (a plain resume) and another name are fine
        precheck(s, settings, _spec())
        precheck(s, settings, _spec(temperature=0.2, name="resumable-t02"))
