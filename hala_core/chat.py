"""Chat with a loaded model: message checks, prompt building, streaming, a model cache and a rate limiter.

Made for a live demo tab where several viewers chat at once: one ``ChatModel`` serves many concurrent
``stream`` calls (each call has its own streamer, stop flag and statistics), a ``ModelCache`` keeps a
few models loaded under a memory budget, and a ``RateLimiter`` keeps one viewer from hogging the CPU/GPU.
Pure library: no gradio, no SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypedDict

from hala_core.engine import TORCH_DTYPES, GenerationSettings

ROLES = ("system", "user", "assistant")
MAX_MESSAGE_CHARS = 4000
NO_TEMPLATE_NOTICE = "this model has no chat template; a plain prompt is used"
NO_SYSTEM_ROLE_NOTICE = ("this model's chat template has no system role; the system prompt was put before "
                         "the first user message")

ProgressFn = Callable[[int, int, str], None]


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


# --------------------------------------------------------------------------------------------- messages


def validate_messages(messages: list[dict], max_chars: float = MAX_MESSAGE_CHARS) -> list[dict]:
    """Check a conversation before generating; return clean ``{role, content}`` copies.

    Refuses an empty conversation, a conversation that does not end with a non-empty user message,
    messages longer than ``max_chars`` and unknown roles (ValueError saying what is allowed).
    """
    if not messages:
        raise ValueError("the conversation is empty; type a message first")
    clean: list[dict] = []
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict):
            raise ValueError(f"message {i} is a {type(msg).__name__}, not a dict with 'role' and 'content'")
        role = msg.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}; valid roles: {', '.join(ROLES)}")
        content = msg.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ValueError(f"message {i} ({role}) has {type(content).__name__} content; only text is supported")
        if len(content) > max_chars:
            raise ValueError(f"message {i} ({role}) is {len(content):,} characters long; "
                             f"the limit is {max_chars:,} characters")
        clean.append({"role": role, "content": content})
    last = clean[-1]
    if last["role"] != "user":
        raise ValueError(f"the last message is from the {last['role']}; type a message first "
                         "(a conversation must end with a user message)")
    if not last["content"].strip():
        raise ValueError("the last user message is empty; type a message first")
    return clean


# --------------------------------------------------------------------------------------------- prompts


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def plain_prompt(messages: list[dict]) -> str:
    """The prompt for a model without a chat template: ``System: …\nUser: …\nAssistant:`` (also used for such
    models behind an OpenAI-compatible server, on its ``/v1/completions`` endpoint)."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


_plain_prompt = plain_prompt


