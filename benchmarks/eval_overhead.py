"""Wall time of an eval job (queue → worker → `python -m jobs.run`) against a direct `lm_eval.simple_evaluate`
call on the same model and task, each in a fresh process, alternating. Goal: ratio ≤ 1.05.

Usage: python benchmarks/eval_overhead.py [--limit 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIRECT = """
import sys, lm_eval
from lm_eval.tasks import TaskManager
model, folder, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
tm = TaskManager(include_path=folder, include_defaults=False)
res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32", tasks=["exams_ar"],
                              task_manager=tm, limit=limit, batch_size=8, device="cpu", log_samples=True)
print(res["results"]["exams_ar"]["acc,none"])
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hala-eval-bench-"))
    os.environ["HALA_HOME"] = str(home)
    from db.models import Job
    from db.session import session_scope
    from hala_core.benchmarks import ensure_builtin
    from hala_core.demo_models import build_demo_model
    from hala_core.settings import load_settings
    from hala_core.specs import EvalSpec
    from jobs.queue import enqueue
    from workbench.bootstrap import open_workspace

    settings = open_workspace(load_settings())
    model = build_demo_model(settings.models_dir / "bench-model", seed=0)
    folder = ensure_builtin("exams_ar", settings.home, settings.data_dir)
    if folder is None:
        sys.exit("the sample data folder (../shared/data with exams_ar) is needed")
    env = {**os.environ, "HALA_HOME": str(home), "HALA_DB_URL": settings.db_url}
    worker = subprocess.Popen([sys.executable, "-m", "workbench.cli", "worker", "--poll", "0.05"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    direct, job = [], []
    try:
        time.sleep(3)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", DIRECT, str(model), str(folder), str(args.limit)],
                                 capture_output=True, text=True, check=True)
            direct.append(time.perf_counter() - t0)
            acc_direct = float(out.stdout.strip().splitlines()[-1])

            t0 = time.perf_counter()
            with session_scope(settings.db_url) as s:
                jid = enqueue(s, EvalSpec(models=(str(model),), benchmarks=("exams_ar",), limit=args.limit)).id
            while True:
                with session_scope(settings.db_url) as s:
                    j = s.get(Job, jid)
                    if j.status in ("succeeded", "failed", "cancelled", "interrupted"):
                        break
                time.sleep(0.05)
            job.append(time.perf_counter() - t0)
            if j.status != "succeeded":
                sys.exit(f"eval job {jid} {j.status}: {j.error}")
            acc_job = j.result["models"][0]["scores"]["exams_ar"]
            print(f"direct {direct[-1]:.2f}s (acc {acc_direct:.3f})   job {job[-1]:.2f}s enqueue→finished "
                  f"(headline {json.dumps(acc_job)})")
    finally:
        worker.terminate()
        worker.wait()
    d, j = statistics.median(direct), statistics.median(job)
    print(f"exams_ar, limit {args.limit}, demo model, {args.runs} runs each, fresh processes")
    print(f"direct lm_eval.simple_evaluate (process wall): median {d:.2f}s")
    print(f"eval job (enqueue → finished, incl. queue wait, subprocess start, db writes, report): median {j:.2f}s")
    print(f"ratio job / direct: {j / d:.3f}")


if __name__ == "__main__":
    main()
