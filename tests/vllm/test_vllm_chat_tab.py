"""The Chat tab on the vLLM engine, over the workbench's HTTP API: the first message starts a vLLM server
(owned by the workbench process), the reply streams, the next message reuses the server."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("vllm")

from tests.support.app_server import AppServer, add_user, make_workspace  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def app(tmp_path_factory):  # noqa: ANN001, ANN201
    from hala_core.demo_models import build_demo_model

    root = tmp_path_factory.mktemp("vllm-chat-tab")
    model = build_demo_model(root / "models-src" / "demo-vllm", seed=0, hidden_size=128)
    settings = make_workspace(root / "home", {"demo-vllm": model})
    add_user(settings, "salma", "annotator", "salma-password")
    srv = AppServer(settings, root / "server.log").start()
    yield srv, settings
    srv.stop()


def _chat(app, session, text: str):  # noqa: ANN001, ANN202
    # inputs: model, system prompt, message, temperature, top-p, max new tokens, repetition penalty, engine, URL,
    # model name at the URL (the conversation state is kept by the server)
    return app.call(session, "chat", ["demo-vllm", "", text, 0, 1, 16, 1.0, "vLLM server", "", ""])


def test_chat_tab_streams_from_a_vllm_server_and_reuses_it(app):
    srv, settings = app
    session = srv.login("salma", "salma-password")
    start = time.monotonic()
    event, data = _chat(srv, session, "مرحبا")
    first_s = time.monotonic() - start
    assert event == "complete", data
    view, notice = json.loads(data)[:2]
    assert 'class="bubble assistant"' in view
    assert "vLLM server: http://127.0.0.1:" in notice and "tok/s" in notice
    logs = list((settings.home / "vllm-servers").glob("vllm-demo-vllm-*.log"))
    assert len(logs) == 1

    start = time.monotonic()
    event, data = _chat(srv, session, "and again")
    assert event == "complete", data
    assert time.monotonic() - start < first_s / 2  # no second start: the server kept running
    assert len(list((settings.home / "vllm-servers").glob("vllm-demo-vllm-*.log"))) == 1
