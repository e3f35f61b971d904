"""``hala workbench``: the Gradio server, plus a worker process unless one is already alive.

The worker is a separate, detached process: restarting the UI does not stop running jobs, and a
new UI re-attaches to them (and to the worker) from the database.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from db.session import read_scope, session_scope
from db.users import count_users
from hala_core.settings import Settings
from jobs.worker import live_worker
from workbench.auth import make_auth

log = logging.getLogger("hala.server")
AUTH_POLL_S = 2.0


def start_worker(settings: Settings, max_jobs: int) -> subprocess.Popen[bytes] | None:
    existing = live_worker(settings)
    if existing is not None:
        log.info("using the running worker %s (pid %d)", existing.id, existing.pid)
        return None
    env = {**os.environ, "HALA_HOME": str(settings.home), "HALA_DB_URL": settings.db_url}
    with open(settings.home / "worker.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "worker", "--max-jobs", str(max_jobs)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    log.info("worker started, pid %d (log: %s)", proc.pid, settings.home / "worker.log")
    return proc


class LoginSwitch:
    """Turns Gradio's login on as soon as the first account exists (and off if the last one goes)."""

    def __init__(self, settings: Settings, app) -> None:  # noqa: ANN001
        self.settings, self.app, self.check = settings, app, make_auth(settings)
        self.stop = threading.Event()

    def sync(self) -> None:
        with read_scope(self.settings.db_url) as s:
            want = count_users(s) > 0
        self.app.auth = self.check if want else None

    def run(self) -> None:
        while not self.stop.wait(AUTH_POLL_S):
            try:
                self.sync()
            except Exception as e:  # noqa: BLE001
                log.warning("login switch: %s", e)


def warm_up() -> None:
    """Import the heavy libraries the first merge preview needs, in the background after the server is up."""
    try:
        import mergekit.config  # noqa: F401
        import torch  # noqa: F401
    except Exception as e:  # noqa: BLE001
        log.warning("warm-up: %s", e)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 7860, worker: bool = True,
          max_jobs: int = 1, share: bool = False) -> int:
    from workbench.app import CSS, HEAD, build_app

    demo = build_app(settings)
    with session_scope(settings.db_url) as s:
        has_users = count_users(s) > 0
    demo.queue(default_concurrency_limit=8)
    try:
        demo.launch(server_name=host, server_port=port, share=share,
                    auth=make_auth(settings) if has_users else None,
                    auth_message="Hala Workbench — sign in with your workbench account.",
                    prevent_thread_lock=True, show_error=True, quiet=True, css=CSS, head=HEAD,
                    allowed_paths=[str(settings.home)])
    except OSError as e:
        raise ValueError(f"cannot serve on {host}:{port}: {e}. Is another workbench running? "
                         "Choose another port with --port or HALA_PORT.") from None
    worker_proc = start_worker(settings, max_jobs) if worker else None
    threading.Thread(target=warm_up, daemon=True).start()
    switch = LoginSwitch(settings, demo.server_app)
    threading.Thread(target=switch.run, daemon=True).start()
    print(f"Hala Workbench on http://{host}:{port}  (workspace {settings.home}, db {settings.db_url})", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        done.wait()
    finally:
        switch.stop.set()
        demo.close()
        if worker_proc is not None and worker_proc.poll() is None:
            worker_proc.terminate()
            try:
                worker_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker_proc.kill()
    return 0
