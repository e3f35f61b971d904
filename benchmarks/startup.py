"""Time from starting `hala workbench` to its first HTTP 200, against a bare one-component Gradio app.

Usage: python benchmarks/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
BARE_APP = """
import sys, threading, gradio as gr
with gr.Blocks() as demo:
    gr.Markdown("hello")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), prevent_thread_lock=True, quiet=True)
threading.Event().wait()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_200(cmd: list[str], port: int, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    hala, bare = [], []
    for i in range(args.runs):
        home = Path(tempfile.mkdtemp(prefix="hala-startup-"))
        env = {**os.environ, "HALA_HOME": str(home)}
        env.pop("HALA_DB_URL", None)
        port = free_port()
        hala.append(time_to_200([sys.executable, "-m", "workbench.cli", "workbench", "--port", str(port)], port, env))
        port = free_port()
        bare.append(time_to_200([sys.executable, "-c", BARE_APP, str(port)], port, dict(os.environ)))
        print(f"run {i + 1}: hala workbench {hala[-1]:.2f}s (fresh workspace), bare gradio {bare[-1]:.2f}s")
    h, b = statistics.median(hala), statistics.median(bare)
    print(f"hala workbench start -> first HTTP 200: median {h:.2f}s over {args.runs} runs (empty workspace, "
          f"schema created on the way)")
    print(f"baseline: one-component gr.Blocks app: median {b:.2f}s")
    print(f"ratio: {h / b:.2f}x")


if __name__ == "__main__":
    main()
