"""One rank of a multi-GPU training job: ``accelerate launch -m jobs.run_rank <job_id>`` (started by jobs.run).

The parent ``jobs.run`` owns the job row (claim, final status); each rank only runs the step. Rank 0 reports
curves, checkpoints and the result (the step checks ``is_world_process_zero``); every rank watches the cancel
flag, and the step agrees on the stop step across ranks. Exit status: 0 done, 75 stopped, 1 failed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

from sqlalchemy import select

from db.models import Job
from db.session import read_scope
from hala_core.context import StopRequested
from hala_core.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: accelerate launch -m jobs.run_rank <job_id>", file=sys.stderr)
        return 2
    job_id = int(argv[0])
    settings = load_settings()
    with read_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or job.status != "running":
            print(f"job {job_id} is not running; a rank runs only inside a running job", file=sys.stderr)
            return 2
        spec_data, kind, owner = dict(job.spec), job.kind, job.owner

    from jobs.context import DbRunContext

    ctx = DbRunContext(job_id, settings, owner=owner)
    signal.signal(signal.SIGTERM, lambda *_: ctx.request_stop("SIGTERM received"))
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            try:
                with read_scope(settings.db_url) as s:
                    if s.scalar(select(Job.cancel_requested).where(Job.id == job_id)):
                        ctx.request_stop("cancel requested")
            except Exception as e:  # noqa: BLE001 — a busy db must not kill the rank
                print(f"rank {os.environ.get('RANK')}: cancel check failed: {e}", file=sys.stderr, flush=True)

    threading.Thread(target=watch, daemon=True).start()
    try:
        from hala_core.registry import load_step
        from hala_core.specs import parse_spec

        load_step(kind)(parse_spec(spec_data), ctx)
        return 0
    except StopRequested:
        return 75
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1
    finally:
        done.set()


if __name__ == "__main__":
    sys.exit(main())
