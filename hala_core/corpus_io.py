"""Reading instruction sets and parallel corpora into :class:`~hala_core.corpus.Record` lists.

Formats (:data:`FORMATS`):

- ``alpaca`` / ``sharegpt`` / ``messages``: a JSON array or JSONL file of objects
  (``{instruction, input, output}``, ``{conversations: [{from, value}]}``, ``{messages: [{role, content}]}``);
- ``csv`` / ``tsv``: a header row, then one record per row (Alpaca columns, or ``en``/``ar`` or
  ``source``/``target`` columns for a parallel corpus);
- ``parquet``: a Parquet file whose columns look like one of the JSON shapes;
- ``hf``: a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``);
- ``parallel``: two line-aligned plain-text files, a folder holding NTREX-128, or a two-column TSV (en, ar);
- ``hub``: a dataset id ``owner/name`` fetched with ``datasets.load_dataset`` (needs a reachable hub).

A bad record is a :class:`~hala_core.corpus.Problem` with its line number: with ``on_error="abort"`` the first
one raises ``ValueError``, with ``on_error="skip"`` it is collected and reading goes on. ``datasets`` and
``pyarrow`` are imported only when a format needs them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hala_core.corpus import LANGS, Field, Problem, Record

FORMATS = ("alpaca", "sharegpt", "messages", "csv", "tsv", "parquet", "hf", "parallel", "hub")
MAX_FIELD_CHARS = 100_000

# Our field names that a mapping may point at other source keys / columns.
MAPPING_FIELDS = (
    "instruction", "input", "output",            # alpaca
    "conversations", "from", "value",            # sharegpt
    "messages", "role", "content",               # messages
    "en", "ar", "source", "target",              # parallel pairs in a table
)

NTREX_FILES = {"en": "newstest2019-src.eng.txt", "ar": "newstest2019-ref.arb.txt"}
NTREX_DOCUMENT_IDS = "DOCUMENT_IDS.tsv"
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "model": "assistant", "system": "system"}
MESSAGE_ROLES = ("system", "user", "assistant")

_JSON_SHAPES_HELP = ("accepted shapes: alpaca {instruction, input, output}; sharegpt {conversations: [{from, value}]}; "
                     "messages {messages: [{role, content}]}")
_MAP_HELP = "pass a mapping such as --map instruction=COL --map output=COL (mapping={'instruction': 'COL', ...})"
_SKIP_HINT = "pass on_error='skip' to skip bad records"
_PAIR_HEADERS = {"en", "ar", "english", "arabic", "source", "target", "src", "tgt", "ref"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DATA_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".tab", ".parquet", ".pq", ".txt", ".arrow"}
_HUB_CONNECT_TIMEOUT_S = 3.0


@dataclass
class ReadResult:
    """What :func:`read_corpus` read: the records, the skipped ones, and where they came from."""

    format: str
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    total: int = 0
    licence: str | None = None
    source: str = ""


class _Bad(Exception):
    """A record that cannot be read; becomes a Problem (or aborts) in the collector."""


class _Collector:
    """Gathers records and problems, applies ``on_error`` and ``limit``."""

    def __init__(self, name: str, on_error: str, limit: int | None):
        self.name = name
        self.abort = on_error == "abort"
        self.limit = limit
        self.records: list[Record] = []
        self.problems: list[Problem] = []
        self.total = 0

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.records) >= self.limit

    def add(self, record: Record) -> None:
        self.total += 1
        self.records.append(record)

    def problem(self, line: int, message: str) -> None:
        self.total += 1
        if self.abort:
            raise ValueError(f"{self.name}: line {line}: {message}; {_SKIP_HINT}")
        self.problems.append(Problem(line, message))


# --------------------------------------------------------------------------------------------------- helpers


def parse_mapping(items: list[str] | str | dict[str, str] | None) -> dict[str, str]:
    """``["instruction=question", "output=answer"]`` or ``"instruction=question, output=answer"`` → a dict
    from our field name to the source key / column. Raises ``ValueError`` naming the bad item."""
    if items is None:
        return {}
    if isinstance(items, dict):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        if isinstance(items, str):
            items = [items]
        pairs = []
        for item in items:
            for part in str(item).split(","):
                part = part.strip()
                if not part:
                    continue
                key, sep, value = part.partition("=")
                key, value = key.strip(), value.strip()
                if not sep or not key or not value:
                    raise ValueError(f"bad mapping item {part!r}: expected FIELD=COLUMN, e.g. instruction=question")
                pairs.append((key, value))
    mapping: dict[str, str] = {}
    for key, value in pairs:
        if key not in MAPPING_FIELDS:
            raise ValueError(f"bad mapping item {key}={value}: unknown field {key!r}; "
                             f"fields that can be mapped: {', '.join(MAPPING_FIELDS)}")
        if key in mapping and mapping[key] != value:
            raise ValueError(f"bad mapping: field {key!r} is mapped twice ({mapping[key]!r} and {value!r})")
        mapping[key] = value
    return mapping


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _text(value: Any, label: str, max_chars: int) -> str:
    """A field's text: numbers become strings, ``\\r\\n`` becomes ``\\n``, whitespace-only becomes ``""``."""
    if type(value) is not str:
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(f"{label} is {_kind(value)}, expected text")
        value = str(value)
    if "\r" in value:
        value = value.replace("\r\n", "\n")
    if len(value) > max_chars:
        raise _Bad(f"{label} has {len(value):,} characters; the limit is {max_chars:,} "
                   "(split the record or raise max_field_chars)")
    if value and value.isspace():
        return ""
    return value


