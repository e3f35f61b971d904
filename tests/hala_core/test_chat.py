"""Chat: streaming on the real demo models (transformers), prompt building, the model cache and helpers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from hala_core.chat import (
    NO_SYSTEM_ROLE_NOTICE,
    NO_TEMPLATE_NOTICE,
    ChatModel,
    ModelCache,
    RateLimiter,
    build_chat_prompt,
    conversation_json,
    conversation_markdown,
    count_prompt_tokens,
    is_arabic,
    text_direction,
    validate_messages,
)
from hala_core.demo_models import DEMO_LABEL
from hala_core.engine import GenerationSettings

# With repetition_penalty 3 the greedy output of the random demo model is varied "words" (with spaces), so
# the streamer, which holds text back until a space or newline, hands out several chunks; with the default
# penalty it repeats "\n", one chunk per token.
WORDY = GenerationSettings(max_new_tokens=24, repetition_penalty=3.0)
PROMPT_EN = [{"role": "user", "content": "What is the capital of Egypt?"}]
PROMPT_AR = [{"role": "system", "content": "أنت مساعد مفيد."}, {"role": "user", "content": "مرحبا، كيف حالك؟"}]


@pytest.fixture(scope="module")
def chat_model(demo_models_dir: dict[str, Path]) -> ChatModel:
    return ChatModel.load(demo_models_dir["demo-lfm2-a"])


@pytest.fixture
def fresh_tokenizer(demo_models_dir: dict[str, Path]):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_models_dir["demo-lfm2-a"]))


def conversation(turns: int) -> list[dict]:
    msgs = [{"role": "system", "content": "Answer briefly."}]
    for i in range(turns):
        msgs.append({"role": "user", "content": f"question number {i}: tell me about the sea and the desert"})
        msgs.append({"role": "assistant", "content": f"answer number {i}: the sea is wide and the desert is dry"})
    msgs.append({"role": "user", "content": "and the last question?"})
    return msgs


# ------------------------------------------------------------------------------------------ streaming


def test_load_reports_progress_size_and_demo_flag(demo_models_dir):
    steps: list[tuple[int, int, str]] = []
    model = ChatModel.load(demo_models_dir["demo-lfm2-b"], on_progress=lambda d, t, m: steps.append((d, t, m)))
    assert [s[:2] for s in steps] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert model.size_bytes == sum(p.numel() * 4 for p in model.model.parameters())
    assert model.is_demo
    with pytest.raises(ValueError, match="dtype 'int3' is not supported; choose one of float32"):
        ChatModel.load(demo_models_dir["demo-lfm2-b"], dtype="int3")


def test_stream_chunks_concatenate_to_the_greedy_reply(chat_model):
    for messages, settings in [(PROMPT_EN, WORDY), (PROMPT_AR, WORDY),
                               (PROMPT_EN, GenerationSettings(max_new_tokens=12))]:
        stream = chat_model.stream(messages, settings)
        chunks = list(stream)
        reply = chat_model.reply(messages, settings)
        assert len(chunks) >= 3, chunks
        assert all(chunks)
        assert "".join(chunks) == reply == stream.text
        assert stream.stats["tokens"] >= len(chunks)
        assert stream.stats["time_to_first_token_s"] > 0
        assert stream.stats["finish_reason"] in ("length", "eos")
    assert chat_model.last_stats["tokens"] == 12  # the plain greedy run repeats "\n" to the token limit


def test_sampled_stream_matches_a_sampled_reply_with_the_same_seed(chat_model):
    settings = GenerationSettings(max_new_tokens=30, temperature=0.8, top_p=0.95, seed=1)
    chunks = list(chat_model.stream(PROMPT_EN, settings))
    assert len(chunks) >= 3
    assert any(" " in c for c in chunks)  # the streamer held text back to word boundaries
    assert "".join(chunks) == chat_model.reply(PROMPT_EN, settings)


def test_concurrent_streams_on_one_model_match_their_sequential_replies(chat_model):
    jobs = [(PROMPT_EN, WORDY), (PROMPT_AR, WORDY), (PROMPT_EN, GenerationSettings(max_new_tokens=20)),
            ([{"role": "user", "content": "Translate: the cat sat on the mat"}], WORDY)]
    expected = [chat_model.reply(m, s) for m, s in jobs]
    assert len(set(expected)) >= 3  # different conversations really give different replies
    results: list[list[str] | None] = [None] * len(jobs)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        try:
            stream = chat_model.stream(*jobs[i])
            barrier.wait()
            results[i] = list(stream)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)
    for got, want in zip(results, expected, strict=True):
        assert got is not None and len(got) >= 2
        assert "".join(got) == want


def test_stop_event_ends_a_stream_early(chat_model):
    settings = GenerationSettings(max_new_tokens=400)  # "\n" per token: one chunk per token
    stop = threading.Event()
    stream = chat_model.stream(PROMPT_EN, settings, stop_event=stop)
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if len(chunks) == 3:
            stop.set()
    assert 3 <= len(chunks) < 20
    assert stream.stats["stopped"] and stream.stats["finish_reason"] == "stopped"
    assert stream.stats["tokens"] < 20

    already = threading.Event()
    already.set()
    stream = chat_model.stream(PROMPT_EN, settings, stop_event=already)
    assert len(list(stream)) <= 1 and stream.stats["tokens"] <= 1


def test_closing_a_stream_stops_its_generation_thread(chat_model):
    stream = chat_model.stream(PROMPT_EN, GenerationSettings(max_new_tokens=2000))
    first = next(stream)
    assert first
    start = time.perf_counter()
    stream.close()
    assert time.perf_counter() - start < 5
    assert stream.stats["stopped"] and stream.stats["tokens"] < 2000
    assert list(stream) == []


def test_dropping_a_stream_midway_ends_its_generation(chat_model):
    import gc

    stream = chat_model.stream(PROMPT_EN, GenerationSettings(max_new_tokens=2000))
    assert next(stream)
    thread = stream._thread
    del stream  # a viewer closed the tab: nobody iterates any more
    gc.collect()
    thread.join(1.0)  # the 2000 tokens would take over 2 s
    assert not thread.is_alive()


def test_zero_new_tokens_gives_an_empty_reply(chat_model):
    settings = GenerationSettings(max_new_tokens=0)
    assert list(chat_model.stream(PROMPT_EN, settings)) == []
    assert chat_model.reply(PROMPT_EN, settings) == ""


# ------------------------------------------------------------------------------------------ prompts


def test_prompt_uses_the_chat_template_with_a_generation_prompt(fresh_tokenizer):
    prompt, notices = build_chat_prompt(fresh_tokenizer, PROMPT_AR, 2048)
    assert notices == []
    assert prompt.startswith("<|startoftext|><|im_start|>system\nأنت مساعد مفيد.<|im_end|>")
    assert prompt.endswith("<|im_start|>user\nمرحبا، كيف حالك؟<|im_end|>\n<|im_start|>assistant\n")


def test_a_tokenizer_without_chat_template_falls_back_to_a_plain_prompt(demo_models_dir, fresh_tokenizer,
                                                                        chat_model):
    fresh_tokenizer.chat_template = None
    prompt, notices = build_chat_prompt(fresh_tokenizer, PROMPT_AR, 2048)
    assert prompt == "System: أنت مساعد مفيد.\nUser: مرحبا، كيف حالك؟\nAssistant:"
    assert notices == [NO_TEMPLATE_NOTICE] == ["this model has no chat template; a plain prompt is used"]
    plain = ChatModel(chat_model.model, fresh_tokenizer, path=str(demo_models_dir["demo-lfm2-a"]))
    settings = GenerationSettings(max_new_tokens=8)
    stream = plain.stream(PROMPT_EN, settings)
    assert stream.notices == plain.notices == [NO_TEMPLATE_NOTICE]
    assert "".join(stream) == plain.reply(PROMPT_EN, settings)


def test_a_template_without_system_role_gets_the_system_prompt_in_the_first_user_message(fresh_tokenizer):
    fresh_tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<turn>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<turn>model\n{% endif %}")
    prompt, notices = build_chat_prompt(fresh_tokenizer, PROMPT_AR, None)
    assert notices == [NO_SYSTEM_ROLE_NOTICE]
    assert prompt == "<turn>user\nأنت مساعد مفيد.\n\nمرحبا، كيف حالك؟\n<turn>model\n"


def test_a_long_history_drops_the_oldest_turns_and_says_so(fresh_tokenizer):
    msgs = conversation(8)
    full, _ = build_chat_prompt(fresh_tokenizer, msgs, None)
    full_tokens = count_prompt_tokens(fresh_tokenizer, full)
    limit = full_tokens // 2
    prompt, notices = build_chat_prompt(fresh_tokenizer, msgs, limit)
    assert count_prompt_tokens(fresh_tokenizer, prompt) <= limit
    assert len(notices) == 1 and "oldest turn(s)" in notices[0] and f"({limit:,} tokens)" in notices[0]
    dropped = int(notices[0].split("dropped the ")[1].split(" ")[0])
    assert 1 <= dropped < 8
    assert "Answer briefly." in prompt and "and the last question?" in prompt  # system and last kept
    assert "question number 0" not in prompt and "question number 7" in prompt  # oldest go first
    assert prompt.endswith("<|im_start|>assistant\n")


def test_a_message_longer_than_the_context_is_cut_from_the_start(fresh_tokenizer):
    words = [f"word{i}" for i in range(300)]
    msgs = [*conversation(2)[:-1], {"role": "user", "content": " ".join(words)}]
    prompt, notices = build_chat_prompt(fresh_tokenizer, msgs, 60)
    assert count_prompt_tokens(fresh_tokenizer, prompt) <= 60
    assert "Answer briefly." in prompt and "word299" in prompt and "word0 " not in prompt
    assert len(notices) == 1
    assert "dropped all 2 earlier turn(s) (4 messages)" in notices[0] and "cut the first" in notices[0]
    with pytest.raises(ValueError, match="the system prompt alone takes .* tokens; the context has room for 5"):
        build_chat_prompt(fresh_tokenizer, msgs, 5)


def test_the_model_context_is_its_window_minus_new_tokens(chat_model):
    settings = GenerationSettings(max_new_tokens=48)
    assert chat_model.context_tokens(settings) == 2048 - 48
    assert chat_model.context_tokens(settings, max_context_tokens=100) == 100
    stream = chat_model.stream(conversation(8), GenerationSettings(max_new_tokens=4), max_context_tokens=80)
    assert len(stream.notices) == 1 and "dropped the" in stream.notices[0]
    assert chat_model.notices == stream.notices
    assert len(list(stream)) >= 1
    assert stream.stats["prompt_tokens"] <= 80


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "the conversation is empty; type a message first"),
        ([{"role": "user", "content": "   "}], "the last user message is empty; type a message first"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "the last message is from the assistant; type a message first"),
        ([{"role": "tool", "content": "x"}, {"role": "user", "content": "hi"}],
         "message 1 has role 'tool'; valid roles: system, user, assistant"),
        ([{"role": "user", "content": "x" * 4001}], "message 1 \\(user\\) is 4,001 characters long; the limit is 4,000"),
        ([{"role": "user", "content": ["a", "b"]}], "only text is supported"),
        (["hello"], "message 1 is a str, not a dict"),
    ],
)
def test_validate_messages_refuses_bad_conversations(messages, match):
    with pytest.raises(ValueError, match=match):
        validate_messages(messages)


def test_validate_messages_returns_clean_copies():
    msgs = [{"role": "user", "content": "hi", "metadata": {"x": 1}}]
    assert validate_messages(msgs) == [{"role": "user", "content": "hi"}]
    assert validate_messages([{"role": "user", "content": "x" * 50}], max_chars=50)
    with pytest.raises(ValueError, match="is 51 characters long; the limit is 50"):
        validate_messages([{"role": "user", "content": "x" * 51}], max_chars=50)


# ------------------------------------------------------------------------------------------ model cache


class FakeModel:
    def __init__(self, path: str, size_bytes: int) -> None:
        self.path = path
        self.size_bytes = size_bytes


class CountingLoader:
    def __init__(self, sizes: dict[str, int] | None = None, delay: float = 0.0) -> None:
        self.sizes = sizes or {}
        self.delay = delay
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.gates: dict[str, threading.Event] = {}

    def __call__(self, path: str, device: str = "cpu", dtype: str = "float32", on_progress=None) -> FakeModel:
        with self.lock:
            self.calls.append(path)
        if path in self.gates:
            assert self.gates[path].wait(10)
        time.sleep(self.delay)
        if path.startswith("bad"):
            raise OSError("no config.json here")
        return FakeModel(path, self.sizes.get(path, 100))


def test_concurrent_gets_of_one_model_load_it_once():
    loader = CountingLoader(delay=0.3)
    cache = ModelCache(budget_bytes=1000, loader=loader)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("m1"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert loader.calls == ["m1"]
    assert len(got) == 8 and all(g is got[0] for g in got)


def test_a_slow_load_does_not_block_other_models():
    loader = CountingLoader()
    loader.gates["slow"] = threading.Event()
    cache = ModelCache(budget_bytes=1000, loader=loader)
    t = threading.Thread(target=cache.get, args=("slow",))
    t.start()
    time.sleep(0.05)
    assert cache.get("fast").path == "fast"  # served while "slow" is still loading
    loader.gates["slow"].set()
    t.join(10)
    assert sorted(d["path"] for d in cache.loaded()) == ["fast", "slow"]


def test_the_cache_evicts_least_recently_used_models_to_stay_in_budget():
    clock = [1000.0]
    loader = CountingLoader(sizes={"a": 400, "b": 400, "c": 400})
    cache = ModelCache(budget_bytes=1000, loader=loader, clock=lambda: clock[0])
    cache.get("a")
    clock[0] += 1
    cache.get("b")
    clock[0] += 1
    cache.get("a")  # a is now the most recently used
    clock[0] += 1
    cache.get("c")  # over budget: b goes
    assert [d["path"] for d in cache.loaded()] == ["c", "a"]
    assert cache.used_bytes() == 800 <= cache.budget_bytes
    info = cache.loaded()[0]
    assert info["size_bytes"] == 400 and info["last_used"] == 1003.0 and info["idle_s"] == 0.0
    assert loader.calls == ["a", "b", "c"]
    cache.get("b")
    assert loader.calls[-1] == "b" and [d["path"] for d in cache.loaded()] == ["b", "c"]


def test_a_model_bigger_than_the_budget_is_refused(demo_models_dir):
    cache = ModelCache(budget_bytes=1000, loader=CountingLoader(sizes={"huge": 5000}))
    cache.get("small")
    with pytest.raises(ValueError, match=r"model huge needs 4\.9 KiB \(5,000 bytes\), more than the whole model "
                                         r"cache budget of 1000 B \(1,000 bytes\)"):
        cache.get("huge")
    assert [d["path"] for d in cache.loaded()] == ["small"]  # nothing else was evicted for it

    # A local model folder is measured from its safetensors headers before anything is loaded.
    loader = CountingLoader()
    cache = ModelCache(budget_bytes=100_000, loader=loader)
    path = str(demo_models_dir["demo-lfm2-a"])
    with pytest.raises(ValueError, match="demo-lfm2-a needs .* more than the whole model cache budget"):
        cache.get(path)
    assert loader.calls == []


def test_a_bad_model_path_is_a_clear_error_and_the_cache_keeps_working(demo_models_dir, tmp_path):
    cache = ModelCache(budget_bytes=10**9)
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match=f"could not load model {missing} \\(cpu, float32\\): "):
        cache.get(missing)
    model = cache.get(demo_models_dir["demo-lfm2-a"])
    assert isinstance(model, ChatModel) and cache.get(demo_models_dir["demo-lfm2-a"]) is model
    assert model.reply(PROMPT_EN, GenerationSettings(max_new_tokens=2)) is not None
    assert cache.loaded()[0]["size_bytes"] == model.size_bytes

    fake = ModelCache(budget_bytes=1000, loader=CountingLoader())
    with pytest.raises(ValueError, match="could not load model bad-one \\(cpu, float32\\): no config.json here"):
        fake.get("bad-one")
    assert fake.get("good").path == "good"


def test_idle_models_are_unloaded_and_unload_drops_a_model():
    clock = [0.0]
    cache = ModelCache(budget_bytes=1000, idle_s=600, loader=CountingLoader(), clock=lambda: clock[0])
    cache.get("a")
    cache.get("b", dtype="float16")
    cache.get("b", dtype="bfloat16")
    clock[0] = 500.0
    cache.get("a")
    assert cache.unload_idle() == []
    clock[0] = 700.0
    assert sorted(cache.unload_idle()) == ["b", "b"]
    assert [d["path"] for d in cache.loaded()] == ["a"]
    assert cache.unload("a") == 1 and cache.loaded() == [] and cache.unload("a") == 0


# ------------------------------------------------------------------------------------------ rate limit


def test_rate_limiter_is_a_sliding_window_per_key():
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    for t in (0.0, 10.0, 20.0):
        now[0] = t
        limiter.check("alice")
    now[0] = 30.0
    with pytest.raises(ValueError, match=r"^rate limit: 3 messages a minute; wait 30 s$"):
        limiter.check("alice")
    limiter.check("bob")  # another viewer is not affected
    now[0] = 60.5  # the message at t=0 has left the window
    limiter.check("alice")
    with pytest.raises(ValueError, match="wait 10 s"):
        limiter.check("alice")
    unlimited = RateLimiter(0)
    for _ in range(100):
        unlimited.check("x")
    with pytest.raises(ValueError, match="per_minute must be 0"):
        RateLimiter(-1)


# ------------------------------------------------------------------------------------------ direction, export


def test_is_arabic_and_text_direction():
    assert is_arabic("مرحبا، كيف حالك؟") and text_direction("مرحبا، كيف حالك؟") == "rtl"
    assert is_arabic("اَلسَّلَامُ عَلَيْكُمْ")  # harakat do not count against the letters
    assert not is_arabic("Hello, how are you?") and text_direction("Hello, how are you?") == "ltr"
    mixed = "ما هو LFM2-1.2B؟ نموذج لغوي صغير"  # mostly Arabic with a Latin model name
    assert is_arabic(mixed) and text_direction(mixed) == "rtl"
    code = "Run `python -m pytest tests/hala_core` then say شكرا"  # mostly Latin with one Arabic word
    assert not is_arabic(code) and text_direction(code) == "ltr"
    assert is_arabic(code, threshold=0.1)
    assert not is_arabic("") and not is_arabic("123 !?") and text_direction("42") == "ltr"


def test_conversation_exports():
    messages = [*PROMPT_AR, {"role": "assistant", "content": "I am fine, thanks."}]
    meta = {"model": "demo-lfm2-a", "label": DEMO_LABEL, "licence": "Apache-2.0",
            "settings": {"temperature": 0.0, "max_new_tokens": 24}}
    md = conversation_markdown(messages, meta)
    assert md.startswith("# Chat with demo-lfm2-a\n")
    assert f"- **label**: {DEMO_LABEL}" in md and "- **licence**: Apache-2.0" in md
    assert "- **settings**: temperature=0.0, max_new_tokens=24" in md
    assert '### User\n\n<div dir="rtl">\n\nمرحبا، كيف حالك؟\n\n</div>' in md
    assert "### Assistant\n\nI am fine, thanks.\n" in md
    assert md.index("### System") < md.index("### User") < md.index("### Assistant")

    data = json.loads(conversation_json(messages, meta))
    assert data["meta"] == meta
    assert [m["role"] for m in data["messages"]] == ["system", "user", "assistant"]
    assert data["messages"][1] == {"role": "user", "content": "مرحبا، كيف حالك؟", "direction": "rtl"}
    assert data["messages"][2]["direction"] == "ltr"
    assert "مرحبا" in conversation_json(messages, meta)  # UTF-8 text, not \\u escapes
    assert json.loads(conversation_json([], None)) == {"meta": {}, "messages": []}

