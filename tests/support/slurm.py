"""The single-node Slurm cluster the Slurm tests run against (``scripts/slurm-up``; CI starts it as root).

When a cluster already answers it is used; else, as root (or with ``HALA_TEST_SLURM=1``), ``scripts/slurm-up``
installs and starts it, and a failure there FAILS the test with its output; a non-root run without a cluster
skips with the reason."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and any(s.strip("*~#!%$@^-") in ("idle", "mixed", "allocated")
                                     for s in p.stdout.split())


@functools.cache
def _slurm_up() -> tuple[int, str, str]:
    p = subprocess.run([str(ROOT / "scripts" / "slurm-up")], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def slurm_partition() -> str:
    """The partition of a running single-node cluster, brought up first if needed (see the module docstring)."""
    wanted = os.environ.get("HALA_TEST_SLURM") == "1"
    if not (cluster_up() or wanted or os.geteuid() == 0):
        pytest.skip("no Slurm cluster answers here and this is not root: run scripts/slurm-up as root, or set "
                    "HALA_TEST_SLURM=1")
    code, out, err = _slurm_up()
    if code != 0 or not out.strip():
        pytest.fail(f"scripts/slurm-up could not bring the Slurm cluster up (exit {code}):\n"
                    f"{err[-3000:]}{out[-1000:]}", pytrace=False)
    return out.strip().splitlines()[-1]
