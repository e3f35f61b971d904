"""Enqueue → step start latency of the job queue (p50/p95), against the cost of spawning a bare Python.

Usage: python benchmarks/queue_latency.py [--jobs 20] [--poll 0.25]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--poll", type=float, default=0.25, help="worker poll interval (the default of hala worker)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hala-bench-"))
    os.environ["HALA_HOME"] = str(home)
    from sqlalchemy import select

    from db.models import Job, Metric
    from db.session import session_scope
    from hala_core.settings import load_settings
    from hala_core.specs import SleepSpec
    from jobs.queue import enqueue
    from workbench.bootstrap import open_workspace

    settings = open_workspace(load_settings())
    env = {**os.environ, "HALA_HOME": str(home), "HALA_DB_URL": settings.db_url}
    worker = subprocess.Popen([sys.executable, "-m", "workbench.cli", "worker", "--poll", str(args.poll)], env=env,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # let the worker register and settle
        latencies: list[float] = []
        for _ in range(args.jobs):
            with session_scope(settings.db_url) as s:
                job_id = enqueue(s, SleepSpec()).id
            while True:
                with session_scope(settings.db_url) as s:
                    job = s.get(Job, job_id)
                    started = s.scalar(select(Metric.time).where(Metric.job_id == job_id, Metric.key == "started"))
                    if started is not None and job.status in ("succeeded", "failed"):
                        latencies.append((started - job.created_at).total_seconds())
                        break
                time.sleep(0.02)
    finally:
        worker.terminate()
        worker.wait()

    bare: list[float] = []
    for _ in range(args.jobs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)

    p50, p95 = pct(latencies, 0.5), pct(latencies, 0.95)
    b50 = statistics.median(bare)
    print(f"enqueue -> step start over {args.jobs} jobs (worker poll {args.poll}s): "
          f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"baseline: spawn a bare `python -c pass`: p50 {b50 * 1000:.0f} ms")
    print(f"ratio p50 / baseline: {p50 / b50:.1f}x")


if __name__ == "__main__":
    main()
