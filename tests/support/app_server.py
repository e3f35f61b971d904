"""A real ``hala workbench`` server (with its worker) on a loopback port, for HTTP and browser tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from db.artifacts import register_artifact
from db.session import dispose_engines, session_scope
from hala_core.demo_models import DEMO_LABEL, DEMO_LICENCE
from hala_core.settings import Settings, load_settings
from workbench.bootstrap import open_workspace

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register_demo_models(settings: Settings, demo_models: dict[str, Path], names: tuple[str, ...] | None = None
                         ) -> None:
    """Copy demo models into the workspace and register them as model artifacts (as the Home tab does)."""
    with session_scope(settings.db_url) as s:
        for name in names or tuple(demo_models):
            dst = settings.models_dir / name
            if not dst.exists():
                shutil.copytree(demo_models[name], dst)
            register_artifact(s, "model", name, str(dst), {"demo": True, "label": DEMO_LABEL,
                                                            "licence": DEMO_LICENCE})


def make_workspace(home: Path, demo_models: dict[str, Path]) -> Settings:
    """A workspace with the session's demo models copied in and registered as artifacts."""
    settings = open_workspace(load_settings(home=home, db_url=f"sqlite:///{home / 'hala.db'}"))
    register_demo_models(settings, demo_models)
    return settings


def add_user(settings: Settings, name: str, role: str, password: str) -> None:
    env = {**os.environ, "HALA_HOME": str(settings.home), "HALA_DB_URL": settings.db_url}
    subprocess.run([sys.executable, "-m", "workbench.cli", "users", "add", name, "--role", role,
                    "--password-stdin"], input=password + "\n", text=True, env=env, check=True,
                   capture_output=True, cwd=ROOT)


class AppServer:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings, self.log_path = settings, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> AppServer:
        env = {**os.environ, "HALA_HOME": str(self.settings.home), "HALA_DB_URL": self.settings.db_url,
               "HALA_ORPHAN_GRACE_S": "5"}
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "workbench", "--port", str(self.port)],
                                     env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"workbench exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"workbench did not answer within {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the UI process only (its worker is a separate process and keeps going)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        stop_workers(self.settings)

    def login(self, name: str, password: str) -> requests.Session:
        s = requests.Session()
        r = s.post(self.url + "/login", data={"username": name, "password": password}, timeout=10)
        r.raise_for_status()
        return s

    def call(self, session: requests.Session, api_name: str, data: list) -> tuple[str, str]:
        """Call a Gradio endpoint over HTTP; returns (event, data) of the final server-sent event."""
        r = session.post(f"{self.url}/gradio_api/call/{api_name}", json={"data": data}, timeout=10)
        r.raise_for_status()
        event_id = r.json()["event_id"]
        text = session.get(f"{self.url}/gradio_api/call/{api_name}/{event_id}", timeout=60).text
        events = [line[len("event: "):] for line in text.splitlines() if line.startswith("event: ")]
        datas = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
        return (events[-1] if events else ""), (datas[-1] if datas else "")


def stop_workers(settings: Settings) -> None:
    """Stop every worker process still registered as alive for this workspace."""
    from sqlalchemy import select

    from db.models import Worker
    from jobs.executors import process_alive

    with session_scope(settings.db_url) as s:
        pids = [w.pid for w in s.scalars(select(Worker).where(Worker.stopped_at.is_(None)))]
    for pid in pids:
        if pid != os.getpid() and process_alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    dispose_engines()
