"""Chat: live, streaming demos of one model, and an arena where two or three models answer side by side.

Models are loaded into this (the UI) process through a memory-budgeted cache; chat runs on the CPU unless
HALA_CHAT_DEVICE says otherwise, so it never takes a GPU from the jobs (see the README). The chat can also run
on a vLLM model server (a long-lived process per model, owned by this workbench process and kept between
messages and browser sessions; see hala_core.vllm_server) or on any OpenAI-compatible URL. Every reply is
escaped and shown as text; each bubble takes the direction of its text (Arabic right-to-left)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import gradio as gr

from db.chat import latest_conversation, record_vote, save_conversation, votes_of, win_rates
from db.session import read_scope, session_scope
from hala_core.engine import GenerationSettings
from hala_core.settings import Settings
from jobs.resolve import resolve_model_ref
from workbench.auth import REVIEW_ROLES, Caller, require
from workbench.ui import esc, model_choices

ENGINES = ("transformers", "vLLM server", "OpenAI-compatible URL")
EXAMPLES = ("ما هي عاصمة المملكة العربية السعودية؟", "اكتب قصيدة قصيرة عن البحر.",
            "اشرح الفرق بين الذكاء الاصطناعي وتعلّم الآلة بجملتين.", "ترجم إلى العربية: The weather is nice today.")
LETTERS = "ABC"

_cache = None
_limiter = None
_pool = None
_stops: dict[str, threading.Event] = {}
_lock = threading.Lock()


def cache():  # noqa: ANN201
    global _cache
    with _lock:
        if _cache is None:
            from hala_core.chat import ModelCache

            budget = float(os.environ.get("HALA_CHAT_MEMORY_GB", "4")) * 1024**3
            _cache = ModelCache(int(budget), idle_s=float(os.environ.get("HALA_CHAT_IDLE_S", "900")))
        return _cache


def vllm_pool(settings: Settings):  # noqa: ANN201
    """The vLLM servers of this workbench process (one at a time unless HALA_VLLM_MAX_SERVERS says more)."""
    global _pool
    with _lock:
        if _pool is None:
            from hala_core.vllm_server import VllmServerPool

            _pool = VllmServerPool(log_dir=settings.home / "vllm-servers")
        return _pool


def limiter():  # noqa: ANN201
    global _limiter
    with _lock:
        if _limiter is None:
            from hala_core.chat import RateLimiter

            _limiter = RateLimiter(int(os.environ.get("HALA_CHAT_RATE_PER_MIN", "30")))
        return _limiter


def _direction(text: str, fallback: str = "ltr") -> str:
    from hala_core.chat import text_direction

    return text_direction(text) if any(ch.isalpha() for ch in text) else fallback


def _answer_direction(text: str, prompt_dir: str) -> str:
    """An answer keeps the direction of the prompt it answers unless it is clearly in the other script, so a
    streaming bubble does not flip while its first words arrive."""
    from hala_core.chat import is_arabic

    if sum(ch.isalpha() for ch in text) < 20:
        return prompt_dir
    if prompt_dir == "rtl":
        return "rtl" if is_arabic(text, threshold=0.1) else "ltr"
    return "rtl" if is_arabic(text, threshold=0.6) else "ltr"


def render(messages: list[dict[str, str]], elem: str = "chat") -> str:
    """The conversation as bubbles: a message takes the direction of its text; an answer that of its prompt
    unless it is clearly in the other script; neutral text (digits, punctuation) follows the conversation."""
    parts, last_dir = [], "ltr"
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "user":
            d = last_dir = _direction(m["content"], last_dir)
        else:
            d = _answer_direction(m["content"], last_dir)
        parts.append(f'<div class="bubble {esc(m["role"])}" dir="{d}">{esc(m["content"]) or "…"}</div>')
    return f'<div class="chat-view" data-view="{esc(elem)}">{"".join(parts)}</div>'


def _settings(temp: float, top_p: float, max_new: float, rep: float) -> GenerationSettings:
    return GenerationSettings(temperature=float(temp), top_p=float(top_p), max_new_tokens=int(max_new),
                              repetition_penalty=float(rep))


def _load(settings: Settings, ref: str):  # noqa: ANN202
    if not ref:
        raise gr.Error("choose a model first")
    try:
        with read_scope(settings.db_url) as s:
            resolved = resolve_model_ref(s, settings, ref)
        if resolved.path is None:
            raise ValueError(f"{ref} is a hub id that is not downloaded, and no hub can be reached from here")
        cache().unload_idle()  # models nobody used for HALA_CHAT_IDLE_S seconds give their memory back
        return cache().get(str(resolved.path), os.environ.get("HALA_CHAT_DEVICE", "cpu"), "float32")
    except ValueError as e:
        raise gr.Error(f"model {ref!r} could not be loaded: {e}") from None


def _vllm_state() -> tuple[bool, str]:
    from hala_core.vllm_server import vllm_server_available

    return vllm_server_available()


def _backend(settings: Settings, ref: str, engine: str, url: str, url_model: str):  # noqa: ANN202
    """A generator: yields progress notes while the chat backend gets ready, returns it (``yield from``).

    transformers: the in-process model cache; vLLM server: a pooled server for the model (started on first
    use); OpenAI-compatible URL: a client of that endpoint. Errors are gr.Error (the vLLM log tail included)."""
    from hala_core.vllm_server import OpenAIChatClient, VllmServerError

    if engine == ENGINES[2]:
        if not (url or "").strip():
            raise gr.Error("enter the base URL of the OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1)")
        client = OpenAIChatClient(url.strip(), (url_model or "").strip())
        if not client.model:
            try:
                names = client.models()
            except ValueError as e:
                raise gr.Error(str(e)) from None
            if not names:
                raise gr.Error(f"{url} serves no model")
            client.model = names[0]
        return client
    if engine != ENGINES[1]:
        return _load(settings, ref)
    ok, reason = _vllm_state()
    if not ok:
        raise gr.Error(reason)
    path = _resolve_path(settings, ref)
    progress: list[str] = []
    result: dict[str, Any] = {}

    def start() -> None:
        try:
            result["server"] = vllm_pool(settings).get(
                path, "float32", name=ref, max_model_len=int(os.environ.get("HALA_VLLM_MAX_MODEL_LEN", "2048")),
                on_progress=lambda _s, msg: progress.append(msg))
        except Exception as e:  # noqa: BLE001 — shown to the user below
            result["error"] = e

    th = threading.Thread(target=start, name="hala-vllm-start", daemon=True)
    th.start()
    t0 = time.monotonic()
    while th.is_alive():
        th.join(0.5)
        yield progress[-1] if progress else f"starting vLLM server for {ref}… {time.monotonic() - t0:.0f} s"
    err = result.get("error")
    if isinstance(err, VllmServerError):
        head, _, tail = str(err).partition("\n")
        raise _ServerFailed(head, tail)
    if err is not None:
        raise gr.Error(f"model {ref!r} could not be served by vLLM: {err}") from None
    return result["server"].client()


class _ServerFailed(Exception):
    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.message, self.log_tail = message, log_tail


def _engine_info() -> str:
    ok, reason = _vllm_state()
    return "vLLM server: available" if ok else f"vLLM server: unavailable — {reason}"


def _resolve_path(settings: Settings, ref: str) -> str:
    if not ref:
        raise gr.Error("choose a model first")
    try:
        with read_scope(settings.db_url) as s:
            resolved = resolve_model_ref(s, settings, ref)
    except ValueError as e:
        raise gr.Error(f"model {ref!r} could not be found: {e}") from None
    if resolved.path is None:
        raise gr.Error(f"model {ref!r} is a hub id that is not downloaded, and no hub can be reached from here")
    return str(resolved.path)


def _stop_event(request: gr.Request) -> threading.Event:
    ev = threading.Event()
    _stops[request.session_hash or "local"] = ev
    return ev


def _who(settings: Settings, request: gr.Request) -> Caller:
    who = require(settings, request, REVIEW_ROLES, "chatting")
    try:
        limiter().check(who.name or request.session_hash or "local")
    except ValueError as e:
        raise gr.Error(str(e)) from None
    return who


def _with_user(history: list[dict[str, str]], system: str, text: str) -> list[dict[str, str]]:
    from hala_core.chat import validate_messages

    msgs = ([{"role": "system", "content": system.strip()}] if system and system.strip() else []) + \
        [m for m in history if m["role"] != "system"] + [{"role": "user", "content": text or ""}]
    try:
        return validate_messages(msgs)
    except ValueError as e:
        raise gr.Error(str(e)) from None


def build(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    with gr.Tabs():
        with gr.Tab("Chat"):
            _build_chat(demo, settings)
        with gr.Tab("Arena", id="arena") as arena_tab:
            _build_arena(demo, settings, arena_tab)


def _build_chat(demo: gr.Blocks, settings: Settings) -> None:
    choices = model_choices(settings)
    with gr.Row():
        model = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="model",
                            allow_custom_value=True, elem_id="chat-model")
        system = gr.Textbox("", label="system prompt", lines=1, elem_id="chat-system", elem_classes="bidi-input")
    with gr.Row():
        engine = gr.Radio(list(ENGINES), value=ENGINES[0], label="engine", info=_engine_info(), elem_id="chat-engine")
        url = gr.Textbox("", label="OpenAI-compatible base URL", placeholder="http://127.0.0.1:8000/v1",
                         visible=False, elem_id="chat-url")
        url_model = gr.Textbox("", label="model name on that server (empty: the first it serves)", visible=False,
                               elem_id="chat-url-model")
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            temp = gr.Slider(0, 2, value=0.7, step=0.05, label="temperature (0 = greedy)", elem_id="chat-temp")
            top_p = gr.Slider(0.05, 1, value=0.95, step=0.05, label="top-p")
            max_new = gr.Number(256, precision=0, label="max new tokens", elem_id="chat-max-new")
            rep = gr.Slider(1.0, 2.0, value=1.1, step=0.05, label="repetition penalty")
    view = gr.HTML(render([]), elem_id="chat-view")
    notice = gr.Markdown(elem_id="chat-notice")
    with gr.Row():
        text = gr.Textbox(placeholder="اكتب رسالتك هنا… / type a message", show_label=False, scale=5,
                          elem_id="chat-input", elem_classes="bidi-input", max_lines=8)
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
    with gr.Row():
        stop = gr.Button("Stop", elem_id="chat-stop")
        regen = gr.Button("Regenerate", elem_id="chat-regen")
        clear = gr.Button("Clear", elem_id="chat-clear")
        exp_json = gr.Button("Export JSON")
        exp_md = gr.Button("Export Markdown")
    export_file = gr.File(label="export", interactive=False, visible=False)
    with gr.Row():
        for ex in EXAMPLES:
            gr.Button(ex, size="sm").click(lambda e=ex: e, None, text, api_visibility="private")
    state = gr.State({"id": None, "messages": []})

    def stream(ref, sys_prompt, msgs, conv_id, gen, request, eng=ENGINES[0], base_url="", served=""):  # noqa: ANN001, ANN202
        yield render(msgs), "⏳ loading the model…", gr.update()
        ready = _backend(settings, ref, eng, base_url, served)
        try:
            while True:
                yield render(msgs), f"⏳ {next(ready)}", gr.update()
        except StopIteration as done:
            chat_model = done.value
        except _ServerFailed as e:
            yield render(msgs), f"❌ {e.message}\n\n```\n{e.log_tail}\n```", gr.update()
            raise gr.Error(e.message) from None
        stop_ev = _stop_event(request)
        answer = ""
        try:
            it = chat_model.stream(msgs, gen, stop_event=stop_ev)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        notes = " ".join(f"⚠️ {n}" for n in getattr(it, "notices", None) or chat_model.notices or [])
        if eng != ENGINES[0]:
            notes = (f"{eng}: {getattr(chat_model, 'base_url', '')} · " + notes).strip()
        try:
            for chunk in it:
                answer += chunk
                yield render([*msgs, {"role": "assistant", "content": answer}]), notes, gr.update()
        except RuntimeError as e:  # the model server failed mid-reply
            raise gr.Error(str(e)) from None
        finally:
            if hasattr(it, "close"):
                it.close()  # on Stop (cancel) too: a vLLM request is aborted when its HTTP response is closed
        full = [*msgs, {"role": "assistant", "content": answer}]
        stats = getattr(it, "stats", None) or {}
        if stats.get("tokens_per_s"):
            notes = (notes + f"  ·  {stats.get('tokens', 0)} tokens, {stats['tokens_per_s']:.0f} tok/s, "
                     f"first token after {stats.get('time_to_first_token_s') or 0:.2f}s"
                     + (" (stopped)" if stats.get("stopped") else "")).strip(" ·")
        with session_scope(settings.db_url) as s:
            cid = save_conversation(s, conv_id, getattr(request, "username", None), "chat", [ref], sys_prompt,
                                    gen.model_dump(), {ref: full})
        yield render(full), notes, {"id": cid, "messages": full}

    def on_send(ref, sys_prompt, msg, st, t, p, mx, rp, eng, base_url, served, request: gr.Request):  # noqa: ANN001, ANN202
        _who(settings, request)
        msgs = _with_user(st["messages"], sys_prompt, msg)
        yield from _also_clear(stream(ref, sys_prompt, msgs, st["id"], _settings(t, p, mx, rp), request,
                                      eng, base_url, served))

    def _also_clear(gen):  # noqa: ANN001, ANN202
        for view_html, note, new_state in gen:
            yield view_html, note, new_state, ""

    def on_regen(ref, sys_prompt, st, t, p, mx, rp, eng, base_url, served, request: gr.Request):  # noqa: ANN001, ANN202
        _who(settings, request)
        msgs = list(st["messages"])
        while msgs and msgs[-1]["role"] == "assistant":
            msgs.pop()
        if not msgs or msgs[-1]["role"] != "user":
            raise gr.Error("nothing to regenerate: send a message first")
        yield from _also_clear(stream(ref, sys_prompt, msgs, st["id"], _settings(t, p, mx, rp), request,
                                      eng, base_url, served))

    def on_engine(eng: str):  # noqa: ANN202
        ok, reason = _vllm_state()
        if eng == ENGINES[1] and not ok:
            return gr.update(value=ENGINES[0]), gr.update(visible=False), gr.update(visible=False), f"⚠️ {reason}"
        remote = eng == ENGINES[2]
        return gr.update(), gr.update(visible=remote), gr.update(visible=remote), ""

    def on_stop(request: gr.Request) -> str:
        ev = _stops.get(request.session_hash or "local")
        if ev:
            ev.set()
        return "stopped"

    def on_clear():  # noqa: ANN202
        return render([]), "", {"id": None, "messages": []}

    def on_export(kind: str, st: dict, ref: str):  # noqa: ANN202
        from hala_core.chat import conversation_json, conversation_markdown

        if not st["messages"]:
            raise gr.Error("nothing to export yet")
        meta = {"model": ref, "conversation": st["id"], "exported": time.strftime("%Y-%m-%d %H:%M:%S")}
        out = settings.reports_dir / f"chat-{st['id'] or 'unsaved'}.{'json' if kind == 'json' else 'md'}"
        out.write_text(conversation_json(st["messages"], meta) if kind == "json"
                       else conversation_markdown(st["messages"], meta), encoding="utf-8")
        return gr.update(value=str(out), visible=True)

    def on_load(request: gr.Request):  # noqa: ANN202
        try:
            require(settings, request, REVIEW_ROLES, "chatting")
        except gr.Error:
            return gr.update(), {"id": None, "messages": []}
        with read_scope(settings.db_url) as s:
            conv = latest_conversation(s, getattr(request, "username", None), "chat")
            if conv is None:
                return render([]), {"id": None, "messages": []}
            msgs = next(iter(conv.messages.values()), [])
            return render(msgs), {"id": conv.id, "messages": msgs}

    gen_inputs = [temp, top_p, max_new, rep, engine, url, url_model]
    engine.change(on_engine, engine, [engine, url, url_model, notice], api_visibility="private")
    send_ev = send.click(on_send, [model, system, text, state, *gen_inputs], [view, notice, state, text],
                         api_name="chat")
    submit_ev = text.submit(on_send, [model, system, text, state, *gen_inputs], [view, notice, state, text],
                            api_visibility="private")
    regen_ev = regen.click(on_regen, [model, system, state, *gen_inputs], [view, notice, state, text],
                           api_visibility="private")
    stop.click(on_stop, None, notice, cancels=[send_ev, submit_ev, regen_ev], api_visibility="private")
    clear.click(on_clear, None, [view, notice, state], api_visibility="private")
    exp_json.click(lambda st, ref: on_export("json", st, ref), [state, model], export_file, api_visibility="private")
    exp_md.click(lambda st, ref: on_export("md", st, ref), [state, model], export_file, api_visibility="private")
    demo.load(on_load, None, [view, state], api_visibility="private")


def _build_arena(demo: gr.Blocks, settings: Settings, tab: gr.Tab) -> None:
    choices = model_choices(settings)
    names = [c[1] for c in choices]
    gr.Markdown("Two or three models answer the same prompt, streaming side by side. Vote for the better answer; "
                "votes are kept and summarised as win rates per pair of models.")
    with gr.Row():
        pick = [gr.Dropdown(choices, value=names[i] if len(names) > i else None, allow_custom_value=True,
                            label=f"model {LETTERS[i]}" + (" (optional)" if i == 2 else ""),
                            elem_id=f"arena-model-{LETTERS[i].lower()}") for i in range(3)]
    with gr.Row():
        prompt = gr.Textbox(placeholder="اكتب سؤالاً… / a prompt for all models", show_label=False, scale=5,
                            elem_id="arena-input", elem_classes="bidi-input")
        go = gr.Button("Send to all", variant="primary", scale=1, elem_id="arena-send")
    with gr.Row():
        temp = gr.Slider(0, 2, value=0.7, step=0.05, label="temperature")
        max_new = gr.Number(128, precision=0, label="max new tokens", elem_id="arena-max-new")
    with gr.Row():
        views = [gr.HTML(render([]), elem_id=f"arena-view-{LETTERS[i].lower()}") for i in range(3)]
    with gr.Row():
        vote_btns = [gr.Button(f"{LETTERS[i]} is better", elem_id=f"arena-vote-{LETTERS[i].lower()}")
                     for i in range(3)]
        tie = gr.Button("Tie", elem_id="arena-vote-tie")
        bad = gr.Button("All bad", elem_id="arena-vote-bad")
    voted = gr.Markdown(elem_id="arena-voted")
    summary = gr.Dataframe(headers=["model A", "model B", "battles", "wins A", "wins B", "ties", "win rate A"],
                           interactive=False, elem_id="arena-summary")
    state = gr.State({"id": None, "models": [], "prompt": ""})

    def summary_rows() -> list[list[Any]]:
        with read_scope(settings.db_url) as s:
            return [[p["model_a"], p["model_b"], p["battles"], p["wins_a"], p["wins_b"], p["ties"], p["win_rate_a"]]
                    for p in win_rates(s)]

    def on_send(a, b, c, msg, t, mx, request: gr.Request):  # noqa: ANN001, ANN202
        _who(settings, request)
        refs = [r for r in (a, b, c) if r]
        if len(refs) < 2:
            raise gr.Error("choose at least two models for the arena")
        if len(set(refs)) != len(refs):
            raise gr.Error("choose different models: the same model twice tells nothing")
        msgs = _with_user([], "", msg)
        gen = GenerationSettings(temperature=float(t), top_p=0.95, max_new_tokens=int(mx), repetition_penalty=1.1)
        models = [_load(settings, r) for r in refs]
        stop_ev = _stop_event(request)
        answers = ["" for _ in refs]
        done = [False for _ in refs]
        errors: list[str] = []

        def run(i: int) -> None:
            try:
                for chunk in models[i].stream(msgs, gen, stop_event=stop_ev):
                    answers[i] += chunk
            except Exception as e:  # noqa: BLE001 — shown in that model's column, others go on
                errors.append(f"{refs[i]}: {e}")
            finally:
                done[i] = True

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(refs))]
        for th in threads:
            th.start()
        while not all(done):
            time.sleep(0.1)
            yield (*[render([*msgs, {"role": "assistant", "content": answers[i]}]) if i < len(refs) else render([])
                     for i in range(3)], "", gr.update(), gr.update())
        conv = {r: [*msgs, {"role": "assistant", "content": answers[i]}] for i, r in enumerate(refs)}
        with session_scope(settings.db_url) as s:
            cid = save_conversation(s, None, getattr(request, "username", None), "arena", refs, None,
                                    gen.model_dump(), conv)
        note = "; ".join(errors) if errors else "Which answer is better?"
        yield (*[render(conv[refs[i]]) if i < len(refs) else render([]) for i in range(3)], note,
               {"id": cid, "models": refs, "prompt": msg}, "")

    def vote(choice: str, st: dict, request: gr.Request):  # noqa: ANN202
        require(settings, request, REVIEW_ROLES, "voting")
        if not st.get("id"):
            raise gr.Error("send a prompt to the arena first")
        if choice in LETTERS:
            idx = LETTERS.index(choice)
            if idx >= len(st["models"]):
                raise gr.Error(f"there is no model {choice} in this round")
            winner = st["models"][idx]
        else:
            winner = choice
        try:
            with session_scope(settings.db_url) as s:
                record_vote(s, st["id"], getattr(request, "username", None), st["prompt"], st["models"], winner)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return f"✅ vote recorded: {winner}", summary_rows()

    def on_load(request: gr.Request):  # noqa: ANN202
        try:
            require(settings, request, REVIEW_ROLES, "the arena")
        except gr.Error:
            return (*[gr.update()] * 3, "", [], {"id": None, "models": [], "prompt": ""})
        with session_scope(settings.db_url) as s:
            conv = latest_conversation(s, getattr(request, "username", None), "arena")
            if conv is None:
                return (*[render([])] * 3, "", summary_rows(), {"id": None, "models": [], "prompt": ""})
            refs = list(conv.models)
            votes = votes_of(s, conv.id)
            msgs = [conv.messages.get(r, []) for r in refs]
            prompt_text = next((m["content"] for m in msgs[0] if m["role"] == "user"), "") if msgs else ""
        note = (f"your vote on this round: {votes[-1]['winner']}" if votes else "Which answer is better?")
        return (*[render(msgs[i]) if i < len(refs) else render([]) for i in range(3)], note, summary_rows(),
                {"id": conv.id, "models": refs, "prompt": prompt_text})

    go.click(on_send, [*pick, prompt, temp, max_new], [*views, voted, state, prompt], api_name="arena")
    def make_vote(choice: str):  # noqa: ANN202
        def handler(st: dict, request: gr.Request):  # noqa: ANN202
            return vote(choice, st, request)

        return handler

    for i, btn in enumerate(vote_btns):
        btn.click(make_vote(LETTERS[i]), state, [voted, summary], api_name=f"arena_vote_{LETTERS[i].lower()}")
    tie.click(make_vote("tie"), state, [voted, summary], api_visibility="private")
    bad.click(make_vote("all bad"), state, [voted, summary], api_visibility="private")
    demo.load(on_load, None, [*views, voted, summary, state], api_visibility="private")
    tab.select(lambda: summary_rows(), None, summary, api_visibility="private")
