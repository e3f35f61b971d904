"""Cut a field into translatable pieces, and put the translated pieces back together.

A field is cut at paragraph boundaries (blank lines); a paragraph over the token budget is cut at sentence
ends and line breaks (consecutive sentences are packed greedily up to the budget), and a sentence still over
the budget at whitespace. Fenced code blocks (```` ``` ```` or ``~~~``) are never translated: they become
``verbatim`` pieces, exactly as written. Whitespace before the first piece becomes a verbatim piece of its own;
every other run of whitespace between pieces (and after the last one) is kept in ``Piece.sep``, so::

    join([restore(p.text, p.spans)[0] for p in pieces], [p.sep for p in pieces]) == text

holds for every text.

Inside a translatable piece, *protected spans* (inline code, URLs, e-mail addresses, template placeholders)
are replaced by markers ``⟦1⟧``, ``⟦2⟧``, … (:func:`protect`) that the translator is asked to keep, and put back
afterwards (:func:`restore`). Numbers are left for the translator to see, and checked on the way back
(:func:`check_preserved`), as are all protected spans.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator

from hala_core.corpus import Piece

MARKER = "⟦{}⟧"
DEFAULT_MAX_TOKENS = 256

_TOKEN = re.compile(r"\w+|[^\w\s]")

# --- protected spans ---------------------------------------------------------------------------------------
# URL characters (ASCII only, so Arabic glued to a URL is not swallowed); a URL may not end in punctuation
# that usually closes the sentence around it. Balanced parentheses (Wikipedia-style) belong to the URL.
_URL_CHAR = r"[A-Za-z0-9\-._~:/?#@!$&*+,;=%\[\]]"
_URL_END = r"[A-Za-z0-9\-_~/#@$&*+=%]"
_URL_PAREN = r"\([A-Za-z0-9\-._~:/?#@!$&*+,;=%]*\)"
_URL_BODY = rf"(?:{_URL_CHAR}|{_URL_PAREN})*(?:{_URL_END}|{_URL_PAREN})"
_PLACEHOLDERS = [
    r"\{\{[^{}\n]{1,100}\}\}",  # {{ name }}
    r"\{%[^{}\n]{1,100}%\}",  # {% tag %}
    # {name}, {0}, {}, {name.attr}, {0[key]}, {value:.2f}, {x!r}
    r"\{(?:[A-Za-z_][A-Za-z0-9_]*|\d+)?(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\]\s{}]+\])*(?:![rsa])?(?::[^{}\s]{0,20})?\}",
    r"%(?:\([A-Za-z_][A-Za-z0-9_]*\))?[-+0#]?\d*(?:\.\d+)?[sdifxXeEgGcr](?![A-Za-z0-9_])",  # %s %d %(name)s %5.2f
    r"\$\{[A-Za-z_][A-Za-z0-9_]*\}",  # ${VAR}
    r"\$[A-Z_][A-Z0-9_]*(?![A-Za-z0-9_])",  # $VAR
    r"</?[A-Za-z_][A-Za-z0-9_-]*>",  # <name>, </name>
    # [Your Name], [Company]: a capitalised ASCII phrase of up to four words; not an index (x[Key]) nor link text
    r"(?<![\w\]\)])\[[A-Z][A-Za-z'-]*(?: [A-Za-z][A-Za-z'-]*){0,3}\](?!\()",
]
_PROTECT = re.compile(
    r"(?P<marker>⟦\s*\d+\s*⟧)"  # a marker-like text already in the source is protected too (round trip)
    r"|(?P<code>`[^`\n]+`)"
    rf"|(?P<url>(?:(?i:https?|ftp)://|(?<![\w.@/-])(?i:www)\d{{0,3}}\.){_URL_BODY})"
    r"|(?P<email>(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-]))"
    rf"|(?P<placeholder>{'|'.join(_PLACEHOLDERS)})"
)
# Cheap pre-check: a text without any of these has nothing to protect.
_TRIGGER = re.compile(r"[`@{%$<\[⟦]|://|www", re.IGNORECASE)
_MARKER_RE = re.compile(r"⟦\s*(\d+)\s*⟧")

# --- numbers -------------------------------------------------------------------------------------------------
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹٫٬", "01234567890123456789.,")
_NUMBER = re.compile(r"[0-9]+(?:[.,،][0-9]+)*")
_THOUSANDS = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DOT_THOUSANDS = re.compile(r"[0-9]{1,3}(?:\.[0-9]{3})+")  # 76.000: thousands separated by dots (or a decimal)
# an ordinal (21st) or a decade (1990s) is often written out in words in a translation
_ORDINAL = re.compile(r"(?:st|nd|rd|th|s)(?![A-Za-z])", re.IGNORECASE)
# "300 ألف" is how Arabic writes 300,000: a number before a scale word also stands for its product
_SCALE = re.compile(r"\s?(?:(ألف|آلاف|الف|thousand)|(مليون|ملايين|million)|(مليار|مليارات|بليون|billion))",
                    re.IGNORECASE)

# --- structure -----------------------------------------------------------------------------------------------
_FENCE_OPEN = re.compile(r"^[^\S\n]*(`{3,}[^`\n]*|~{3,}[^\n]*)$", re.MULTILINE)
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
_NON_SPACE = re.compile(r"\S")
_ENDERS = ".!?؟…。"
_CLOSERS = "\"'”’»)]"
# A cut between sentences: whitespace after a sentence end (optionally followed by a closing quote/bracket),
# or any whitespace run holding a line break.
_SENTENCE_GAP = re.compile(
    rf"(?:(?<=[{_ENDERS}])|(?<=[{_ENDERS}][{re.escape(_CLOSERS)}]))\s+|[^\S\n]*\n\s*"
)
_WORD_GAP = re.compile(r"\s+")

ITEM_KINDS = ("code", "url", "email", "placeholder", "number")


def count_tokens(text: str) -> int:
    """A fast token count: words (``\\w+``) plus single punctuation characters."""
    return len(_TOKEN.findall(text))


def protect(text: str) -> tuple[str, dict[str, str]]:
    """Replace protected spans by markers ``⟦1⟧``, ``⟦2⟧``, …; return ``(masked, {marker: original})``."""
    if not _TRIGGER.search(text):
        return text, {}
    spans: dict[str, str] = {}

    def mask(m: re.Match) -> str:
        key = MARKER.format(len(spans) + 1)
        spans[key] = m.group(0)
        return key

    masked = _PROTECT.sub(mask, text)
    return masked, spans


def restore(text: str, spans: dict[str, str]) -> tuple[str, list[str]]:
    """Put the originals back in place of their markers (spaces inside a marker, ``⟦ 1 ⟧``, and Arabic-Indic
    digits are tolerated); return ``(text, markers of spans that were not found in text)``."""
    if not spans:
        return text, []
    found: set[str] = set()

    def put_back(m: re.Match) -> str:
        key = MARKER.format(int(m.group(1)))
        if key in spans:
            found.add(key)
            return spans[key]
        return m.group(0)

    out = _MARKER_RE.sub(put_back, text) if "⟦" in text else text
    return out, [k for k in spans if k not in found]


def join(texts: list[str], seps: list[str]) -> str:
    """``texts[i] + seps[i]`` for every ``i``: a field back from its pieces."""
    if len(texts) != len(seps):
        raise ValueError(f"join needs as many separators as texts ({len(texts)} texts, {len(seps)} separators)")
    return "".join(t + s for t, s in zip(texts, seps, strict=True))


def _fences(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each fenced code block: from the opening fence to the end of the closing fence line
    (an unclosed fence runs to the end of the text, as in CommonMark)."""
    pos = 0
    while True:
        m = _FENCE_OPEN.search(text, pos)
        if m is None:
            return
        fence = m.group(1)
        char = fence[0]
        size = len(fence) - len(fence.lstrip(char))
        closing = re.compile(rf"^[^\S\n]*{re.escape(char)}{{{size},}}[^\S\n]*$", re.MULTILINE)
        c = closing.search(text, m.end() + 1) if m.end() < len(text) else None
        end = c.end() if c else len(text)
        end = len(text[:end].rstrip())
        yield m.start(1), end
        pos = end


