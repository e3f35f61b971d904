"""How the Chat tab renders a conversation: direction per bubble, markup escaped."""

from __future__ import annotations


def test_bubbles_take_the_direction_of_their_text_and_answers_that_of_their_prompt():
    from workbench.tabs.chat import render

    html = render([{"role": "user", "content": "ما هي عاصمة مصر؟"},
                   {"role": "assistant", "content": "Cairo القاهرة is the capital, عاصمة مصر"},
                   {"role": "user", "content": "Translate: good morning"},
                   {"role": "assistant", "content": "صباح الخير، صباح النور، أهلاً وسهلاً بكم جميعاً"},
                   {"role": "user", "content": "<script>alert(1)</script>"}])
    dirs = [part.split('dir="')[1][:3] for part in html.split('<div class="bubble')[1:]]
    assert dirs == ["rtl", "rtl", "ltr", "rtl", "ltr"]
    assert "<script>" not in html and "&lt;script&gt;" in html