def _keys_found(obj: dict) -> str:
    keys = [str(k) for k in obj]
    shown = ", ".join(keys[:20]) + (f", … ({len(keys)} in all)" if len(keys) > 20 else "")
    return shown or "none"


def _read_text(path: Path, encoding: str | None) -> str:
    """The file's text: BOMs handled, strict UTF-8 by default, ``\\r\\n`` → ``\\n``; clear errors."""
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a file")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path} is empty")
    if encoding:
        try:
            text = data.decode(encoding)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {encoding!r}") from exc
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise ValueError(f"{path} could not be decoded as {encoding} (invalid byte 0x{data[exc.start]:02x} "
                             f"at line {line}); check the file's encoding") from None
        if text.startswith("\ufeff"):
            text = text[1:]
    elif data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        text = data.decode("utf-32")
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16")
    else:
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise ValueError(f"{path} is not UTF-8 (invalid byte 0x{data[exc.start]:02x} at line {line}); re-save it "
                             "as UTF-8 or pass encoding='cp1256' (Windows Arabic) / the file's encoding") from None
        if b"\x00" in data[:4096]:
            raise ValueError(f"{path} holds NUL bytes: it looks like UTF-16 without a byte-order mark; re-save it as "
                             "UTF-8 or pass encoding='utf-16-le' / the file's encoding")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text.strip():
        raise ValueError(f"{path} is empty")
    return text


def _looks_like_hub_id(source: str | Path) -> bool:
    text = str(source)
    if not _HUB_ID.match(text) or Path(text).exists():
        return False
    if Path(text).suffix.lower() in _DATA_SUFFIXES or Path(text.split("/")[0]).is_dir():
        return False  # a missing local file, not a hub id
    return True


def _has_ntrex(folder: Path) -> bool:
    return all((folder / name).is_file() for name in NTREX_FILES.values())


def _base_kind(path: Path) -> str:
    """Format from the path alone: a format name, or ``"json"`` when the content must be sniffed."""
    if not path.exists():
        if _looks_like_hub_id(path):
            return "hub"
        raise ValueError(f"{path} does not exist")
    if path.is_dir():
        if _has_ntrex(path):
            return "parallel"
        if any((path / marker).is_file() for marker in HF_MARKERS):
            return "hf"
        raise ValueError(f"cannot tell the format of folder {path}: expected a dataset saved with save_to_disk "
                         f"({', '.join(HF_MARKERS)}) or NTREX-128 ({', '.join(NTREX_FILES.values())})")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".json", ".jsonl", ".ndjson"):
        return "json"
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    with path.open("rb") as fh:
        head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"[", b"{"):
        return "json"
    if suffix == ".txt":
        raise ValueError(f"cannot tell the format of {path}: a plain-text file is one side of a parallel corpus; "
                         "pass format='parallel' and reference=OTHER_FILE")
    raise ValueError(f"cannot tell the format of {path} (suffix {suffix or 'none'!r}); pass format= one of "
                     f"{', '.join(FORMATS)}")


# ------------------------------------------------------------------------------------------ row → record


