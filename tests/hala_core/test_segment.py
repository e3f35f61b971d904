"""Segmentation of fields into translatable pieces, protected spans, and the checks on the way back."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from hala_core.corpus import Piece
from hala_core.segment import (
    DEFAULT_MAX_TOKENS,
    MARKER,
    check_preserved,
    count_tokens,
    join,
    protect,
    protected_items,
    restore,
    segment,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ALPACA = DATA / "alpaca_5000" / "alpaca_5000.json"
NTREX_EN = DATA / "ntrex128_en_ar" / "newstest2019-src.eng.txt"
needs_alpaca = pytest.mark.skipif(not ALPACA.is_file(), reason="shared sample data (alpaca_5000) not present")
needs_ntrex = pytest.mark.skipif(not NTREX_EN.is_file(), reason="shared sample data (ntrex128_en_ar) not present")

EDGE_CASES = [
    "",
    " ",
    "\n",
    "\n\n\n",
    " \t \u00a0 \u3000 ",
    "Hello",
    "\n\nHello\n\n",
    "  Leading and trailing spaces.  ",
    "One.\n\nTwo.\n\n\n\nThree.",
    "Line one\nline two\n  indented line three",
    "```python\nprint('hi')\n```",
    "\n```\ncode only\n```\n",
    "Intro:\n```js\nconst a = `x`;\n```\nOutro.",
    "Before\n\n~~~\ntilde fence\n~~~\n\nAfter",
    "Unclosed:\n```\nstill code\n\nmore code",
    "````\nouter ``` not a close\n````\ntext",
    "Use ```inline triple``` in a line.",
    "مرحبا بكم في ورشة هلا. هذا نص عربي؟ نعم!\n\nفقرة ثانية ١٩٩٧.",
    "Windows\r\nline\r\n\r\nendings\r\n",
    "A literal ⟦1⟧ marker, a spaced ⟦ 2 ⟧ one and `code` too.",
    "⟦ ⟦1 ⟧⟧ ⟦12 `x` ⟧",
    "Mail me at jane.doe@example.com or visit https://example.org/a_(b)).",
    "{name} {{ user }} %s %(count)d $HOME ${PATH} <noinput> [Your Name]",
    "!!! ??? ...",
    "x" * 2000,
    ("word " * 600).strip(),
    "\u2028odd\u2029separators\x1c\x1d\x1e\x1f",
]


def rebuild(pieces: list[Piece]) -> str:
    return join([restore(p.text, p.spans)[0] for p in pieces], [p.sep for p in pieces])


def assert_well_formed(text: str, pieces: list[Piece]) -> None:
    assert rebuild(pieces) == text
    for p in pieces:
        if not p.verbatim:
            assert p.text.strip(), f"whitespace-only translatable piece in {text!r}"
        else:
            assert p.spans == {}
        assert p.sep.strip() == "", f"separator {p.sep!r} is not whitespace"
        assert restore(p.text, p.spans)[1] == []


@pytest.fixture(scope="module")
def alpaca_fields() -> list[str]:
    records = json.loads(ALPACA.read_text(encoding="utf-8"))
    return [r[k] for r in records for k in ("instruction", "input", "output")]


@needs_alpaca
def test_round_trip_on_every_alpaca_field(alpaca_fields):
    assert len(alpaca_fields) == 15000
    translatable = masked = 0
    for text in alpaca_fields:
        pieces = segment(text)
        assert_well_formed(text, pieces)
        for p in pieces:
            if not p.verbatim:
                translatable += 1
                masked += bool(p.spans)
                assert count_tokens(restore(p.text, p.spans)[0]) <= DEFAULT_MAX_TOKENS or " " not in p.text
    assert translatable > 10000
    assert masked > 50  # Alpaca has URLs, e-mail addresses, HTML tags and [Your Name] placeholders


@needs_alpaca
def test_round_trip_on_alpaca_with_small_budgets(alpaca_fields):
    for text in alpaca_fields[::7]:
        for budget in (1, 8, 40):
            pieces = segment(text, budget)
            assert_well_formed(text, pieces)
            for p in pieces:
                original = restore(p.text, p.spans)[0]
                if not p.verbatim and count_tokens(original) > budget:
                    # only a single unbreakable stretch (a word, or a protected span) may exceed the budget
                    assert len(p.text.split()) == 1 or "⟦" in p.text


@needs_alpaca
def test_segmenting_all_of_alpaca_is_fast(alpaca_fields):
    segment("warm up the compiled patterns")
    start = time.perf_counter()
    for text in alpaca_fields:
        segment(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"segmenting 15k fields took {elapsed:.2f}s"


@pytest.mark.parametrize("text", EDGE_CASES)
def test_round_trip_on_edge_cases(text):
    for budget in (1, 5, DEFAULT_MAX_TOKENS):
        assert_well_formed(text, segment(text, budget))


def test_round_trip_on_random_strings():
    rng = random.Random(20240917)
    alphabet = list("ab Z.!?؟…\n\n\t`~{}[]()<>%$@:/⟦⟧1٣ ") + ["```", "~~~", "http://x.io/", "www.", "{x}", "\r\n",
                                                             "مرحبا", "[Your Name]", "a@b.co", "⟦1⟧", "  "]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for budget in (1, 3, 12):
            assert_well_formed(text, segment(text, budget))


def test_empty_and_blank_fields():
    assert segment("") == []
    pieces = segment(" \n\t ")
    assert pieces == [Piece(" \n\t ", "", True)]


def test_leading_whitespace_is_a_verbatim_piece_and_trailing_is_a_separator():
    pieces = segment("\n\nHello there.\n")
    assert [(p.text, p.sep, p.verbatim) for p in pieces] == [("\n\n", "", True), ("Hello there.", "\n", False)]


def test_paragraphs_are_cut_at_blank_lines_and_never_merged():
    pieces = segment("First paragraph.\n\nSecond one.\n \n\nThird.")
    assert [p.text for p in pieces] == ["First paragraph.", "Second one.", "Third."]
    assert [p.sep for p in pieces] == ["\n\n", "\n \n\n", ""]
    # a single line break does not cut a short paragraph
    assert [p.text for p in segment("1. apples\n2. pears")] == ["1. apples\n2. pears"]


def test_fenced_code_blocks_are_verbatim_and_exact():
    block = "```python\ndef f(x):\n    return x * 2  # 42 `tick`\n```"
    text = f"Here is a function:\n{block}\n\nIt doubles ~~~ numbers."
    pieces = segment(text)
    assert [(p.text, p.verbatim) for p in pieces] == [
        ("Here is a function:", False), (block, True), ("It doubles ~~~ numbers.", False)]
    assert pieces[1].spans == {}
    tilde = "~~~~ text\nx = {name}\n~~~~"
    assert [(p.text, p.verbatim) for p in segment(f"Intro.\n{tilde}\nEnd.")][1] == (tilde, True)
    # an unclosed fence runs to the end of the field
    assert segment("Look:\n```\nopen code\n\nstill code")[-1] == Piece("```\nopen code\n\nstill code", "", True)


@needs_ntrex
def test_long_paragraph_is_cut_at_sentences_within_the_budget():
    lines = NTREX_EN.read_text(encoding="utf-8").splitlines()[:120]
    paragraph = " ".join(lines)
    assert count_tokens(paragraph) > 4 * DEFAULT_MAX_TOKENS
    for budget in (DEFAULT_MAX_TOKENS, 64):
        pieces = segment(paragraph, budget)
        assert_well_formed(paragraph, pieces)
        assert len(pieces) >= count_tokens(paragraph) // budget
        assert all(count_tokens(restore(p.text, p.spans)[0]) <= budget for p in pieces)
        assert all(p.sep == " " for p in pieces[:-1])
        # cuts fall after sentence ends, except where a single sentence had to be cut at whitespace
        ends = sum(restore(p.text, p.spans)[0].rstrip("\"'”’)").endswith((".", "?", "!")) for p in pieces[:-1])
        assert ends >= 0.8 * (len(pieces) - 1)


def test_sentences_are_packed_greedily_and_long_sentences_cut_at_whitespace():
    text = "One two three. Four five six. Seven eight nine."
    assert [p.text for p in segment(text, 8)] == ["One two three. Four five six.", "Seven eight nine."]
    long_sentence = " ".join(f"w{i}" for i in range(25))
    pieces = segment(long_sentence, 10)
    assert [len(p.text.split()) for p in pieces] == [10, 10, 5]
    assert segment("a " + "x" * 500 + " b", 1)[1].text == "x" * 500  # an over-long word is its own piece
    # a long paragraph is also cut at its line breaks
    listing = "\n".join(f"- item {i}" for i in range(40))
    assert all("\n" not in p.text for p in segment(listing, 3))


def test_custom_counter_is_used():
    text = "alpha beta gamma delta. epsilon zeta eta theta."
    words = segment(text, 4, count=lambda t: len(t.split()))
    assert [p.text for p in words] == ["alpha beta gamma delta.", "epsilon zeta eta theta."]
    assert len(segment(text, 4, count=len)) > 2  # characters: every piece is cut far smaller


def test_protected_spans_are_never_cut():
    text = "Run `pip install hala workbench now` then {{ user name }} please."
    pieces = segment(text, 2)
    assert "`pip install hala workbench now`" in [v for p in pieces for v in p.spans.values()]
    assert "{{ user name }}" in [v for p in pieces for v in p.spans.values()]
    assert rebuild(pieces) == text


@pytest.mark.parametrize(("text", "spans"), [
    ("Visit https://example.org/docs?a=1&b=2.", ["https://example.org/docs?a=1&b=2"]),
    ("(see www.example.com/page), then", ["www.example.com/page"]),
    ("Wiki: https://en.wikipedia.org/wiki/Python_(language).", ["https://en.wikipedia.org/wiki/Python_(language)"]),
    ("ftp://files.example.net/x.tar.gz, done", ["ftp://files.example.net/x.tar.gz"]),
    ("Write to jane.doe+tag@mail.example.co.uk.", ["jane.doe+tag@mail.example.co.uk"]),
    ("Call `sorted(xs, key=len)` here", ["`sorted(xs, key=len)`"]),
    ("Hi {name}, you owe {0} and {}", ["{name}", "{0}", "{}"]),
    ("Hello {{ user }}!", ["{{ user }}"]),
    ("Got %s items and %d errors: %(count)s", ["%s", "%d", "%(count)s"]),
    ("Path is $HOME and ${PATH}", ["$HOME", "${PATH}"]),
    ("Fill <name> and <company_name>", ["<name>", "<company_name>"]),
    ("Dear [Hiring Manager], from [Your Name] at [Company]", ["[Hiring Manager]", "[Your Name]", "[Company]"]),
])
def test_protect_masks_and_restore_puts_back(text, spans):
    masked, found = protect(text)
    assert list(found.values()) == spans
    assert list(found) == [MARKER.format(i) for i in range(1, len(spans) + 1)]
    for original in spans:
        assert original not in masked
    assert restore(masked, found) == (text, [])


@pytest.mark.parametrize("text", [
    "50% off, only $5 today", "The list [1, 2, 3] and x[i]", "Click [Read More](https://x.org)",
    "If a < b and c > d", "plain English sentence", "[lowercase words] stay",
])
def test_protect_leaves_ordinary_text_alone(text):
    masked, spans = protect(text)
    assert all(v.startswith("http") for v in spans.values())
    assert masked.replace(MARKER.format(1), "https://x.org") == text


def test_restore_tolerates_translator_spacing_and_reports_missing_markers():
    spans = {"⟦1⟧": "`x`", "⟦2⟧": "https://a.io", "⟦3⟧": "{name}"}
    text, missing = restore("استخدم ⟦ 1 ⟧ ثم ⟦٢⟧ و ⟦9⟧", spans)
    assert text == "استخدم `x` ثم https://a.io و ⟦9⟧"
    assert missing == ["⟦3⟧"]
    assert restore("no markers", spans)[1] == ["⟦1⟧", "⟦2⟧", "⟦3⟧"]
    assert restore("⟦1⟧ ⟦1⟧", {"⟦1⟧": "A"}) == ("A A", [])


def test_join_rejects_mismatched_lengths():
    assert join(["a", "b"], [" ", ""]) == "a b"
    with pytest.raises(ValueError, match="separators"):
        join(["a"], [])


def test_count_tokens():
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("مرحبا بالعالم؟") == 3


def test_protected_items_by_kind():
    items = protected_items("See `a` at https://x.org or a@b.io, {name}, 1,000 and ١٩٩٧ or 3.5; list 1,2")
    assert items == {"code": ["`a`"], "url": ["https://x.org"], "email": ["a@b.io"], "placeholder": ["{name}"],
                     "number": ["1000", "1997", "3.5", "1", "2"]}


def test_check_preserved_catches_lost_numbers_urls_code_and_placeholders():
    src = "In 1997, visit https://x.org with `x = 1` for {name}."
    assert check_preserved(src, "في عام 1997، زر https://x.org مع `x = 1` من أجل {name}.") == []
    assert check_preserved(src, "في عام، زر https://x.org مع `x = 1` من أجل {name}.") == ["number 1997 missing"]
    assert check_preserved(src, "في 1997 زر https://x.com مع `x = 1` {name}") == [
        "URL https://x.org altered or missing"]
    assert check_preserved(src, "في 1997 زر https://x.org من أجل") == [
        "code `x = 1` missing", "placeholder {name} missing"]
    assert check_preserved("Call 5 and 5.", "اتصل 5") == ["number 5 missing"]
    assert check_preserved("5, 5, 5 and 5", "5") == ["number 5 missing (3×)"]


def test_check_preserved_normalises_numbers():
    assert check_preserved("Founded in 1997 with 1,000 staff.", "تأسست عام ١٩٩٧ مع 1000 موظف.") == []
    assert check_preserved("It cost 3.5 million", "كلّف ٣٫٥ مليون") == []
    assert check_preserved("Over 300,000 people", "أكثر من 300 ألف شخص") == []
    assert check_preserved("76,000 hectares", "76.000 هكتار") == []
    assert check_preserved("at 04:00", "عند الساعة 4:00") == []
    assert check_preserved("the 21st century", "القرن الحادي والعشرين") == []  # ordinals may be written out
    assert check_preserved("Over 30,000 people", "أكثر من 300 ألف شخص") == ["number 30000 missing"]