def _strip(text: str, start: int, end: int) -> tuple[int, int] | None:
    m = _NON_SPACE.search(text, start, end)
    if m is None:
        return None
    s = m.start()
    e = end
    while e > s + 1 and text[e - 1].isspace():
        e -= 1
    return s, e


def _protected_intervals(text: str, start: int, end: int) -> tuple[list[int], list[int]]:
    starts: list[int] = []
    ends: list[int] = []
    if _TRIGGER.search(text, start, end):
        for m in _PROTECT.finditer(text, start, end):
            starts.append(m.start())
            ends.append(m.end())
    return starts, ends


def _parts(text: str, start: int, end: int, gap: re.Pattern, guard: tuple[list[int], list[int]]):
    """Content spans of text[start:end] between the gaps that ``gap`` finds, never cutting a protected span."""
    starts, ends = guard
    out: list[tuple[int, int]] = []
    pos = start
    for m in gap.finditer(text, start, end):
        if m.start() == start or m.end() == end:
            continue
        i = bisect_right(starts, m.start()) - 1
        if i >= 0 and ends[i] > m.start():  # inside a protected span
            continue
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, end))
    return out


def _pack(text: str, parts: list[tuple[int, int]], budget: int, count: Callable[[str], int],
          additive: bool) -> list[tuple[int, int, bool]]:
    """Greedily join consecutive parts while the joined text fits the budget: ``(start, end, fits)``."""
    out: list[tuple[int, int, bool]] = []
    gs = ge = -1
    gc = 0
    for s, e in parts:
        c = count(text[s:e])
        if gs >= 0:
            nc = gc + c if additive else count(text[gs:e])
            if nc <= budget:
                ge, gc = e, nc
                continue
            out.append((gs, ge, True))
            gs = -1
        if c <= budget:
            gs, ge, gc = s, e, c
        else:
            out.append((s, e, False))
    if gs >= 0:
        out.append((gs, ge, True))
    return out