def _shape_from_keys(keys: Iterable[str], mapping: dict[str, str], allow_pair: bool) -> str | None:
    """The record shape that a source's keys (or columns) fit; a mapping's fields decide first."""
    keys = set(keys)
    if any(k in mapping for k in ("conversations", "from", "value")):
        return "sharegpt"
    if any(k in mapping for k in ("messages", "role", "content")):
        return "messages"
    if any(k in mapping for k in ("instruction", "input", "output")):
        return "alpaca"
    if allow_pair and any(k in mapping for k in ("en", "ar", "source", "target")):
        return "pair"
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "messages"
    if "instruction" in keys:
        return "alpaca"
    if allow_pair and ({"en", "ar"} <= keys or {"source", "target"} <= keys):
        return "pair"
    return None


def _pair_columns(keys: Iterable[str], mapping: dict[str, str], source_lang: str) -> tuple[str, str]:
    """(text column, reference column) of a table of pairs."""
    keys = set(keys)
    other = "ar" if source_lang == "en" else "en"
    if "en" in mapping or "ar" in mapping:
        return mapping.get(source_lang, source_lang), mapping.get(other, other)
    if "source" in mapping or "target" in mapping:
        return mapping.get("source", "source"), mapping.get("target", "target")
    if {"en", "ar"} <= keys:
        return source_lang, other
    return "source", "target"


def _row_reader(shape: str, mapping: dict[str, str], max_chars: int,
                source_lang: str, columns: Iterable[str] = ()) -> Callable[[Any, int], Record | None]:
    """A function turning one source object into a Record (``None``: silently skipped); raises ``_Bad``."""
    if shape == "alpaca":
        ik, nk, ok = (mapping.get(n, n) for n in ("instruction", "input", "output"))
        used = {ik, nk, ok}
        i_label, n_label, o_label = (f"field {n!r}" + (f" (from {k!r})" if k != n else "")
                                     for n, k in (("instruction", ik), ("input", nk), ("output", ok)))

        def missing(name: str, key: str, obj: dict) -> _Bad:
            mapped = f"mapped to {name}; " if key != name else ""
            return _Bad(f"missing field {key!r} ({mapped}an Alpaca record needs instruction and output; "
                        f"keys found: {_keys_found(obj)})")

        def alpaca(obj: Any, line: int) -> Record:
            if type(obj) is not dict:
                raise _Bad(f"expected an object with instruction/input/output, got {_kind(obj)}")
            if ik not in obj:
                raise missing("instruction", ik, obj)
            if ok not in obj:
                raise missing("output", ok, obj)
            instruction = _text(obj[ik], i_label, max_chars)
            if not instruction:
                raise _Bad(f"{i_label} is empty")
            out_value = obj[ok]
            if out_value is None:
                raise _Bad(f"{o_label} is null")
            fields = [Field("instruction", "user", instruction)]
            inp = _text(obj.get(nk), n_label, max_chars)
            if inp:
                fields.append(Field("input", "user", inp))
            fields.append(Field("output", "assistant", _text(out_value, o_label, max_chars)))
            meta = {} if used.issuperset(obj) else {k: v for k, v in obj.items() if k not in used}
            return Record(line, "alpaca", fields, meta)

        return alpaca

    if shape in ("sharegpt", "messages"):
        if shape == "sharegpt":
            list_key = mapping.get("conversations", "conversations")
            who_key, text_key = mapping.get("from", "from"), mapping.get("value", "value")
            roles = SHAREGPT_ROLES
            allowed = ", ".join(SHAREGPT_ROLES)
        else:
            list_key = mapping.get("messages", "messages")
            who_key, text_key = mapping.get("role", "role"), mapping.get("content", "content")
            roles = {r: r for r in MESSAGE_ROLES}
            allowed = ", ".join(MESSAGE_ROLES)

        def chat(obj: Any, line: int) -> Record:
            if type(obj) is not dict:
                raise _Bad(f"expected an object with {list_key!r}, got {_kind(obj)}")
            if list_key not in obj:
                raise _Bad(f"missing field {list_key!r} (a {shape} record needs a list of turns; "
                           f"keys found: {_keys_found(obj)})")
            turns = obj[list_key]
            if not isinstance(turns, list | tuple):
                raise _Bad(f"field {list_key!r} is {_kind(turns)}, expected a list of turns")
            if not turns:
                raise _Bad(f"field {list_key!r} has no turns")
            fields = []
            for n, turn in enumerate(turns, 1):
                if not isinstance(turn, dict):
                    raise _Bad(f"turn {n} is {_kind(turn)}, expected an object")
                # Be lenient about the two common spellings of a turn.
                wk, tk = (who_key, text_key) if who_key in turn else (
                    ("role", "content") if "role" in turn else ("from", "value"))
                if wk not in turn:
                    raise _Bad(f"turn {n} has no {who_key!r} (keys found: {_keys_found(turn)})")
                who = turn[wk]
                role = roles.get(who.strip().lower()) if isinstance(who, str) else None
                if role is None:
                    raise _Bad(f"turn {n}: unknown {wk} {who!r} (allowed: {allowed})")
                if turn.get(tk) is None:
                    raise _Bad(f"turn {n} has no {tk!r}")
                fields.append(Field("turn", role, _text(turn[tk], f"turn {n}", max_chars)))
            meta = {k: v for k, v in obj.items() if k != list_key}
            return Record(line, "chat", fields, meta)

        return chat

    if shape == "pair":
        text_key, ref_key = _pair_columns(columns, mapping, source_lang)
        used = {text_key, ref_key}

        def pair(obj: Any, line: int) -> Record | None:
            if type(obj) is not dict:
                raise _Bad(f"expected an object with {text_key!r} and {ref_key!r}, got {_kind(obj)}")
            for key in (text_key, ref_key):
                if key not in obj:
                    raise _Bad(f"missing field {key!r} (keys found: {_keys_found(obj)})")
            text = _text(obj[text_key], f"field {text_key!r}", max_chars)
            ref = _text(obj[ref_key], f"field {ref_key!r}", max_chars)
            if not text and not ref:
                return None
            if not text or not ref:
                raise _Bad(f"field {(ref_key if text else text_key)!r} is empty (the other side is not)")
            meta = {k: v for k, v in obj.items() if k not in used}
            return Record(line, "pair", [Field("text", "user", text, reference=ref)], meta)

        return pair

    raise AssertionError(shape)


