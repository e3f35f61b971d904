"""The shapes a corpus takes between reading a file and storing it: records, their fields, and segments.

A *record* is one row of an instruction set (an Alpaca triple, a ShareGPT / ``messages`` conversation, or one
aligned pair of a parallel file). A record's *fields* are its texts in order (instruction, input, output, or
the turns of a conversation). Each field is cut into *segments* (``hala_core.segment``): the units that get
translated, scored by the filters and reviewed; export joins them back into fields and records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Record shapes: how a record's fields map back onto a conversation on export.
SHAPES = ("alpaca", "chat", "pair")
ROLES = ("system", "user", "assistant")
LANGS = ("en", "ar")


@dataclass
class Field:
    """One text of a record: ``name`` is the Alpaca field (``instruction``/``input``/``output``), ``turn`` for a
    conversation turn or ``text`` for a parallel line; ``role`` is its chat role; ``reference`` the aligned
    text in the other language, when the corpus has one."""

    name: str
    role: str
    text: str
    reference: str | None = None


@dataclass
class Record:
    """One row of a corpus. ``line`` is where it came from (1-based line of a JSONL/CSV file, or the 1-based
    index in a JSON array / dataset); ``meta`` keeps the source's other keys (ids, categories, …)."""

    line: int
    shape: str
    fields: list[Field]
    meta: dict = field(default_factory=dict)


@dataclass
class Problem:
    """A record that could not be read: where and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class Piece:
    """One segment of a field.

    ``text`` is what the translator sees: protected spans (inline code, URLs, e-mail addresses, template
    placeholders) replaced by markers such as ``⟦1⟧``, recorded in ``spans`` (marker → original text).
    ``sep`` is the exact text that followed the piece in the original field (``""`` after the last one), so
    ``join`` rebuilds the field. ``verbatim`` pieces (fenced code blocks, whitespace) are copied, never translated.
    """

    text: str
    sep: str = ""
    verbatim: bool = False
    spans: dict[str, str] = field(default_factory=dict)


def content_hash(record: Record) -> str:
    """A fingerprint of a record's texts (roles and whitespace-normalised text) for duplicate detection."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for f in record.fields:
        h.update(f.role.encode())
        h.update(b"\x1e")
        h.update(" ".join(f.text.split()).encode())
        h.update(b"\x1f")
    return h.hexdigest()


@dataclass
class PlannedRow:
    """A record ready to store: its fingerprint and, per field, the pieces it was cut into."""

    record: Record
    content_hash: str
    fields: list[tuple[Field, list[Piece]]]


def plan_rows(records: list[Record], max_tokens: int, count=None) -> list[PlannedRow]:  # noqa: ANN001
    """Cut every field of every record into pieces (``hala_core.segment``). Parallel lines (fields with a
    reference) stay one piece each, so the reference keeps lining up with its source."""
    from hala_core.segment import protect, segment

    out: list[PlannedRow] = []
    for rec in records:
        fields: list[tuple[Field, list[Piece]]] = []
        for f in rec.fields:
            if f.reference is not None:
                masked, spans = protect(f.text)
                pieces = [Piece(masked, "", False, spans)] if f.text else []
            else:
                pieces = segment(f.text, max_tokens, count)
            fields.append((f, pieces))
        out.append(PlannedRow(rec, content_hash(rec), fields))
    return out