def _split_long(text: str, start: int, end: int, budget: int, count: Callable[[str], int],
                additive: bool) -> list[tuple[int, int]]:
    guard = _protected_intervals(text, start, end)
    units: list[tuple[int, int]] = []
    for s, e, fits in _pack(text, _parts(text, start, end, _SENTENCE_GAP, guard), budget, count, additive):
        if fits:
            units.append((s, e))
        else:  # one sentence over the budget: cut at whitespace (a single over-long word stays whole)
            units.extend((ws, we) for ws, we, _ in
                         _pack(text, _parts(text, s, e, _WORD_GAP, guard), budget, count, additive))
    return units


def _prose(text: str, start: int, end: int, budget: int, count: Callable[[str], int], additive: bool,
           units: list[tuple[int, int, bool]]) -> None:
    """Append the translatable units of text[start:end] (no fenced code inside)."""
    bounds: list[tuple[int, int]] = []
    pos = start
    if text.find("\n", start, end) >= 0:
        for m in _BLANK_LINE.finditer(text, start, end):
            bounds.append((pos, m.start()))
            pos = m.end()
    bounds.append((pos, end))
    for bs, be in bounds:
        span = _strip(text, bs, be)
        if span is None:
            continue
        s, e = span
        # count() is at most the number of characters for the default counter: skip it for short paragraphs
        if (additive and e - s <= budget) or count(text[s:e]) <= budget:
            units.append((s, e, False))
        else:
            units.extend((us, ue, False) for us, ue in _split_long(text, s, e, budget, count, additive))


def segment(text: str, max_tokens: int = DEFAULT_MAX_TOKENS, count: Callable[[str], int] | None = None) -> list[Piece]:
    """Cut ``text`` into pieces of at most ``max_tokens`` tokens (by ``count``, default :func:`count_tokens`).

    One paragraph gives at least one piece (paragraphs are never merged); fenced code blocks are verbatim pieces;
    whitespace before the first piece is a verbatim piece; a single word over the budget is a piece of its own.
    """
    if not text:
        return []
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    counter = count or count_tokens
    additive = counter is count_tokens  # token counts add up across whitespace for the default counter
    units: list[tuple[int, int, bool]] = []
    pos = 0
    if "```" in text or "~~~" in text:
        for fs, fe in _fences(text):
            _prose(text, pos, fs, max_tokens, counter, additive, units)
            units.append((fs, fe, True))
            pos = fe
    _prose(text, pos, len(text), max_tokens, counter, additive, units)
    if not units:
        return [Piece(text, "", True)]
    pieces: list[Piece] = []
    if units[0][0] > 0:
        pieces.append(Piece(text[:units[0][0]], "", True))
    for i, (s, e, verbatim) in enumerate(units):
        sep = text[e:units[i + 1][0]] if i + 1 < len(units) else text[e:]
        if verbatim:
            pieces.append(Piece(text[s:e], sep, True))
        else:
            masked, spans = protect(text[s:e])
            pieces.append(Piece(masked, sep, False, spans))
    return pieces


# --- checks on the way back ----------------------------------------------------------------------------------

def _canonical(tok: str) -> str:
    """``0042.50`` → ``42.50``: leading zeros of the whole part dropped (``04:00`` and ``4:00`` agree)."""
    whole, dot, frac = tok.partition(".")
    return (whole.lstrip("0") or "0") + dot + frac


def _scaled(value: str, power: int) -> str | None:
    from decimal import Decimal, InvalidOperation

    try:
        n = Decimal(value) * (10 ** power)
    except InvalidOperation:
        return None
    return str(int(n)) if n == n.to_integral_value() else None