def _feed(rows: Iterable[tuple[int, Any]], convert: Callable[[Any, int], Record | None], col: _Collector) -> None:
    for line, obj in rows:
        if col.full:
            return
        try:
            record = convert(obj, line)
        except _Bad as exc:
            col.problem(line, str(exc))
            continue
        if record is not None:
            col.add(record)


def _shape_or_error(keys: Iterable[str], mapping: dict[str, str], where: str, allow_pair: bool) -> str:
    keys = list(keys)
    shape = _shape_from_keys(keys, mapping, allow_pair)
    if shape is None:
        extra = "; a parallel table: en and ar (or source and target) columns" if allow_pair else ""
        raise ValueError(f"cannot tell the shape of {where} (keys: {', '.join(map(str, keys)) or 'none'}); "
                         f"{_JSON_SHAPES_HELP}{extra}; {_MAP_HELP}")
    return shape


# -------------------------------------------------------------------------------------------------- JSON


def _json_rows(text: str, name: str, col: _Collector | None) -> Iterable[tuple[int, Any]]:
    """(line, object) pairs of a JSON array (line = 1-based index) or JSONL file (line = file line).

    A malformed JSONL line is reported to ``col`` (or skipped when ``col`` is None, while sniffing)."""
    if text.lstrip()[:1] == "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: not valid JSON at line {exc.lineno} col {exc.colno}: {exc.msg}") from None
        yield from enumerate(items, 1)
        return
    loads = json.loads
    first = True
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError as exc:
            if first:  # maybe one pretty-printed object rather than JSON Lines
                try:
                    whole = loads(text)
                except json.JSONDecodeError:
                    whole = None
                if isinstance(whole, dict):
                    yield lineno, whole
                    return
            first = False
            if col is not None:
                col.problem(lineno, f"not valid JSON: {exc.msg} (col {exc.colno})")
            continue
        first = False
        yield lineno, obj