def _merge_system(messages: list[dict]) -> list[dict]:
    """For templates without a system role: put the system prompt(s) before the first user message."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}" if system else m["content"]
            break
    return rest


def _render(tokenizer: Any, messages: list[dict]) -> tuple[str, list[str]]:
    """The prompt text for ``messages`` and the notices its rendering produced (no trimming)."""
    if not _has_chat_template(tokenizer):
        return _plain_prompt(messages), [NO_TEMPLATE_NOTICE]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja2's TemplateError (raise_exception in the template), e.g. "System role not supported"
        if not any(m["role"] == "system" for m in messages):
            raise ValueError(f"the model's chat template refused this conversation: {e}") from None
        try:
            text = tokenizer.apply_chat_template(_merge_system(messages), tokenize=False, add_generation_prompt=True)
        except Exception as e2:
            raise ValueError(f"the model's chat template refused this conversation: {e2}") from None
        return str(text), [NO_SYSTEM_ROLE_NOTICE]
    return str(text), []


def prompt_uses_template(tokenizer: Any) -> bool:
    """True when prompts are rendered by the chat template (which writes its own special tokens).

    Such prompts are tokenized with ``add_special_tokens=False`` (the template already holds the BOS);
    plain fallback prompts get the tokenizer's usual special tokens.
    """
    return _has_chat_template(tokenizer)


def count_prompt_tokens(tokenizer: Any, prompt: str) -> int:
    ids = tokenizer(prompt, add_special_tokens=not prompt_uses_template(tokenizer))["input_ids"]
    return len(ids)


def _turns(messages: list[dict]) -> tuple[list[dict], list[list[dict]], dict]:
    """Split into (system messages, older turns, last user message). A turn is a user message with the
    assistant replies after it (a leading assistant greeting is a turn of its own)."""
    system = [m for m in messages if m["role"] == "system"]
    others = [m for m in messages if m["role"] != "system"]
    last = others[-1]
    turns: list[list[dict]] = []
    for m in others[:-1]:
        if m["role"] == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return system, turns, last


def build_chat_prompt(tokenizer: Any, messages: list[dict], max_context_tokens: int | None) -> tuple[str, list[str]]:
    """Render ``messages`` into a prompt that fits ``max_context_tokens``; return ``(prompt, notices)``.

    Uses the tokenizer's chat template with ``add_generation_prompt=True``; without a template a plain
    ``System: …\\nUser: …\\nAssistant:`` prompt is used (with a notice). When the prompt is too long, the
    oldest turns (never the system prompt) are dropped, then the start of the last user message is cut,
    each with a notice. ``max_context_tokens`` None means no limit.
    """
    messages = validate_messages(messages, max_chars=math.inf)
    prompt, notices = _render(tokenizer, messages)
    if max_context_tokens is None:
        return prompt, notices
    if max_context_tokens < 1:
        raise ValueError(f"the context has room for {max_context_tokens} prompt tokens; it needs at least 1 "
                         "(lower max_new_tokens or use a model with a longer context)")
    full_tokens = count_prompt_tokens(tokenizer, prompt)
    if full_tokens <= max_context_tokens:
        return prompt, notices

    system, turns, last = _turns(messages)
    dropped_turns = dropped_messages = 0
    while turns:
        dropped_messages += len(turns.pop(0))
        dropped_turns += 1
        candidate = system + [m for t in turns for m in t] + [last]
        prompt, notices = _render(tokenizer, candidate)
        n = count_prompt_tokens(tokenizer, prompt)
        if n <= max_context_tokens:
            notices.append(f"the conversation ({full_tokens:,} tokens) is longer than the context "
                           f"({max_context_tokens:,} tokens): dropped the {dropped_turns} oldest turn(s) "
                           f"({dropped_messages} messages, {full_tokens - n:,} tokens)")
            return prompt, notices

    # Only the system prompt and the last user message remain: keep the end of the user message.
    content_ids = tokenizer(last["content"], add_special_tokens=False)["input_ids"]

    def render_keep(k: int) -> tuple[str, list[str], int]:
        text = tokenizer.decode(content_ids[len(content_ids) - k :], skip_special_tokens=False) if k else ""
        p, nts = _render(tokenizer, [*system, {"role": "user", "content": text}])
        return p, nts, count_prompt_tokens(tokenizer, p)

    lo, hi = 0, len(content_ids)  # find the largest k whose prompt fits
    p0, n0_notices, n0 = render_keep(0)
    if n0 > max_context_tokens:
        raise ValueError(f"the system prompt alone takes {n0:,} tokens; the context has room for "
                         f"{max_context_tokens:,}; shorten the system prompt or lower max_new_tokens")
    best = (p0, n0_notices, n0, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        p, nts, n = render_keep(mid)
        if n <= max_context_tokens:
            lo, best = mid, (p, nts, n, mid)
        else:
            hi = mid - 1
    prompt, notices, n, kept = best
    parts = []
    if dropped_turns:
        parts.append(f"dropped all {dropped_turns} earlier turn(s) ({dropped_messages} messages)")
    parts.append(f"cut the first {len(content_ids) - kept:,} of {len(content_ids):,} tokens of your message")
    notices.append(f"the conversation ({full_tokens:,} tokens) is longer than the context "
                   f"({max_context_tokens:,} tokens): " + " and ".join(parts))
    return prompt, notices


# --------------------------------------------------------------------------------------------- the model


@functools.cache
def _stop_criteria_class() -> type:
    from transformers import StoppingCriteria

    class StopOnEvent(StoppingCriteria):
        """Ends generation (for the whole batch) as soon as any of the events is set."""

        def __init__(self, *events: threading.Event | None) -> None:
            self.events = [e for e in events if e is not None]

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            done = any(e.is_set() for e in self.events)
            return torch.full((input_ids.shape[0],), done, device=input_ids.device, dtype=torch.bool)

    return StopOnEvent


@functools.cache
def _streamer_class() -> type:
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        """A TextIteratorStreamer that also counts generated tokens and notes when the first one came."""

        def __init__(self, tokenizer: Any, **kwargs: Any) -> None:
            super().__init__(tokenizer, skip_prompt=True, **kwargs)
            self.tokens = 0
            self.first_token_at: float | None = None
            self.ended = False
            self._prompt_seen = False

        def put(self, value: Any) -> None:
            if self._prompt_seen:
                self.tokens += int(value.numel())
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
            self._prompt_seen = True
            super().put(value)

        def end(self) -> None:
            if not self.ended:
                self.ended = True
                super().end()

    return CountingStreamer


class ChatStream(Iterator[str]):
    """One streamed reply: iterate it for text chunks. ``notices`` (from the prompt build) are known at once,
    ``stats`` when it is done. ``close()`` (or dropping it) stops the generation thread."""

    def __init__(self, model: ChatModel, prompt: str, notices: list[str], settings: GenerationSettings,
                 stop_event: threading.Event | None) -> None:
        self._model = model
        self.prompt = prompt
        self.notices = list(notices)
        self.settings = settings
        self._user_stop = stop_event
        self._own_stop = threading.Event()
        self._streamer: Any = None
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self._prompt_tokens = 0
        self._started_at = 0.0
        self._finished = False
        self.text = ""
        self.stats: dict[str, Any] = {}

    def _start(self) -> None:
        model = self._model
        self._streamer = streamer = _streamer_class()(model.tokenizer, skip_special_tokens=True)
        criteria = _stop_criteria_class()(self._user_stop, self._own_stop)
        enc = model.encode(self.prompt)
        self._prompt_tokens = int(enc["input_ids"].shape[1])
        kwargs = model.generate_kwargs(self.settings)
        seed = None if self.settings.greedy else self.settings.seed
        hf_model = model.model
        errors = self._errors

        # The thread holds no reference to this ChatStream, so a viewer who drops it mid-way (closed tab)
        # lets __del__ set the stop flag and the generation ends.
        def work() -> None:
            import torch
            from transformers import StoppingCriteriaList

            try:
                if seed is not None:
                    torch.manual_seed(seed)
                with torch.inference_mode():
                    hf_model.generate(**enc, **kwargs, streamer=streamer,
                                      stopping_criteria=StoppingCriteriaList([criteria]))
            except BaseException as e:  # handed to the consumer, raised there
                errors.append(e)
            finally:
                streamer.end()

        self._started_at = time.perf_counter()
        self._thread = threading.Thread(target=work, name="hala-chat-generate", daemon=True)
        self._thread.start()

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        if self._streamer is None:
            if self.settings.max_new_tokens == 0:
                self._finished = True
                self.stats = {"prompt_tokens": 0, "tokens": 0, "time_to_first_token_s": None, "total_s": 0.0,
                              "tokens_per_s": None, "stopped": False, "finish_reason": "length"}
                raise StopIteration
            self._start()
        for chunk in self._streamer:
            if chunk:
                self.text += chunk
                return chunk
        self._finish()
        raise StopIteration

    def _finish(self) -> None:
        self._finished = True
        if self._thread is not None:
            self._thread.join()
        streamer = self._streamer
        elapsed = time.perf_counter() - self._started_at
        ttft = (streamer.first_token_at - self._started_at) if streamer.first_token_at else None
        tokens = streamer.tokens
        stopped = bool((self._user_stop is not None and self._user_stop.is_set()) or self._own_stop.is_set())
        decode_s = elapsed - (ttft or 0.0)
        self.stats = {
            "prompt_tokens": self._prompt_tokens,
            "tokens": tokens,
            "time_to_first_token_s": ttft,
            "total_s": elapsed,
            # decoding speed after the first token (the first one includes the prompt's prefill)
            "tokens_per_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else None,
            "stopped": stopped,
            "finish_reason": ("error" if self._errors else "stopped" if stopped
                              else "length" if tokens >= self.settings.max_new_tokens else "eos"),
        }
        self._model.last_stats = dict(self.stats)
        if self._errors:
            err = self._errors.pop()
            raise RuntimeError(f"generation failed: {type(err).__name__}: {err}") from err

    def close(self) -> None:
        """Stop generating (if it still is) and wait for the generation thread."""
        self._own_stop.set()
        if self._thread is not None and not self._finished:
            with contextlib.suppress(Exception):
                for _ in self._streamer:
                    pass
                self._finish()
        self._finished = True

    def __del__(self) -> None:
        stop = getattr(self, "_own_stop", None)
        if stop is not None:
            stop.set()


def _read_demo_flag(path: Path) -> bool:
    card = path / "README.md"
    try:
        return card.is_file() and "random-weights" in card.read_text(encoding="utf-8")[:2000]
    except OSError:
        return False


class ChatModel:
    """A model loaded for chat. Safe to ``stream`` from several threads at once."""

    def __init__(self, model: Any, tokenizer: Any, path: str = "", device: str = "cpu", dtype: str = "float32",
                 max_context_tokens: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.path = str(path)
        self.device = device
        self.dtype = dtype
        self.max_context_tokens = max_context_tokens  # an extra cap below the model's own context, if set
        self.size_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.is_demo = _read_demo_flag(Path(self.path)) if self.path else False
        self.notices: list[str] = []
        self.last_stats: dict[str, Any] = {}

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: str = "float32",
             on_progress: ProgressFn | None = None) -> ChatModel:
        """Load tokenizer and weights from a model folder (or a hub id where a hub can be reached)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; choose one of {', '.join(TORCH_DTYPES)}")
        progress = on_progress or (lambda done, total, message: None)
        name = str(path)
        progress(0, 3, f"loading the tokenizer of {name}")
        tokenizer = AutoTokenizer.from_pretrained(name)
        progress(1, 3, f"loading the weights of {name} ({dtype})")
        torch_dtype: Any = dtype if dtype == "auto" else getattr(torch, dtype)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
        progress(2, 3, f"moving {name} to {device}")
        model = model.to(device).eval()
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        progress(3, 3, f"{name} is ready")
        return cls(model, tokenizer, path=name, device=device, dtype=dtype)

    # -- prompt

    def context_tokens(self, settings: GenerationSettings, max_context_tokens: int | None = None) -> int | None:
        """Room for the prompt: the model's context minus max_new_tokens, capped by any given maximum."""
        limits = [c for c in (max_context_tokens, self.max_context_tokens) if c is not None]
        window = getattr(self.model.config, "max_position_embeddings", None)
        if window:
            limits.append(int(window) - settings.max_new_tokens)
        return min(limits) if limits else None

    def build_prompt(self, messages: list[dict], settings: GenerationSettings,
                     max_context_tokens: int | None = None) -> tuple[str, list[str]]:
        prompt, notices = build_chat_prompt(self.tokenizer, messages, self.context_tokens(settings, max_context_tokens))
        self.notices = list(notices)
        return prompt, notices

    def encode(self, prompt: str) -> Any:
        return self.tokenizer(prompt, return_tensors="pt",
                              add_special_tokens=not prompt_uses_template(self.tokenizer)).to(self.device)

    def generate_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        tok = self.tokenizer
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            "repetition_penalty": settings.repetition_penalty,
        }
        if settings.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=None)
        return kwargs

    # -- generation

    def stream(self, messages: list[dict], settings: GenerationSettings | None = None,
               stop_event: threading.Event | None = None, max_context_tokens: int | None = None) -> ChatStream:
        """Stream the reply to ``messages`` as text chunks (an iterator; generation starts on the first ``next``).

        The returned ``ChatStream`` also carries this call's ``notices`` and, once exhausted, its ``stats``.
        Set ``stop_event`` to end generation early. Sampling (temperature > 0) seeds torch's global RNG with
        ``settings.seed``, so one stream at a time reproduces ``reply``; concurrent sampled streams share that RNG.
        """
        self._check_open()
        settings = settings or GenerationSettings()
        prompt, notices = self.build_prompt(messages, settings, max_context_tokens)
        return ChatStream(self, prompt, notices, settings, stop_event)

    def reply(self, messages: list[dict], settings: GenerationSettings | None = None,
              max_context_tokens: int | None = None) -> str:
        """The whole reply at once (same prompt and settings as ``stream``)."""
        import torch

        self._check_open()
        settings = settings or GenerationSettings()
        prompt, _ = self.build_prompt(messages, settings, max_context_tokens)
        if settings.max_new_tokens == 0:
            return ""
        enc = self.encode(prompt)
        n_prompt = int(enc["input_ids"].shape[1])
        if not settings.greedy:
            torch.manual_seed(settings.seed)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**enc, **self.generate_kwargs(settings))
        elapsed = time.perf_counter() - start
        new_tokens = out[0, n_prompt:]
        self.last_stats = {
            "prompt_tokens": n_prompt,
            "tokens": int(new_tokens.numel()),
            "time_to_first_token_s": None,
            "total_s": elapsed,
            "tokens_per_s": new_tokens.numel() / elapsed if elapsed > 0 else None,
            "stopped": False,
            "finish_reason": "length" if new_tokens.numel() >= settings.max_new_tokens else "eos",
        }
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)

    def _check_open(self) -> None:
        if self.model is None:
            raise RuntimeError(f"the chat model {self.path} was closed; load it again")

    def close(self) -> None:
        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available() and str(self.device).startswith("cuda"):
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------- cache

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def estimate_model_bytes(path: str | Path, dtype: str) -> int | None:
    """Parameter bytes a local model folder will take once loaded in ``dtype`` (None when unknown)."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        return None
    try:
        from hala_core.models import inspect_model

        info = inspect_model(folder)
    except Exception:
        return None
    per = _DTYPE_BYTES.get(dtype)
    return info.parameters * per if per else info.size_bytes


class _Entry:
    __slots__ = ("model", "size", "last_used", "path", "device", "dtype")

    def __init__(self, model: Any, path: str, device: str, dtype: str, now: float) -> None:
        self.model = model
        self.size = int(getattr(model, "size_bytes", 0))
        self.path, self.device, self.dtype = path, device, dtype
        self.last_used = now


class ModelCache:
    """Loaded chat models under a memory budget, shared by every viewer of the chat tab.

    ``get`` loads a model once (concurrent requests for the same model wait for one load; other models
    keep loading and serving), evicts least-recently-used models to stay under ``budget_bytes`` and refuses
    a model bigger than the whole budget. ``unload_idle`` drops models unused for ``idle_s`` seconds.
    """

    def __init__(self, budget_bytes: int, idle_s: float = 600, loader: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self.idle_s = idle_s
        self.loader = loader or ChatModel.load
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()  # oldest use first
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str, str], threading.Lock] = {}

    @staticmethod
    def _key(path: str | Path, device: str, dtype: str) -> tuple[str, str, str]:
        return (str(path), str(device), str(dtype))

    def _too_big(self, path: str, size: int) -> ValueError:
        return ValueError(f"model {path} needs {_fmt_bytes(size)} ({size:,} bytes), more than the whole model "
                          f"cache budget of {_fmt_bytes(self.budget_bytes)} ({self.budget_bytes:,} bytes); "
                          "pick a smaller model or dtype, or raise the budget")

    def _evict_for(self, needed: int, keep: tuple[str, str, str] | None = None) -> list[str]:
        """Under self._lock: drop LRU entries (never ``keep``) until ``needed`` more bytes fit."""
        evicted = []
        for key in list(self._entries):
            if self.used_bytes_locked() + needed <= self.budget_bytes:
                break
            if key == keep:
                continue
            evicted.append(self._drop_locked(key))
        return evicted

    def used_bytes_locked(self) -> int:
        return sum(e.size for e in self._entries.values())

    def used_bytes(self) -> int:
        with self._lock:
            return self.used_bytes_locked()

    def _drop_locked(self, key: tuple[str, str, str]) -> str:
        entry = self._entries.pop(key)
        # No close(): a viewer may still be streaming from it; memory is freed when the last reference goes.
        entry.model = None
        return key[0]

    @staticmethod
    def _free_memory(device: str) -> None:
        gc.collect()
        if str(device).startswith("cuda"):
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:
                pass

    def get(self, path: str | Path, device: str = "cpu", dtype: str = "float32",
            on_progress: ProgressFn | None = None) -> Any:
        key = self._key(path, device, dtype)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.last_used = self.clock()
                self._entries.move_to_end(key)
                return entry.model
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # loaded by another viewer while we waited?
                entry = self._entries.get(key)
                if entry is not None:
                    entry.last_used = self.clock()
                    self._entries.move_to_end(key)
                    return entry.model
            estimate = estimate_model_bytes(key[0], dtype)
            if estimate is not None:
                if estimate > self.budget_bytes:
                    raise self._too_big(key[0], estimate)
                with self._lock:
                    evicted = self._evict_for(estimate)
                if evicted:
                    self._free_memory(device)
            try:
                model = self.loader(key[0], device=device, dtype=dtype, on_progress=on_progress)
            except Exception as e:
                reason = str(e).strip() or type(e).__name__
                raise ValueError(f"could not load model {key[0]} ({device}, {dtype}): {reason}") from e
            size = int(getattr(model, "size_bytes", 0))
            if size > self.budget_bytes:
                del model
                self._free_memory(device)
                raise self._too_big(key[0], size)
            with self._lock:
                self._entries[key] = _Entry(model, key[0], device, dtype, self.clock())
                evicted = self._evict_for(0, keep=key)
            if evicted:
                self._free_memory(device)
            return model

    def unload(self, path: str | Path) -> int:
        """Drop every loaded copy of ``path`` (any device/dtype); returns how many were dropped."""
        with self._lock:
            keys = [k for k in self._entries if k[0] == str(path)]
            for k in keys:
                self._drop_locked(k)
        if keys:
            self._free_memory(keys[0][1])
        return len(keys)

    def unload_idle(self) -> list[str]:
        """Drop models unused for ``idle_s`` seconds; returns their paths."""
        now = self.clock()
        with self._lock:
            keys = [k for k, e in self._entries.items() if now - e.last_used >= self.idle_s]
            paths = [self._drop_locked(k) for k in keys]
        if keys:
            self._free_memory(keys[0][1])
        return paths

    def loaded(self) -> list[dict]:
        """What is loaded, most recently used first."""
        now = self.clock()
        with self._lock:
            entries = list(self._entries.values())
        return [{"path": e.path, "device": e.device, "dtype": e.dtype, "size_bytes": e.size,
                 "size": _fmt_bytes(e.size), "last_used": e.last_used, "idle_s": max(0.0, now - e.last_used)}
                for e in reversed(entries)]


# --------------------------------------------------------------------------------------------- rate limit


class RateLimiter:
    """At most ``per_minute`` messages per key (user or session) in any sliding 60-second window.

    ``per_minute`` 0 turns the limit off.
    """

    def __init__(self, per_minute: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 0:
            raise ValueError(f"per_minute must be 0 (no limit) or more, got {per_minute}")
        self.per_minute = per_minute
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._checks = 0

    def check(self, key: str) -> None:
        """Count one message for ``key``; raise ValueError when it would exceed the limit (not counted then)."""
        if self.per_minute == 0:
            return
        now = self.clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= self.window_s:
                hits.popleft()
            if len(hits) >= self.per_minute:
                wait = max(1, math.ceil(hits[0] + self.window_s - now))
                raise ValueError(f"rate limit: {self.per_minute} messages a minute; wait {wait} s")
            hits.append(now)
            self._checks += 1
            if self._checks % 256 == 0:  # forget keys that have gone quiet
                for k in [k for k, h in self._hits.items() if not h or now - h[-1] >= self.window_s]:
                    del self._hits[k]


# --------------------------------------------------------------------------------------------- direction


def _is_arabic_char(ch: str) -> bool:
    cp = ord(ch)
    return (0x0600 <= cp <= 0x06FF or 0x0750 <= cp <= 0x077F or 0x0870 <= cp <= 0x08FF
            or 0xFB50 <= cp <= 0xFDFF or 0xFE70 <= cp <= 0xFEFF or 0x10E60 <= cp <= 0x10E7F
            or 0x1EE00 <= cp <= 0x1EEFF)


def is_arabic(text: str, threshold: float = 0.3) -> bool:
    """True when at least ``threshold`` of the letters in ``text`` are Arabic-script letters."""
    letters = [ch for ch in text if ch.isalpha()]  # Arabic letters are alphabetic; harakat (Mn) are not
    if not letters:
        return False
    arabic = sum(1 for ch in letters if _is_arabic_char(ch))
    return arabic / len(letters) >= threshold


def text_direction(text: str) -> Literal["rtl", "ltr"]:
    """The direction to render a chat bubble in: ``rtl`` for (mostly or partly) Arabic text."""
    return "rtl" if is_arabic(text) else "ltr"


# --------------------------------------------------------------------------------------------- export


def _meta_lines(meta: dict) -> list[str]:
    lines = []
    for key, value in meta.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        lines.append(f"- **{key}**: {value}")
    return lines


def conversation_markdown(messages: list[dict], meta: dict | None = None) -> str:
    """The conversation as Markdown: a metadata list (model, settings, licence, …) and one section per message.

    Arabic messages are wrapped in ``<div dir="rtl">`` so renderers show them right-to-left.
    """
    meta = dict(meta or {})
    title = meta.get("model") or meta.get("title") or "conversation"
    out = [f"# Chat with {title}", ""]
    if meta:
        out += [*_meta_lines(meta), ""]
    for m in messages:
        role = str(m.get("role", "?"))
        content = str(m.get("content") or "")
        out.append(f"### {role.capitalize()}")
        out.append("")
        if text_direction(content) == "rtl":
            out += ['<div dir="rtl">', "", content, "", "</div>"]
        else:
            out.append(content)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def conversation_json(messages: list[dict], meta: dict | None = None) -> str:
    """The conversation as JSON ``{"meta": …, "messages": [{role, content, direction}]}`` (UTF-8, not escaped)."""
    data = {
        "meta": dict(meta or {}),
        "messages": [{"role": m.get("role"), "content": m.get("content") or "",
                      "direction": text_direction(str(m.get("content") or ""))} for m in messages],
    }
    return json.dumps(data, ensure_ascii=False, indent=2, default=str)