def _number_items(text: str) -> list[tuple[str, frozenset[str], bool]]:
    """The numbers of a text as ``(canonical, accepted variants, optional)``: Arabic-Indic digits and separators
    normalised, thousands separators dropped (``1,000`` → ``1000``); ``1,2,3`` is three numbers. Variants: a
    dot-grouped ``76.000`` may mean 76000, ``300`` before ``ألف``/``thousand`` (million, billion) also means
    300000. Ordinals and decades (``21st``, ``1990s``) are optional: often written out in a translation."""
    norm = text.translate(_DIGITS)
    out: list[tuple[str, frozenset[str], bool]] = []
    for m in _NUMBER.finditer(norm):
        optional = bool(_ORDINAL.match(norm, m.end()))
        tok = m.group(0).replace("،", ",")
        if "," not in tok:
            toks = [tok]
        elif _THOUSANDS.fullmatch(tok):
            toks = [tok.replace(",", "")]
        else:  # a list such as 1,2,3
            toks = tok.split(",")
        scale = _SCALE.match(norm, m.end()) if len(toks) == 1 else None
        for t in toks:
            value = _canonical(t)
            variants = {value}
            if _DOT_THOUSANDS.fullmatch(t):
                variants.add(_canonical(t.replace(".", "")))
            if scale is not None:
                power = 3 * (scale.lastindex or 1)
                scaled = _scaled(value, power)
                if scaled:
                    variants.add(scaled)
            out.append((value, frozenset(variants), optional))
    return out


def without_protected(text: str, fill: str = " ") -> str:
    """The text with every protected span replaced by ``fill`` (what is left for the translator to translate)."""
    return _PROTECT.sub(fill, text) if _TRIGGER.search(text) else text


def _split_items(text: str) -> tuple[dict[str, list[str]], str]:
    """The protected spans of a text by kind, and the text left around them."""
    items: dict[str, list[str]] = {k: [] for k in ITEM_KINDS}
    if not _TRIGGER.search(text):
        return items, text
    chunks: list[str] = []
    pos = 0
    for m in _PROTECT.finditer(text):
        kind = m.lastgroup or "placeholder"
        items["placeholder" if kind == "marker" else kind].append(m.group(0))
        chunks.append(text[pos:m.start()])
        pos = m.end()
    chunks.append(text[pos:])
    return items, " ".join(chunks)


def protected_items(text: str) -> dict[str, list[str]]:
    """The protected spans and the numbers of a text, by kind (see :data:`ITEM_KINDS`), in order of appearance.
    Numbers are those outside the other spans, normalised (``١٩٩٧`` → ``1997``, ``1,000`` → ``1000``)."""
    items, rest = _split_items(text)
    items["number"] = [value for value, _, _ in _number_items(rest)]
    return items


_LABELS = {
    "code": ("code", "missing"),
    "url": ("URL", "altered or missing"),
    "email": ("e-mail address", "altered or missing"),
    "placeholder": ("placeholder", "missing"),
    "number": ("number", "missing"),
}


def _lost_numbers(source_rest: str, output_rest: str) -> list[str]:
    """Source numbers (not optional) that no output number accounts for: an exact match first, then a
    variant (``76.000`` for 76000, ``300 ألف`` for 300000)."""
    wanted = [(v, var) for v, var, optional in _number_items(source_rest) if not optional]
    if not wanted:
        return []
    pool = _number_items(output_rest)
    free = Counter(v for v, _, _ in pool)
    unmatched: list[tuple[str, frozenset[str]]] = []
    for value, variants in wanted:
        if free[value] > 0:
            free[value] -= 1
        else:
            unmatched.append((value, variants))
    by_variant: dict[str, set[str]] = {}
    if unmatched:
        for other, other_variants, _ in pool:
            for v in other_variants:
                by_variant.setdefault(v, set()).add(other)
    lost: list[str] = []
    for value, variants in unmatched:
        match = next((o for v in sorted(variants) for o in sorted(by_variant.get(v, ())) if free[o] > 0), None)
        if match is None:
            lost.append(value)
        else:
            free[match] -= 1
    return lost


def check_preserved(source: str, output: str) -> list[str]:
    """What of the source's protected spans and numbers the output lost, in words (``[]`` when all kept):
    e.g. ``"number 1997 missing"``, ``"URL https://x.org altered or missing"``. Numbers are compared after
    normalisation (``١٩٩٧`` == ``1997``, ``1,000`` == ``1000``; see :func:`_number_items`)."""
    src, src_rest = _split_items(source)
    out, out_rest = _split_items(output)
    lost: dict[str, list[str]] = {k: list((Counter(src[k]) - Counter(out[k])).elements()) for k in ITEM_KINDS}
    lost["number"] = _lost_numbers(src_rest, out_rest)
    problems: list[str] = []
    for kind in ITEM_KINDS:
        label, verb = _LABELS[kind]
        for item, n in Counter(lost[kind]).items():
            problems.append(f"{label} {item} {verb}" + (f" ({n}×)" if n > 1 else ""))
    return problems