def _first_json_object(text: str, name: str) -> dict:
    stripped = text.lstrip()
    if stripped[:1] == "[":
        # Decode only the first element, not the whole array.
        decoder = json.JSONDecoder()
        idx = len(text) - len(stripped) + 1
        while idx < len(text) and text[idx].isspace():
            idx += 1
        if text[idx:idx + 1] == "]":
            raise ValueError(f"{name} is an empty JSON array")
        try:
            first, _ = decoder.raw_decode(text, idx)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: not valid JSON at line {exc.lineno} col {exc.colno}: {exc.msg}") from None
        if not isinstance(first, dict):
            raise ValueError(f"{name}: the first item of the JSON array is {_kind(first)}, not an object; "
                             f"{_JSON_SHAPES_HELP}")
        return first
    for _line, obj in _json_rows(text, name, None):
        if isinstance(obj, dict):
            return obj
    raise ValueError(f"{name} holds no JSON object (neither a JSON array nor JSON Lines); {_JSON_SHAPES_HELP}")


def _json_shape(text: str, name: str, mapping: dict[str, str]) -> str:
    first = _first_json_object(text, name)
    return _shape_or_error(first.keys(), mapping, f"{name} from its first record", allow_pair=False)


def detect_format(path: str | Path) -> str:
    """The format of a file, folder or hub id (one of :data:`FORMATS`); ``ValueError`` when it cannot tell."""
    path = Path(path)
    kind = _base_kind(path)
    if kind != "json":
        return kind
    return _json_shape(_read_text(path, None), str(path), {})


# ---------------------------------------------------------------------------------------- CSV / TSV


def _read_table(text: str, name: str, delimiter: str, mapping: dict[str, str], source_lang: str,
                max_chars: int, col: _Collector) -> None:
    limit = csv.field_size_limit()
    if limit < 2**31 - 1:
        csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    for row in reader:
        if row and any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
            break
    if header is None:
        raise ValueError(f"{name} is empty")
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    shape = _shape_from_keys(header, mapping, allow_pair=True)
    if shape not in ("alpaca", "pair"):
        raise ValueError(f"cannot tell which columns of {name} to read (columns found: {', '.join(header)}); expected "
                         f"instruction/input/output columns, or en and ar (source and target) columns for a "
                         f"parallel corpus; {_MAP_HELP}")
    if shape == "alpaca":
        needed = [(n, mapping.get(n, n)) for n in ("instruction", "output")]
        needed += [("input", mapping["input"])] if "input" in mapping else []
    else:
        text_key, ref_key = _pair_columns(header, mapping, source_lang)
        needed = [("text", text_key), ("reference", ref_key)]
    for ours, column in needed:
        if column not in header:
            via = f" (mapped to {ours})" if column != ours else ""
            raise ValueError(f"{name} has no column {column!r}{via}; columns found: {', '.join(header)}; {_MAP_HELP}")
    convert = _row_reader(shape, mapping, max_chars, source_lang, header)
    width = len(header)

    def rows() -> Iterable[tuple[int, Any]]:
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                col.problem(line, f"row has {len(row)} cells; the header has {width}")
                continue
            yield line, dict(zip(header, row, strict=True))

    _feed(rows(), convert, col)


# ---------------------------------------------------------------------------------- Parquet / datasets


