"""The setup the training benchmarks share: thread count, a fresh temporary workspace, the starting load."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def add_thread_argument(ap: Any) -> None:
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads of every process (OMP_NUM_THREADS); 0 = torch's default (all cores)")


def bench_workspace(prefix: str, threads: int) -> tuple[Any, tuple[float, float, float]]:
    """Set the threads (before torch is imported; every process started later inherits them), open a fresh
    workspace in a temporary folder as ``HALA_HOME`` and print the load average. Returns (settings, load)."""
    if threads > 0:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    load = os.getloadavg()
    os.environ["HALA_HOME"] = str(Path(tempfile.mkdtemp(prefix=prefix)))
    os.environ.pop("HALA_DB_URL", None)
    import torch

    from hala_core.settings import load_settings
    from workbench.bootstrap import open_workspace

    settings = open_workspace(load_settings())
    print(f"load average at start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores; "
          f"torch {torch.get_num_threads()} threads")
    return settings, load
