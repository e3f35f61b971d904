"""Chat and arena in the browser: streaming, right-to-left bubbles, text-only rendering, votes that persist."""

from __future__ import annotations

import pytest

from tests.support.app_server import AppServer, add_user, make_workspace
from tests.ui.test_browser import login, open_tab, wait_text

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LAST_ANSWER = ("() => { const b = document.querySelectorAll('#chat-view .bubble.assistant');"
               " return b.length ? b[b.length - 1].innerText : null; }")


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_models_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("browser-chat")
    settings = make_workspace(root / "home", demo_models_dir)
    add_user(settings, "salma", "annotator", "salma-password")
    app = AppServer(settings, root / "server.log").start()
    yield app
    app.stop()


def test_arabic_chat_streams_into_a_right_to_left_bubble(server, page):
    login(page, server.url, "salma", "salma-password")
    open_tab(page, "Chat")
    page.get_by_text("Generation settings").click()
    page.locator("#chat-max-new input").fill("1500")
    page.locator("#chat-input textarea").fill("ما هي عاصمة مصر؟ اكتب جواباً طويلاً.")
    page.locator("#chat-send").click()
    page.wait_for_function(f"() => ({LAST_ANSWER})() !== null && ({LAST_ANSWER})().length > 5", timeout=60_000)
    first = len(page.evaluate(LAST_ANSWER))
    page.wait_for_timeout(700)
    second = len(page.evaluate(LAST_ANSWER))
    assert second > first > 0, "the answer grows while it streams"
    directions = page.evaluate("() => Array.from(document.querySelectorAll('#chat-view .bubble'))"
                               ".map(b => getComputedStyle(b).direction)")
    assert directions[0] == "rtl"  # the Arabic prompt
    assert directions[-1] == "rtl"  # the answer to it
    page.locator("#chat-stop").click()


def test_markup_in_a_message_is_shown_as_text(server, page):
    login(page, server.url, "salma", "salma-password")
    open_tab(page, "Chat")
    page.locator("#chat-clear").click()
    page.get_by_text("Generation settings").click()
    page.locator("#chat-max-new input").fill("4")
    page.locator("#chat-input textarea").fill("<script>window.__pwned = 1</script><b>bold?</b> مرحبا")
    page.locator("#chat-send").click()
    wait_text(page, "#chat-view", "<script>window.__pwned = 1</script>")
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("#chat-view script, #chat-view b").count() == 0


def test_arena_shows_two_answers_and_a_vote_survives_a_reload(server, page):
    login(page, server.url, "salma", "salma-password")
    open_tab(page, "Chat")
    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-max-new input").fill("16")
    page.locator("#arena-input textarea").fill("اكتب جملة عن القاهرة.")
    page.locator("#arena-send").click()
    wait_text(page, "#arena-voted", "Which answer is better?", timeout=60_000)
    for view in ("#arena-view-a", "#arena-view-b"):
        assert page.locator(f"{view} .bubble.assistant").count() == 1
    page.locator("#arena-vote-a").click()
    wait_text(page, "#arena-voted", "vote recorded: demo-lfm2-a")

    page.reload()
    open_tab(page, "Chat")
    page.get_by_role("tab", name="Arena").click()
    wait_text(page, "#arena-voted", "your vote on this round: demo-lfm2-a")
    summary = page.locator("#arena-summary").inner_text()
    assert "demo-lfm2-a" in summary and "demo-lfm2-b" in summary