def _read_parquet(path: Path, mapping: dict[str, str], source_lang: str, max_chars: int, col: _Collector) -> None:
    if path.is_dir() or not path.exists():
        raise ValueError(f"{path} does not exist" if not path.exists() else f"{path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
        raise ValueError(f"{path} is not a readable Parquet file: {_first_line(exc)}") from None
    columns = pfile.schema_arrow.names
    shape = _shape_or_error(columns, mapping, f"{path} from its columns", allow_pair=True)
    convert = _row_reader(shape, mapping, max_chars, source_lang, columns)

    def rows() -> Iterable[tuple[int, Any]]:
        line = 0
        for batch in pfile.iter_batches(batch_size=2048):
            for row in batch.to_pylist():
                line += 1
                yield line, row

    _feed(rows(), convert, col)


def _read_dataset(ds: Any, name: str, mapping: dict[str, str], source_lang: str, max_chars: int,
                  col: _Collector) -> None:
    columns = list(ds.column_names)
    shape = _shape_or_error(columns, mapping, f"{name} from its columns", allow_pair=True)
    convert = _row_reader(shape, mapping, max_chars, source_lang, columns)
    if getattr(ds, "_indices", None) is not None:  # after select/shuffle/filter: materialise the row order
        ds = ds.flatten_indices()
    table = ds.data  # a datasets Table wrapping a pyarrow Table

    def rows() -> Iterable[tuple[int, Any]]:
        line = 0
        for batch in table.to_batches(max_chunksize=2048):
            for row in batch.to_pylist():
                line += 1
                yield line, row

    _feed(rows(), convert, col)


def _load_hf_folder(path: Path) -> tuple[Any, str]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} could not be loaded with datasets.load_from_disk: {_first_line(exc)}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if not loaded:
            raise ValueError(f"{path} is a DatasetDict without splits")
        split = "train" if "train" in loaded else next(iter(loaded))
        return loaded[split], f"{path} [{split}]"
    if isinstance(loaded, datasets.Dataset):
        return loaded, str(path)
    raise ValueError(f"{path} holds a {type(loaded).__name__}, not a Dataset or DatasetDict")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _hub_reachable(timeout: float = _HUB_CONNECT_TIMEOUT_S) -> str | None:
    """``None`` when the hub answers a TCP connect within ``timeout`` s, else the reason (never blocks longer)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(f"cannot connect to {host}:{port}: {exc}")

    thread = threading.Thread(target=probe, daemon=True)  # name resolution ignores socket timeouts
    thread.start()
    thread.join(timeout + 0.5)
    return result[0] if result else f"no answer from {host}:{port} within {timeout:g} s"


def _load_hub(source: str) -> Any:
    offline_hint = ("; on an offline machine use a local file (JSON, JSONL, CSV, TSV, Parquet) or a dataset "
                    "saved with datasets' save_to_disk")
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if not offline:  # offline mode may still find the dataset in the local cache
        reason = _hub_reachable()
        if reason:
            raise ValueError(f"the hub dataset {source!r} could not be fetched: {reason}{offline_hint}")
    import datasets

    try:
        return datasets.load_dataset(source, split="train")
    except Exception as exc:  # noqa: BLE001 - connection, not-found, gated, …
        raise ValueError(f"the hub dataset {source!r} could not be fetched: {_first_line(exc)}{offline_hint}") from None


# ------------------------------------------------------------------------------------------------ parallel


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _read_parallel(source: Path, reference: Path | None, encoding: str | None, source_lang: str,
                   max_chars: int, col: _Collector) -> None:
    other = "ar" if source_lang == "en" else "en"
    documents: list[str] | None = None
    if not source.exists():
        raise ValueError(f"{source} does not exist")
    if source.is_dir():
        if reference is not None:
            raise ValueError(f"{source} is a folder: pass reference= only with a plain-text source file")
        if not _has_ntrex(source):
            raise ValueError(f"{source} holds no NTREX-128 files ({', '.join(NTREX_FILES.values())}); for other "
                             "parallel data pass a source file and reference=OTHER_FILE, or a two-column TSV")
        src_path, ref_path = source / NTREX_FILES[source_lang], source / NTREX_FILES[other]
        src_lines = _lines(_read_text(src_path, encoding))
        ref_lines = _lines(_read_text(ref_path, encoding))
        ids = source / NTREX_DOCUMENT_IDS
        if ids.is_file():
            doc_lines = _lines(_read_text(ids, encoding))
            documents = doc_lines if len(doc_lines) == len(src_lines) else None
    elif reference is not None:
        reference = Path(reference)
        src_path, ref_path = source, reference
        src_lines = _lines(_read_text(source, encoding))
        ref_lines = _lines(_read_text(reference, encoding))
    else:
        text = _read_text(source, encoding)
        first = next((ln for ln in text.split("\n") if ln.strip()), "")
        if "\t" not in first:
            raise ValueError(f"{source} is a plain-text file: a parallel corpus needs reference=OTHER_FILE "
                             "(line-aligned), a two-column TSV (en, ar) or a folder holding NTREX-128")
        _read_parallel_tsv(text, str(source), source_lang, max_chars, col)
        return
    if len(src_lines) != len(ref_lines):
        raise ValueError(f"{src_path} has {len(src_lines):,} lines but {ref_path} has {len(ref_lines):,}; "
                         "a parallel corpus needs the same number of lines on both sides")

    def rows() -> Iterable[tuple[int, Any]]:
        for i, (text, ref) in enumerate(zip(src_lines, ref_lines, strict=True)):
            yield i + 1, (text, ref, documents[i] if documents else None)

    _feed(rows(), _pair_line_reader(max_chars), col)


def _pair_line_reader(max_chars: int) -> Callable[[Any, int], Record | None]:
    def convert(item: Any, line: int) -> Record | None:
        text, ref, document = item
        text = _text(text, "source text", max_chars)
        ref = _text(ref, "reference", max_chars)
        if not text and not ref:
            return None
        if not text:
            raise _Bad("the source side is empty (the reference is not)")
        if not ref:
            raise _Bad("the reference side is empty (the source is not)")
        meta = {"document": document.strip()} if document else {}
        return Record(line, "pair", [Field("text", "user", text, reference=ref)], meta)

    return convert


def _read_parallel_tsv(text: str, name: str, source_lang: str, max_chars: int, col: _Collector) -> None:
    lines = _lines(text)
    # Which column holds which language: en, ar unless a header says otherwise.
    langs = ["en", "ar"]
    start = 0
    for i, raw in enumerate(lines):
        if raw.strip():
            cells = [c.strip().lower() for c in raw.split("\t")]
            if len(cells) == 2 and set(cells) <= _PAIR_HEADERS:
                start = i + 1
                names = {"english": "en", "arabic": "ar", "en": "en", "ar": "ar"}
                if cells[0] in names and cells[1] in names and names[cells[0]] != names[cells[1]]:
                    langs = [names[cells[0]], names[cells[1]]]
                elif cells[0] in ("source", "src") or cells[1] in ("target", "tgt", "ref"):
                    langs = [source_lang, "ar" if source_lang == "en" else "en"]
            break
    src_col = langs.index(source_lang)
    ref_col = 1 - src_col
    convert = _pair_line_reader(max_chars)

    def rows() -> Iterable[tuple[int, Any]]:
        for i in range(start, len(lines)):
            raw = lines[i]
            if not raw.strip():
                continue
            cells = raw.split("\t")
            if len(cells) != 2:
                col.problem(i + 1, f"expected 2 tab-separated columns (en, ar), found {len(cells)}")
                continue
            yield i + 1, (cells[src_col], cells[ref_col], None)

    _feed(rows(), convert, col)


# ------------------------------------------------------------------------------------------------- licence

_LICENCE_FILE = re.compile(r"^(LICEN[SC]E|DATA_LICEN[SC]E|COPYING)", re.IGNORECASE)
_CC_DEED = re.compile(r"^\s*(?:Creative Commons\s+)?Attribution"
                      r"((?:-(?:NonCommercial|ShareAlike|NoDerivatives|NoDerivs))*)\s+(\d\.\d)", re.IGNORECASE)
_CC_ID = re.compile(r"\bcc[\s_-]?(by(?:[\s_-](?:nc|sa|nd))*)[\s_-]*(\d\.\d)\b", re.IGNORECASE)
_CC_PARTS = {"noncommercial": "NC", "sharealike": "SA", "noderivatives": "ND", "noderivs": "ND"}
_LICENCE_LINE = re.compile(r"^[\s>*_#|-]*licen[sc]e[\s*_]*:[\s*_]*(.+?)\s*$", re.IGNORECASE)


def _licence_from_heading(lines: list[str]) -> str | None:
    for line in lines:
        match = _CC_DEED.match(line)
        if match:
            parts = [_CC_PARTS[p.lower()] for p in match.group(1).split("-") if p]
            return "-".join(["CC-BY", *parts, match.group(2)])
        low = line.lower()
        if "apache license" in low:
            return "Apache-2.0"
        if "mit license" in low:
            return "MIT"
        if "cc0 1.0" in low:
            return "CC0-1.0"
    return None


def _normalise_licence(value: str) -> str | None:
    value = value.strip().strip("\"'`*_ ").strip()
    if not value:
        return None
    match = _CC_ID.search(value)
    if match:
        parts = re.split(r"[\s_-]+", match.group(1).upper())
        return "-".join(["CC", *parts, match.group(2)])
    low = value.lower()
    if low.startswith("apache"):
        return "Apache-2.0"
    if re.match(r"^mit\b", low):
        return "MIT"
    if low.startswith("cc0"):
        return "CC0-1.0"
    return re.split(r"\s+[(\[]|\s+-\s+|;", value, maxsplit=1)[0].strip().rstrip(".,") or None


def _head(path: Path, max_chars: int = 20_000) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.read(max_chars).splitlines()
    except OSError:
        return []


def guess_licence(path: str | Path) -> str | None:
    """The licence of the data at ``path``, guessed from LICENSE*/LICENCE*/DATA_LICENSE* (their first lines),
    then a ``license:`` line in PROVENANCE.md or README*, in the file's folder (or the folder itself)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return None
    for name in names:
        if _LICENCE_FILE.match(name):
            lines = [ln for ln in _head(folder / name, 2_000) if ln.strip()][:5]
            found = _licence_from_heading(lines)
            if found:
                return found
    readmes = [n for n in names if n.lower() == "provenance.md"] + [n for n in names if n.lower().startswith("readme")]
    for name in readmes:
        for line in _head(folder / name)[:300]:
            match = _LICENCE_LINE.match(line)
            if match:
                found = _normalise_licence(match.group(1))
                if found:
                    return found
    return None


