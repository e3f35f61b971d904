"""hala_core.vllm_server without vLLM: SSE parsing, the request body, the unavailable path, process-group
handling with a stand-in server, the pool with fake servers and the client against a stub SSE server."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hala_core import vllm_server as vs
from hala_core.chat import NO_TEMPLATE_NOTICE, plain_prompt
from hala_core.engine import GenerationSettings
from hala_core.vllm_server import (
    OpenAIChatClient,
    VllmServer,
    VllmServerError,
    VllmServerPool,
    check_model_for_cpu,
    iter_sse_data,
    parse_chunk,
    request_body,
    vllm_server_available,
)

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "مرحبا"}]

# ------------------------------------------------------------------------------------------ parsing


def test_sse_data_payloads_up_to_done():
    lines = [b'data: {"a": 1}', b"", b": keep-alive", b"", "data:{\"b\": 2}\r", "", b"event: x", b"data: one",
             b"data: two", b"", b"data: [DONE]", b"", b'data: {"after": "done"}', b""]
    assert list(iter_sse_data(lines)) == ['{"a": 1}', '{"b": 2}', "one\ntwo"]
    assert list(iter_sse_data(["data: last without a blank line"])) == ["last without a blank line"]


def test_parse_chat_and_completion_chunks():
    chat = {"choices": [{"index": 0, "delta": {"content": "مر"}, "finish_reason": None}]}
    assert parse_chunk(json.dumps(chat)) == {"text": "مر", "finish_reason": None, "usage": None, "error": None}
    role_only = {"choices": [{"delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    assert parse_chunk(json.dumps(role_only))["text"] == ""
    done = {"choices": [{"delta": {}, "finish_reason": "length"}]}
    assert parse_chunk(json.dumps(done))["finish_reason"] == "length"
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    assert parse_chunk(json.dumps(usage))["usage"]["completion_tokens"] == 5
    completion = {"choices": [{"text": " hi", "finish_reason": "stop"}]}
    assert parse_chunk(json.dumps(completion))["text"] == " hi"
    error = {"error": {"message": "EngineCore encountered an issue", "code": 500}}
    assert parse_chunk(json.dumps(error))["error"] == "EngineCore encountered an issue"
    assert parse_chunk("not json")["error"].startswith("unreadable chunk")


def test_request_body_maps_the_generation_settings():
    assert request_body(GenerationSettings(max_new_tokens=7)) == {
        "max_tokens": 7, "repetition_penalty": 1.0, "temperature": 0.0, "top_p": 1.0}
    sampled = request_body(GenerationSettings(temperature=0.7, top_p=0.9, seed=5, repetition_penalty=1.1),
                           stop=["\nUser:"])
    assert sampled == {"max_tokens": 64, "repetition_penalty": 1.1, "temperature": 0.7, "top_p": 0.9, "seed": 5,
                       "stop": ["\nUser:"]}


# ------------------------------------------------------------------------------------------ availability


def test_unavailable_vllm_gives_the_reason_and_start_refuses(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    monkeypatch.delenv("HALA_VLLM_PYTHON", raising=False)
    ok, reason = vllm_server_available()
    assert not ok and "vLLM is not installed in this environment" in reason and "HALA_VLLM_PYTHON" in reason
    model = tmp_path / "m"
    model.mkdir()
    with pytest.raises(VllmServerError, match="cannot start a vLLM server: vLLM is not installed"):
        VllmServer(model, log_dir=tmp_path).start()
    assert vllm_server_available(str(tmp_path / "no-such-python")) == (
        False, f"HALA_VLLM_PYTHON points to {tmp_path / 'no-such-python'}, which does not exist")


def test_cpu_backend_head_sizes_are_checked_before_starting(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    with pytest.raises(ValueError, match="attention heads of size 16 .*hidden_size 128 or more"):
        check_model_for_cpu(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 128, "num_attention_heads": 4}))
    check_model_for_cpu(tmp_path)


def test_command_line_and_environment_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(vs, "gpu_present", lambda: False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")  # the user's own setting wins
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    srv = VllmServer(tmp_path / "demo-a", dtype="float32", max_model_len=512, port=8123, log_dir=tmp_path)
    cmd = srv.command()
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    for flag in ("--host 127.0.0.1", "--port 8123", "--served-model-name demo-a", "--dtype float32",
                 "--max-model-len 512", "--tensor-parallel-size 1", "--enforce-eager"):
        assert flag in joined
    assert "--gpu-memory-utilization" not in joined
    env = srv.environment()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_OMP_THREADS_BIND"].startswith("0")
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "cache")
    with pytest.raises(ValueError, match="dtype 'int3'"):
        VllmServer(tmp_path, dtype="int3")


# ------------------------------------------------------------------------------------------ process handling


def _fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in interpreter: answers the availability check, runs ``body`` for ``-m vllm…``."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then exit 0; fi\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_a_server_that_exits_fails_fast_with_its_log_tail(tmp_path):
    python = _fake_python(tmp_path, "echo 'ValueError: no such model architecture'; exit 3")
    (tmp_path / "m").mkdir()
    srv = VllmServer(tmp_path / "m", name="broken", python=python, log_dir=tmp_path / "logs")
    start = time.monotonic()
    with pytest.raises(VllmServerError) as err:
        srv.start().wait_ready(timeout=30, poll_s=0.1)
    assert time.monotonic() - start < 10
    assert "the vLLM server for broken exited with code 3 before it was ready" in str(err.value)
    assert "ValueError: no such model architecture" in str(err.value)
    srv.close()


def test_close_ends_the_whole_process_group(tmp_path):
    python = _fake_python(tmp_path, "sleep 300 & echo child $!; trap '' TERM; sleep 300")
    (tmp_path / "m").mkdir()
    srv = VllmServer(tmp_path / "m", python=python, log_dir=tmp_path / "logs", grace_s=1)
    progress = []
    with pytest.raises(VllmServerError, match="did not become ready within 1 s and was stopped"):
        srv.start().wait_ready(timeout=1, poll_s=0.2, on_progress=lambda s, m: progress.append(m))
    assert progress and progress[0].startswith("starting vLLM server for m…")
    assert not srv.alive()
    child = int(next(line.split()[1] for line in srv.log_tail().splitlines() if line.startswith("child")))
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_missing_model_folder_is_refused_at_once(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        VllmServer(tmp_path / "nope", python=_fake_python(tmp_path, "exit 0"), log_dir=tmp_path).start()


# ------------------------------------------------------------------------------------------ the pool


class FakeServer:
    started: list[FakeServer] = []

    def __init__(self, model, name=None, dtype="auto", log_dir=None, fail=False, **options):  # noqa: ANN001
        self.model, self.name, self.options = str(model), name or Path(str(model)).name, options
        self.active, self.last_used, self.port, self.log_path = 0, 0.0, 1, None
        self.running = False
        self.closed = False
        self.fail = fail

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:1"

    def start(self):  # noqa: ANN201
        FakeServer.started.append(self)
        self.running = True
        return self

    def wait_ready(self, timeout, on_progress=None):  # noqa: ANN001, ANN201
        if on_progress:
            on_progress(0.0, f"starting vLLM server for {self.name}… 0 s")
        if self.fail:
            raise VllmServerError("the vLLM server for x exited with code 1 before it was ready; log:\nboom")
        return self

    def alive(self) -> bool:
        return self.running

    def close(self) -> None:
        self.running, self.closed = False, True


def test_pool_reuses_evicts_idle_refuses_when_busy_and_closes_all():
    FakeServer.started = []
    pool = VllmServerPool(max_servers=1, factory=FakeServer)
    a = pool.get("/m/a", "float32", max_model_len=512)
    assert pool.get("/m/a", "float32", max_model_len=512) is a and len(FakeServer.started) == 1
    b = pool.get("/m/a", "bfloat16", max_model_len=512)  # another key: a (idle) makes room
    assert b is not a and a.closed and [s["name"] for s in pool.running()] == ["a"]
    b.active = 1
    with pytest.raises(ValueError, match="already run and are busy"):
        pool.get("/m/c")
    b.active = 0
    b.running = False  # died: the next get starts a fresh one
    b2 = pool.get("/m/a", "bfloat16", max_model_len=512)
    assert b2 is not b and b2.alive()
    with pytest.raises(VllmServerError, match="boom"):
        pool.get("/m/d", fail=True)
    assert pool.running() == [] and b2.closed  # made room, then the failed start was dropped
    c = pool.get("/m/c")
    pool.close_all()
    assert c.closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.get("/m/c")


def test_pool_starts_a_model_once_for_concurrent_requests():
    FakeServer.started = []
    pool = VllmServerPool(max_servers=2, factory=FakeServer)
    got = []
    threads = [threading.Thread(target=lambda: got.append(pool.get("/m/a"))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(FakeServer.started) == 1 and all(g is got[0] for g in got)
    pool.close_all()


# ------------------------------------------------------------------------------------------ the client


class _Stub(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in: streams one word per chunk; knows no chat template when told so."""

    protocol_version = "HTTP/1.1"  # chunked streaming on a keep-alive connection, as vLLM's server does
    no_template = False
    requests: list[tuple[str, dict]] = []
    disconnected = threading.Event()

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._json(200, {"data": [{"id": "stub-model"}]})

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.requests.append((self.path, body))
        if self.path.endswith("/chat/completions") and _Stub.no_template:
            return self._json(400, {"error": {"message": "this model has no chat template (default chat template "
                                                         "is no longer allowed)", "code": 400}})
        if body.get("max_tokens", 0) > 1000:
            return self._json(400, {"error": {"message": "This model's maximum context length is 512 tokens.",
                                              "type": "BadRequestError", "code": 400}})
        words = [f"w{i} " for i in range(body["max_tokens"])]
        chat = self.path.endswith("/chat/completions")
        if not body.get("stream"):
            text = "".join(words)
            choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            return self._json(200, {"choices": [{**choice, "finish_reason": "length"}],
                                    "usage": {"prompt_tokens": 4, "completion_tokens": len(words)}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(text: str) -> None:
            data = text.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            for w in words:
                choice = {"delta": {"content": w}} if chat else {"text": w}
                send(f"data: {json.dumps({'choices': [{**choice, 'finish_reason': None}]})}\n\n")
                time.sleep(0.02)
            end = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": len(words)}}
            send(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            _Stub.disconnected.set()
            self.close_connection = True


@pytest.fixture
def stub():  # noqa: ANN201
    _Stub.no_template, _Stub.requests = False, []
    _Stub.disconnected.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_client_streams_deltas_and_stats(stub):
    client = OpenAIChatClient(stub + "/v1", "")
    assert client.models() == ["stub-model"]
    client.model = "stub-model"
    stream = client.stream_chat(MSGS, GenerationSettings(max_new_tokens=5, temperature=0.5, seed=3))
    assert list(stream) == ["w0 ", "w1 ", "w2 ", "w3 ", "w4 "]
    assert stream.stats["tokens"] == 5 and stream.stats["prompt_tokens"] == 4
    assert stream.stats["finish_reason"] == "length" and not stream.stats["stopped"]
    path, body = _Stub.requests[-1]
    assert path == "/v1/chat/completions" and body["stream"] and body["messages"] == MSGS
    assert body["seed"] == 3 and body["temperature"] == 0.5 and body["stream_options"] == {"include_usage": True}
    assert client.reply(MSGS, GenerationSettings(max_new_tokens=3)) == "w0 w1 w2 "


def test_closing_the_stream_closes_the_connection(stub):
    client = OpenAIChatClient(stub, "stub-model")
    stream = client.stream_chat(MSGS, GenerationSettings(max_new_tokens=500))
    assert next(stream) == "w0 "
    stream.close()
    assert stream.stats["stopped"] and stream.stats["finish_reason"] == "stopped"
    assert _Stub.disconnected.wait(5), "the server saw the client go away"
    assert list(stream) == []


def test_server_errors_become_clear_value_errors(stub):
    client = OpenAIChatClient(stub, "stub-model")
    with pytest.raises(ValueError, match=r"refused the request \(400\): This model's maximum context length is 512"):
        client.stream_chat(MSGS, GenerationSettings(max_new_tokens=2000))
    with pytest.raises(ValueError, match="the last message is from the assistant"):
        client.stream_chat([{"role": "assistant", "content": "hi"}])
    with pytest.raises(ValueError, match="cannot be reached"):
        OpenAIChatClient("http://127.0.0.1:9", "m", connect_timeout=2).stream_chat(MSGS)


def test_a_model_without_chat_template_gets_the_plain_prompt(stub):
    _Stub.no_template = True
    client = OpenAIChatClient(stub, "stub-model")  # template unknown: tries chat, falls back
    stream = client.stream_chat(MSGS, GenerationSettings(max_new_tokens=2))
    assert list(stream) == ["w0 ", "w1 "] and stream.notices == [NO_TEMPLATE_NOTICE]
    assert [p for p, _ in _Stub.requests] == ["/v1/chat/completions", "/v1/completions"]
    assert _Stub.requests[-1][1]["prompt"] == plain_prompt(MSGS)
    assert client.chat_template is False  # remembered: the next message goes straight to /v1/completions
    client.stream_chat(MSGS, GenerationSettings(max_new_tokens=1)).close()
    assert _Stub.requests[-1][0] == "/v1/completions"


def test_zero_new_tokens_sends_nothing(stub):
    stream = OpenAIChatClient(stub, "stub-model").stream_chat(MSGS, GenerationSettings(max_new_tokens=0))
    assert list(stream) == [] and _Stub.requests == []
    assert sys.modules["hala_core.vllm_server"] is vs
