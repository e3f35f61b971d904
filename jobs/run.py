"""Child entry point: ``python -m jobs.run <job_id>`` runs one claimed job and records how it ended.

The process lives in its own process group, writes everything to the job's log file (its stdout), and
watches two things from a thread: the job's cancel flag in the db, and its parent (the worker). SIGTERM,
the cancel flag or the worker's death ask the step to stop (``ctx.should_stop()``); a step that does not
stop within the grace period after its worker died is ended here, marked interrupted.

Under Slurm (``jobs.slurm``) the parent is slurmstepd, not a worker, and the job must run on when the worker that
submitted it stops: the batch script sets ``HALA_WORKER_PID=0``, which turns the parent watch off (Slurm itself
ends the job: scancel, time limit).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

from sqlalchemy import select, update

from db.models import Job, utcnow
from db.session import session_scope
from hala_core.context import StopRequested
from hala_core.settings import load_settings
from jobs.queue import finish

HEARTBEAT_S = 2.0
ORPHAN_GRACE_S = float(os.environ.get("HALA_ORPHAN_GRACE_S", "20"))


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _watch(ctx, url: str, job_id: int, parent_pid: int, done: threading.Event) -> None:  # noqa: ANN001
    orphaned_at: float | None = None
    while not done.wait(HEARTBEAT_S / 2):
        try:
            with session_scope(url) as s:
                s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))
                if s.scalar(select(Job.cancel_requested).where(Job.id == job_id)):
                    ctx.request_stop("cancel requested")
        except Exception as e:  # a busy db must not kill the job; the next beat tries again
            print(f"heartbeat failed: {e}", file=sys.stderr, flush=True)
        if parent_pid > 1 and os.getppid() != parent_pid:  # 0: no worker to watch (Slurm)
            if orphaned_at is None:
                orphaned_at = time.monotonic()
                ctx.request_stop(f"worker process {parent_pid} died")
            elif time.monotonic() - orphaned_at > ORPHAN_GRACE_S:
                with session_scope(url) as s:
                    finish(s, job_id, "interrupted",
                           error=f"worker process {parent_pid} died; the job did not stop within "
                                 f"{ORPHAN_GRACE_S:.0f}s and was ended")
                os._exit(75)


def _stop_status(url: str, job_id: int) -> str:
    """A stop the user asked for (the cancel flag) is ``cancelled``; any other stop is ``interrupted``."""
    with session_scope(url) as s:
        return "cancelled" if s.scalar(select(Job.cancel_requested).where(Job.id == job_id)) else "interrupted"


def _launch_distributed(spec, ctx) -> bool:  # noqa: ANN001
    """A train spec with ``num_processes`` > 1 on a GPU machine: run it through ``accelerate launch`` (one
    ``jobs.run_rank`` process per GPU, DDP or FSDP) and wait. False when it runs here as one process.

    On Slurm with ``slurm.nodes`` > 1 (inside the allocation): ``srun`` starts one ``accelerate launch`` per node,
    which starts one rank per GPU; the rendezvous is the allocation's first host."""
    import subprocess

    import torch

    from hala_core.train import distributed_command

    slurm = getattr(spec, "slurm", None)
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if slurm is not None and slurm.nodes > 1:
        if not nodelist:
            raise RuntimeError(f"slurm.nodes is {slurm.nodes} but this process is not inside a Slurm allocation "
                               "(no SLURM_JOB_NODELIST): submit it with executor: slurm")
        from jobs.slurm import main_host

        cmd, env, note = distributed_command(spec, ctx.job_id, torch.cuda.device_count(),
                                             main_host=main_host(nodelist))
    else:
        cmd, env, note = distributed_command(spec, ctx.job_id, torch.cuda.device_count())
    if cmd is None:
        if spec.num_processes > 1:
            ctx.log(note)
        return False
    # resolve the references once here, so the ranks find artifacts instead of racing to register them
    ctx.resolve_model(spec.base_model)
    for d in spec.datasets:
        ctx.resolve_dataset(d.dataset)
    if slurm is not None and slurm.nodes > 1:
        ctx.log(f"launch ({slurm.nodes} Slurm nodes, one launcher each, {spec.distributed}): {note}")
    else:
        ctx.log(f"launch ({spec.num_processes} processes, {spec.distributed}"
                f"{', CUDA_VISIBLE_DEVICES=' + spec.gpus if spec.gpus else ''}): {note}")
    code = subprocess.call(cmd, env={**os.environ, **env, "HALA_LAUNCH_COMMAND": note})
    if code == 75 or (code != 0 and ctx.should_stop()):
        raise StopRequested("the training processes stopped; the last checkpoint is kept")
    if code != 0:
        raise RuntimeError(f"accelerate launch exited with status {code}; see the job log for the ranks' output")
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m jobs.run <job_id>", file=sys.stderr)
        return 2
    job_id = int(argv[0])
    settings = load_settings()
    url = settings.db_url
    # the worker to watch; 0 (set by the Slurm batch script): none — the parent is slurmstepd
    parent_pid = int(os.environ.get("HALA_WORKER_PID") or os.getppid())

    with session_scope(url) as s:
        job = s.get(Job, job_id)
        if job is None:
            print(f"no job {job_id} in {url}", file=sys.stderr)
            return 2
        if job.status != "claimed":
            print(f"job {job_id} is {job.status}, not claimed: refusing to run it", file=sys.stderr)
            return 3
        job.status, job.started_at, job.pid, job.heartbeat_at = "running", utcnow(), os.getpid(), utcnow()
        spec_data, kind, owner, attempt = dict(job.spec), job.kind, job.owner, job.attempt

    from jobs.context import DbRunContext

    ctx = DbRunContext(job_id, settings, owner=owner)
    signal.signal(signal.SIGTERM, lambda *_: ctx.request_stop("SIGTERM received"))
    signal.signal(signal.SIGINT, lambda *_: ctx.request_stop("SIGINT received"))
    done = threading.Event()
    threading.Thread(target=_watch, args=(ctx, url, job_id, parent_pid, done), daemon=True).start()

    print(f"=== job {job_id} ({kind}) attempt {attempt}, pid {os.getpid()}, started {utcnow():%Y-%m-%d %H:%M:%S} UTC",
          flush=True)
    status, error, code = "succeeded", None, 0
    try:
        from hala_core.registry import load_step
        from hala_core.specs import parse_spec

        spec = parse_spec(spec_data)
        if not (kind == "train" and _launch_distributed(spec, ctx)):
            load_step(kind)(spec, ctx)
    except StopRequested as e:
        reason = ctx.stop_reason or "stop requested"
        status = _stop_status(url, job_id)
        error, code = (f"{reason}: {e}" if str(e) else reason), (0 if status == "cancelled" else 75)
    except BaseException as e:  # noqa: BLE001 — everything a step raises ends up in the job row
        traceback.print_exc()
        status, code = "failed", 1
        error = f"{type(e).__name__}: {e}\n" + _tail(traceback.format_exc())
        if ctx.should_stop():
            status = _stop_status(url, job_id)
            error = f"{ctx.stop_reason}; the step ended with {type(e).__name__}: {e}"
    finally:
        done.set()
    with session_scope(url) as s:
        finish(s, job_id, status, error=error, exit_code=code)
    print(f"=== job {job_id} {status}" + (f": {error.splitlines()[0]}" if error else ""), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