# ---------------------------------------------------------------------------------------------------- main


def read_corpus(source: str | Path, format: str | None = None, mapping: dict[str, str] | None = None,
                on_error: str = "abort", encoding: str | None = None, limit: int | None = None,
                max_field_chars: int = MAX_FIELD_CHARS, reference: str | Path | None = None,
                source_lang: str = "en") -> ReadResult:
    """Read an instruction set or a parallel corpus into records (see the module docstring for the formats).

    ``format=None`` detects it (a given ``reference`` means ``parallel``). ``mapping`` maps our field names to the
    source's keys/columns (``{"instruction": "question", "output": "answer"}``). ``on_error`` is ``"abort"`` (the
    first bad record raises ``ValueError``) or ``"skip"`` (bad records land in ``problems``). ``limit`` stops
    after that many valid records. ``source_lang`` says which side of a parallel corpus is the text; the other
    side becomes each field's ``reference``.
    """
    if on_error not in ("abort", "skip"):
        raise ValueError(f"on_error must be 'abort' or 'skip', not {on_error!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; formats: {', '.join(FORMATS)}")
    if source_lang not in LANGS:
        raise ValueError(f"source_lang must be one of {', '.join(LANGS)}, not {source_lang!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of records, not {limit!r}")
    if not isinstance(max_field_chars, int) or max_field_chars < 1:
        raise ValueError(f"max_field_chars must be a positive number, not {max_field_chars!r}")
    mapping = parse_mapping(mapping)
    name = str(source)
    path = Path(source)
    col = _Collector(name, on_error, limit)
    text: str | None = None

    if format is None:
        if reference is not None:
            format = "parallel"
        else:
            kind = _base_kind(path)
            if kind == "json":
                text = _read_text(path, encoding)
                format = _json_shape(text, name, mapping)
            else:
                format = kind
    licence: str | None = None

    if format in ("alpaca", "sharegpt", "messages"):
        if text is None:
            text = _read_text(path, encoding)
        if text.lstrip()[:1] not in ("[", "{"):
            raise ValueError(f"{name} is neither a JSON array nor JSON Lines (it starts with "
                             f"{text.lstrip()[:20]!r}); {_JSON_SHAPES_HELP}")
        convert = _row_reader(format, mapping, max_field_chars, source_lang)
        _feed(_json_rows(text, name, col), convert, col)
    elif format in ("csv", "tsv"):
        text = _read_text(path, encoding)
        _read_table(text, name, "," if format == "csv" else "\t", mapping, source_lang, max_field_chars, col)
    elif format == "parquet":
        _read_parquet(path, mapping, source_lang, max_field_chars, col)
    elif format == "hf":
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        ds, where = _load_hf_folder(path)
        _read_dataset(ds, where, mapping, source_lang, max_field_chars, col)
    elif format == "parallel":
        _read_parallel(path, Path(reference) if reference is not None else None, encoding, source_lang,
                       max_field_chars, col)
    elif format == "hub":
        ds = _load_hub(name)
        licence = getattr(getattr(ds, "info", None), "license", None) or None
        _read_dataset(ds, name, mapping, source_lang, max_field_chars, col)

    if not col.records:
        detail = f" ({len(col.problems)} skipped; first: {col.problems[0]})" if col.problems else ""
        raise ValueError(f"{name} has no valid records{detail}")
    if format != "hub":
        licence = guess_licence(path)
    return ReadResult(format=format, records=col.records, problems=col.problems, total=col.total,
                      licence=licence, source=name)
