"""The benchmark registry: the six OALL v2 benchmarks, the built-in offline benchmarks and local ones from files.

Three sorts of benchmark, told apart by :class:`Benchmark` fields:

- **Hub benchmarks** (``needs_hub=True``): the six-benchmark suite of the Hala report (Open Arabic LLM
  Leaderboard v2: AlGhafa, ArabicMMLU, EXAMS, MadinahQA, AraTrust, ArbMMLU-HT), each mapped to the
  lm-evaluation-harness 0.4.13 task(s) that implement it. Their data lives on the Hugging Face hub, so they run
  only where the hub can be reached. lm-eval 0.4.13 has no implementation of MadinahQA, AraTrust or the
  human-translated ArbMMLU-HT: MadinahQA and ArbMMLU-HT run a named stand-in (``stand_in`` says which and how it
  differs), AraTrust has no task at all and refuses to run with a message saying how to import its data as a
  local benchmark. The task versions (``metadata.version`` of each task YAML) are pinned here; a test checks
  them against the installed lm-eval.
- **Built-in offline benchmarks**: ``exams_ar`` (the 562 Arabic EXAMS test questions of the sample data folder,
  built on demand into the workspace as a local lm-eval task) and ``ntrex_en_ar`` / ``ntrex_ar_en``
  (translation of NTREX-128 newstest2019, scored with chrF++ and BLEU through :mod:`hala_core.translation`).
- **Local benchmarks** from a JSONL/JSON/CSV/TSV file (:func:`add_local_benchmark`): written to
  ``<workspace>/benchmarks/<name>/`` as ``data.jsonl``, an lm-eval task YAML and ``benchmark.json``.

Local multiple-choice prompt (the OALL v2 "multiple-choice format" with Arabic letters)::

    السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة:      ← description (once, before any shots)

    <question>
    أ. <choice 1>
    ب. <choice 2>
    …
    الإجابة:

Few-shot examples of a local benchmark (``num_fewshot`` > 0) are drawn from its own questions, never the one being
asked (lm-eval's rule for a task that has only a test split).

``choices_as="letters"`` (the default) scores the letters `` أ`` / `` ب`` / … as the continuations, as OALL v2
does for ArabicMMLU, EXAMS and MadinahQA; ``acc`` and ``acc_norm`` then (nearly) agree. ``choices_as="texts"``
scores the choice texts after the same prompt (a "hybrid" formulation), where ``acc_norm`` (log-likelihood per
character) differs from ``acc``; small base models often do better than chance sooner that way.

Nothing here imports lm-eval at module import time: listing and resolving registry names is instant. Looking up
a name that is none of ours in lm-eval's own task index costs ~6 s (it parses ~14,000 YAML files) and happens
only for such a name, once per process.
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from hala_core.specs import check_name

BenchmarkKind = Literal["mcq", "translation", "generation"]

LM_EVAL_PINNED = "0.4.13"  # the lm-eval release the task mapping and the pinned task versions were read from
BENCHMARKS_DIR = "benchmarks"  # <workspace>/benchmarks/<name>/
DATA_FILE = "data.jsonl"
META_FILE = "benchmark.json"
LOCAL_TASK_VERSION = "1.0"
HEADLINE_PREFERENCE = ("acc_norm", "acc", "exact_match", "chrf++", "bleu", "f1", "mcc")

ARABIC_LETTERS = ("أ", "ب", "ج", "د", "هـ")
LATIN_LETTERS = ("A", "B", "C", "D", "E")
MIN_CHOICES, MAX_CHOICES = 2, 5
MCQ_INSTRUCTION = "السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة:\n\n"  # OALL v2's instruction
ANSWER_CUE = "الإجابة:"
ANSWER_FORMATS = ("auto", "letter", "index", "text")
CHOICES_AS = ("letters", "texts")
FORMATS = ("jsonl", "json", "csv", "tsv")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}

HUB_MESSAGE = ("benchmark {name} needs the Hugging Face hub (its data lives there) and the hub cannot be reached "
               "from here")


# --------------------------------------------------------------------------- the Benchmark record

@dataclass(frozen=True)
class Benchmark:
    """One benchmark as the workbench runs it.

    ``tasks``: what is handed to lm-eval (task or group names) for ``mcq``/``generation``; empty for translation.
    ``headline``: the metric shown on the leaderboard. A benchmark made of several tasks scores the unweighted
    mean of the headline metric over its leaf tasks (lm-eval's own group aggregate, weighted by size, is
    recorded too, under the group's name). ``task_versions``: pinned ``metadata.version`` of each entry of
    ``tasks``. ``task_dirs``: folders under ``lm_eval/tasks`` that hold those tasks, so a job indexes only them.
    """

    name: str
    title: str
    kind: BenchmarkKind
    tasks: tuple[str, ...] = ()
    headline: str = "acc_norm"
    needs_hub: bool = False
    source: str = ""
    licence: str = ""
    description: str = ""
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    task_versions: tuple[tuple[str, str], ...] = ()
    task_dirs: tuple[str, ...] = ()
    stand_in: str | None = None  # set when the tasks are a stand-in for a benchmark lm-eval does not implement
    suite: str | None = None  # "oall-v2" for the six of the Hala report
    local: bool = False  # an lm-eval task written into <workspace>/benchmarks/<name>/
    builtin_data: str | None = None  # built-ins: the file or folder in the sample data folder they are built from
    direction: str | None = None  # translation: "en-ar" | "ar-en"
    raw: bool = False  # an lm-eval task name that is none of ours (found in lm-eval's task index)
    yaml_dirs: tuple[str, ...] = field(default=(), compare=False)  # absolute folders to index (raw and local)

    @property
    def versions(self) -> dict[str, str]:
        return dict(self.task_versions)

    @property
    def runnable(self) -> bool:
        """Whether there is anything to run (AraTrust has no lm-eval task)."""
        return self.kind == "translation" or bool(self.tasks)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "kind": self.kind, "tasks": list(self.tasks),
                "headline": self.headline, "needs_hub": self.needs_hub, "source": self.source,
                "licence": self.licence, "description": self.description, "metrics": list(self.metrics),
                "task_versions": self.versions, "stand_in": self.stand_in, "suite": self.suite,
                "local": self.local, "direction": self.direction, "raw": self.raw}


_OALL = "Open Arabic LLM Leaderboard v2 (OALL)"
_NOT_IN_LM_EVAL = "lm-eval {v} has no implementation of {what}"

OALL_V2: tuple[Benchmark, ...] = (
    Benchmark(
        name="alghafa", title="AlGhafa", kind="mcq", tasks=("arabic_leaderboard_alghafa",), headline="acc_norm",
        needs_hub=True, suite="oall-v2",
        task_versions=(("arabic_leaderboard_alghafa", "1.0"),),
        task_dirs=("arabic_leaderboard_complete/arabic_leaderboard_alghafa",),
        source="OALL/AlGhafa-Arabic-LLM-Benchmark-Native on the Hugging Face hub (Almazrouei et al., ArabicNLP 2023)",
        licence="see the dataset card of OALL/AlGhafa-Arabic-LLM-Benchmark-Native",
        description=("AlGhafa native Arabic multiple choice, the 9 subsets OALL v2 uses (MCQ exams, dialect/MSA "
                     "meta, facts true/false, grounded statements SOQAL and XGLUE-MLQA, sentiment and rating "
                     f"sentiment). lm-eval group arabic_leaderboard_alghafa ({_OALL} v1's task on the same data). "
                     "Note: lm-eval's own `alghafa` folder holds only the translated copa_ar/piqa_ar, not this."),
    ),
    Benchmark(
        name="arabicmmlu", title="ArabicMMLU", kind="mcq", tasks=("arabicmmlu",), headline="acc",
        metrics=("acc",), needs_hub=True, suite="oall-v2",
        task_versions=(("arabicmmlu", "1"),),
        task_dirs=("arabicmmlu",),
        source="MBZUAI/ArabicMMLU on the Hugging Face hub (Koto et al., 2024)",
        licence="see the dataset card of MBZUAI/ArabicMMLU",
        description=("ArabicMMLU: 40 native Arabic school and university exam subjects (lm-eval group arabicmmlu, "
                     "letter choices A–E). lm-eval's task reports acc only (no acc_norm), so acc is the headline. "
                     "Score: the unweighted mean over the 40 subjects; lm-eval's size-weighted group score is "
                     "recorded as well."),
    ),
    Benchmark(
        name="exams", title="EXAMS", kind="mcq", tasks=("arabic_leaderboard_arabic_exams",), headline="acc_norm",
        needs_hub=True, suite="oall-v2",
        task_versions=(("arabic_leaderboard_arabic_exams", "1.0"),),
        task_dirs=("arabic_leaderboard_complete/arabic_leaderboard_arabic_exams",),
        source="OALL/Arabic_EXAMS on the Hugging Face hub (from EXAMS, Hardalov et al., EMNLP 2020)",
        licence="CC-BY-SA-4.0 (EXAMS)",
        description=("The Arabic high-school exam questions of EXAMS as OALL serves them (OALL/Arabic_EXAMS; lm-eval "
                     "group arabic_leaderboard_arabic_exams, task arabic_exams). lm-eval's `aexams` (Hennara/aexams) "
                     "is another copy with Latin letters. Offline, `exams_ar` runs the Arabic EXAMS test questions "
                     "of the sample data folder with the OALL v2 prompt."),
    ),
    Benchmark(
        name="madinahqa", title="MadinahQA", kind="mcq",
        tasks=("arabicmmlu_arabic_language_general", "arabicmmlu_arabic_language_grammar"), headline="acc",
        metrics=("acc",), needs_hub=True, suite="oall-v2",
        task_versions=(("arabicmmlu_arabic_language_general", "1.0"), ("arabicmmlu_arabic_language_grammar", "1.0")),
        task_dirs=("arabicmmlu",),
        stand_in=("lm-eval 0.4.13 has no MadinahQA task (MBZUAI/MadinahQA, subsets 'Arabic Language (General)' and "
                  "'Arabic Language (Grammar)'); this runs the two ArabicMMLU subjects of the same names "
                  "(MBZUAI/ArabicMMLU) instead, which are not the MadinahQA questions: scores are not comparable "
                  "with the OALL v2 MadinahQA column"),
        source="stand-in: MBZUAI/ArabicMMLU 'Arabic Language (General)' and '(Grammar)' (MadinahQA: MBZUAI/MadinahQA)",
        licence="see the dataset cards of MBZUAI/ArabicMMLU and MBZUAI/MadinahQA",
        description=(_NOT_IN_LM_EVAL.format(v=LM_EVAL_PINNED, what="MadinahQA") + "; it is stood in for by the "
                     "ArabicMMLU subjects Arabic Language (General) and (Grammar) — Arabic language and grammar "
                     "questions, as MadinahQA — scored as the unweighted mean of the two (acc). For the real "
                     "MadinahQA, download MBZUAI/MadinahQA where a hub is reachable and add it as a local benchmark "
                     "(question=Question, choices='Option 1,Option 2,Option 3,Option 4,Option 5', "
                     "answer='Answer Key')."),
    ),
    Benchmark(
        name="aratrust", title="AraTrust", kind="mcq", tasks=(), headline="acc_norm", needs_hub=True,
        suite="oall-v2",
        source="asas-ai/AraTrust-categorized on the Hugging Face hub (Alghamdi et al., 2024)",
        licence="see the dataset card of asas-ai/AraTrust-categorized",
        description=(_NOT_IN_LM_EVAL.format(v=LM_EVAL_PINNED, what="AraTrust") + ", and no arabic_leaderboard task "
                     "covers it (truthfulness, ethics, privacy, offensive language, … in Arabic, 3 choices), so it "
                     "cannot run from the registry. Download asas-ai/AraTrust-categorized where a hub is reachable "
                     "and add it as a local benchmark: question=Question, choices='A,B,C', answer=Answer (its "
                     "answers are the Arabic letters أ/ب/ج, which local benchmarks read)."),
    ),
    Benchmark(
        name="arbmmlu_ht", title="ArbMMLU-HT", kind="mcq", tasks=("arabic_leaderboard_arabic_mmlu",),
        headline="acc_norm", needs_hub=True, suite="oall-v2",
        task_versions=(("arabic_leaderboard_arabic_mmlu", "1.0"),),
        task_dirs=("arabic_leaderboard_complete/arabic_leaderboard_arabic_mmlu",),
        stand_in=("lm-eval 0.4.13 has no task for the human-translated MMLU (MBZUAI/human_translated_arabic_mmlu) "
                  "that OALL v2 calls ArbMMLU-HT; this runs arabic_leaderboard_arabic_mmlu (OALL/Arabic_MMLU, the "
                  "same 57 MMLU subjects machine-translated, OALL v1) instead: scores are not comparable with the "
                  "OALL v2 ArbMMLU-HT column"),
        source="stand-in: OALL/Arabic_MMLU (ArbMMLU-HT: MBZUAI/human_translated_arabic_mmlu)",
        licence="see the dataset cards of OALL/Arabic_MMLU and MBZUAI/human_translated_arabic_mmlu",
        description=(_NOT_IN_LM_EVAL.format(v=LM_EVAL_PINNED, what="ArbMMLU-HT (human-translated MMLU)") + "; it is "
                     "stood in for by the arabic_leaderboard task that covers MMLU in Arabic, "
                     "arabic_leaderboard_arabic_mmlu (57 subjects, machine-translated, OALL v1), scored as the "
                     "unweighted mean over the subjects (acc_norm)."),
    ),
)

BUILTINS: tuple[Benchmark, ...] = (
    Benchmark(
        name="exams_ar", title="EXAMS Arabic (offline)", kind="mcq", tasks=("exams_ar",), headline="acc_norm",
        needs_hub=False, local=True, builtin_data="exams_ar/exams_multilingual_test_arabic.jsonl",
        task_versions=(("exams_ar", LOCAL_TASK_VERSION),),
        source="EXAMS (github.com/mhardalov/exams-qa), the 562 Arabic test questions, from the sample data folder",
        licence="CC-BY-SA-4.0",
        description=("562 Arabic school-exam questions (4 choices; Social, Science, Islamic Studies, Physics, "
                     "Biology; grades 4–12), built on demand into the workspace as a local lm-eval task with the "
                     "OALL v2 prompt (Arabic letters, acc_norm). Runs offline."),
    ),
    Benchmark(
        name="ntrex_en_ar", title="NTREX-128 EN→AR", kind="translation", headline="chrf++",
        metrics=("chrf++", "bleu"), needs_hub=False, direction="en-ar", builtin_data="ntrex128_en_ar",
        task_versions=(("ntrex_en_ar", "1.0"),),
        source="NTREX-128 newstest2019 (github.com/MicrosoftTranslator/NTREX), from the sample data folder",
        licence="CC-BY-SA-4.0",
        description=("English → Arabic translation of NTREX-128 news sentences, greedy, scored against the "
                     "professional reference with chrF++ (headline) and BLEU (sacrebleu), exactly as the "
                     "translation and quantization reports score. Runs offline."),
    ),
    Benchmark(
        name="ntrex_ar_en", title="NTREX-128 AR→EN", kind="translation", headline="chrf++",
        metrics=("chrf++", "bleu"), needs_hub=False, direction="ar-en", builtin_data="ntrex128_en_ar",
        task_versions=(("ntrex_ar_en", "1.0"),),
        source="NTREX-128 newstest2019 (github.com/MicrosoftTranslator/NTREX), from the sample data folder",
        licence="CC-BY-SA-4.0",
        description=("Arabic → English translation of NTREX-128 (the Arabic side is itself a translation of English "
                     "news, so the input is translationese), chrF++ (headline) and BLEU. Runs offline."),
    ),
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (*OALL_V2, *BUILTINS)}
SUITES: dict[str, tuple[str, ...]] = {"oall-v2": tuple(b.name for b in OALL_V2)}


def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for b in BENCHMARKS.values():
        for key in (b.name, b.title, b.title.replace("-", "_"), b.title.replace(" ", "_")):
            out.setdefault(key.lower(), b.name)
    return out


_ALIASES = _aliases()


# --------------------------------------------------------------------------- field mapping helpers

_SEGMENT_RE = re.compile(r"^(?P<key>[^\[\]]*)(?P<idx>(\[\d*\])*)$")


class _Missing(Exception):
    def __init__(self, path: str, at: str, keys: list[str] | None) -> None:
        super().__init__(path)
        self.path, self.at, self.keys = path, at, keys


def _get(record: Any, path: str) -> Any:
    """Follow a dotted path with list extraction: ``question.choices[].text``, ``choices[0]``, ``a.b``.

    A key that exists as written (e.g. a CSV column ``Answer Key`` or ``a.b``) wins over the dotted reading."""
    if isinstance(record, dict) and path in record:
        return record[path]
    return _walk(record, path.split("."), path, "")


def _walk(node: Any, segments: list[str], path: str, done: str) -> Any:
    if not segments:
        return node
    seg, rest = segments[0], segments[1:]
    m = _SEGMENT_RE.match(seg)
    if m is None:
        raise ValueError(f"field path {path!r}: cannot read the part {seg!r}; use names, '.', '[]' and '[N]'")
    key, idx = m.group("key"), re.findall(r"\[(\d*)\]", m.group("idx"))
    here = f"{done}.{key}" if done and key else (key or done)
    if key:
        if not isinstance(node, dict) or key not in node or node[key] is None:
            keys = sorted(map(str, node)) if isinstance(node, dict) else None
            raise _Missing(path, here, keys)
        node = node[key]
    for i, ix in enumerate(idx):
        if not isinstance(node, list):
            raise _Missing(path, here + "[]", None)
        if ix == "":  # list extraction: apply the rest of the path to every element
            tail_idx = "".join(f"[{j}]" for j in idx[i + 1:])
            tail = ([tail_idx] if tail_idx else []) + rest
            return [_walk(el, tail, path, here + "[]") if tail else el for el in node]
        j = int(ix)
        if j >= len(node):
            raise _Missing(path, f"{here}[{j}]", None)
        node = node[j]
        here = f"{here}[{j}]"
    return _walk(node, rest, path, here)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _letter_index(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    v = value.strip().strip("().:-").strip()
    if v.upper() in LATIN_LETTERS:
        return LATIN_LETTERS.index(v.upper())
    if v in ("ه", "هـ"):
        return 4
    if v in ARABIC_LETTERS:
        return ARABIC_LETTERS.index(v)
    return None


def _index_value(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


def _answer_as(fmt: str, value: Any, choices: list[str]) -> int | None:
    if fmt == "letter":
        i = _letter_index(value)
    elif fmt == "index":
        i = _index_value(value)
    else:
        text = _as_text(value)
        stripped = [c.strip() for c in choices]
        i = stripped.index(text.strip()) if text is not None and text.strip() in stripped else None
    return i if i is not None and 0 <= i < len(choices) else None


_FORMAT_WORDS = {"letter": "a letter (A–E or أ/ب/ج/د/هـ)", "index": "a 0-based index",
                 "text": "the text of the right choice"}


def _show_choices(choices: list[str]) -> str:
    return "; ".join(f"{'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[i % 26]}) {c[:60]}" for i, c in enumerate(choices))


# --------------------------------------------------------------------------- reading source files

def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        f = fmt.lower().lstrip(".")
        if f == "ndjson":
            f = "jsonl"
        if f not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
        return f
    f = _SUFFIX_FORMATS.get(path.suffix.lower())
    if f is None:
        raise ValueError(f"{path.name}: cannot tell the format from the suffix {path.suffix!r}; use a .jsonl, .json, "
                         f".csv or .tsv file or give fmt ({', '.join(FORMATS)})")
    return f


def _read_records(path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(where, record, the file's field names) for every non-empty record."""
    name = path.name
    if fmt == "jsonl":
        with path.open(encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{name} line {lineno} is not valid JSON: {e.msg} (column {e.colno})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{name} line {lineno}: expected a JSON object, got {type(rec).__name__}")
                yield f"{name} line {lineno}", rec, list(rec)
    elif fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig") or "[]")
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} is not valid JSON: {e.msg} (line {e.lineno}); a JSON benchmark file is a list "
                             "of objects (one per question); for one object per line use .jsonl") from None
        if isinstance(data, dict):
            lists = [k for k, v in data.items() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"{name}: expected a list of objects (or an object holding exactly one list); "
                                 f"found an object with keys {', '.join(map(str, data)) or 'none'}")
            data = data[lists[0]]
        if not isinstance(data, list):
            raise ValueError(f"{name}: expected a list of objects, got {type(data).__name__}")
        for i, rec in enumerate(data, start=1):
            if not isinstance(rec, dict):
                raise ValueError(f"{name} record {i}: expected a JSON object, got {type(rec).__name__}")
            yield f"{name} record {i}", rec, list(rec)
    else:
        delimiter = "\t" if fmt == "tsv" else ","
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [h for h in (reader.fieldnames or []) if h is not None]
            for row in reader:
                rec = {k: v for k, v in row.items() if k is not None}
                if not any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                    continue
                yield f"{name} line {reader.line_num}", rec, header


def _missing_message(where: str, what: str, path: str, err: _Missing, fields: list[str]) -> str:
    msg = f"{where}: the {what} field {path!r} is missing"
    if err.at and err.at != path:
        msg += f" (no {err.at!r})"
    if err.keys is not None and err.at and "." in err.at:
        msg += f"; {err.at.rsplit('.', 1)[0]!r} has: {', '.join(err.keys) or 'nothing'}"
    return msg + f"; the fields of this file: {', '.join(map(str, fields)) or 'none'}"


def _choice_paths(choices: str | Sequence[str]) -> tuple[list[str], bool]:
    """(paths, several) — several columns (``"A,B,C,D"`` or a list) or one path that yields a list."""
    if isinstance(choices, str):
        parts = [p.strip() for p in choices.split(",")]
    else:
        parts = [str(p).strip() for p in choices]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError("choices: give a field holding the list of choices (e.g. 'question.choices[].text') or "
                         "several fields, one per choice (e.g. 'A,B,C,D')")
    return parts, len(parts) > 1


def _row_choices(rec: dict[str, Any], where: str, paths: list[str], several: bool, fields: list[str],
                 header: bool) -> list[str]:
    missing: list[str] = []
    if several:
        values: list[Any] = []
        for p in paths:
            try:
                values.append(_get(rec, p))
            except _Missing:
                if header:  # a CSV/TSV column the header does not have
                    raise ValueError(f"{where}: the choice field {p!r} is missing; the fields of this file: "
                                     f"{', '.join(map(str, fields)) or 'none'}") from None
                values.append(None)  # a key this record leaves out (e.g. "E" in a 4-choice question)
                missing.append(p)
    else:
        try:
            raw = _get(rec, paths[0])
        except _Missing as e:
            raise ValueError(_missing_message(where, "choices", paths[0], e, fields)) from None
        if not isinstance(raw, list):
            raise ValueError(f"{where}: the choices field {paths[0]!r} holds {type(raw).__name__}, not a list; give a "
                             "path to a list (use '[]' to take a field of each element, e.g. "
                             "'question.choices[].text') or several fields separated by commas (e.g. 'A,B,C,D')")
        if raw and all(isinstance(x, dict) for x in raw):
            keys = sorted({str(k) for x in raw for k in x})
            raise ValueError(f"{where}: the choices in {paths[0]!r} are objects (with {', '.join(keys)}); say which "
                             f"field holds the text, e.g. '{paths[0]}[].{'text' if 'text' in keys else keys[0]}'")
        values = list(raw)
    texts = [_as_text(v) for v in values]
    while texts and texts[-1] is None:  # trailing empty columns (a 4-choice row in a file with an E column)
        texts.pop()
    note = (f" (the choice field(s) {', '.join(map(repr, missing))} are missing here; the fields of this record: "
            f"{', '.join(map(str, fields)) or 'none'})") if missing else ""
    for i, t in enumerate(texts):
        if t is None:
            raise ValueError(f"{where}: choice {i + 1} is empty; only trailing choices may be left empty{note}")
    if not MIN_CHOICES <= len(texts) <= MAX_CHOICES:
        got = f" (got: {_show_choices([str(t) for t in texts])})" if texts else ""
        raise ValueError(f"{where}: {len(texts)} choice(s); a question needs {MIN_CHOICES} to {MAX_CHOICES} "
                         f"choices{got}{note}")
    return [str(t) for t in texts]


# --------------------------------------------------------------------------- local benchmarks

@dataclass(frozen=True)
class LocalBenchmark:
    """A benchmark written into ``<workspace>/benchmarks/<name>/`` from a file."""

    name: str
    folder: Path
    rows: int
    mapping: dict[str, Any] = field(compare=False)
    source: str | None = None
    licence: str | None = None
    choices_as: str = "letters"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def data_path(self) -> Path:
        return self.folder / DATA_FILE

    @property
    def yaml_path(self) -> Path:
        return self.folder / f"{self.name}.yaml"

    @property
    def benchmark(self) -> Benchmark:
        builtin = BENCHMARKS.get(self.name)
        if builtin is not None and builtin.local:
            return builtin
        src = self.source or f"local file {self.meta.get('source_file', '?')}"
        return Benchmark(
            name=self.name, title=self.meta.get("title") or self.name, kind="mcq", tasks=(self.name,),
            headline="acc_norm", needs_hub=False, source=src, licence=self.licence or "unknown",
            description=(f"local multiple-choice benchmark, {self.rows} questions from "
                         f"{self.meta.get('source_file', '?')} (choices scored as {self.choices_as})"),
            task_versions=((self.name, LOCAL_TASK_VERSION),), local=True, yaml_dirs=(str(self.folder),),
        )


def benchmarks_dir(workspace: str | Path) -> Path:
    return Path(workspace) / BENCHMARKS_DIR


def task_yaml(name: str, data_path: Path, choices_as: str = "letters", cache_dir: Path | None = None
              ) -> dict[str, Any]:
    """The lm-eval task config of a local multiple-choice benchmark (see the module docstring for the prompt)."""
    letters = "[" + ", ".join(f"'{c}'" for c in ARABIC_LETTERS) + "]"
    kwargs: dict[str, Any] = {"data_files": {"test": str(Path(data_path).resolve())}}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(Path(cache_dir).resolve())
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": kwargs,
        "test_split": "test",
        "output_type": "multiple_choice",
        "description": MCQ_INSTRUCTION,
        "doc_to_text": ("{{ question.strip() }}\n{% for c in choices %}" + "{{ " + letters + "[loop.index0] }}. "
                        "{{ c }}\n{% endfor %}" + ANSWER_CUE),
        "doc_to_choice": ("{{ " + letters + "[:choices|length] }}") if choices_as == "letters" else "choices",
        "doc_to_target": "answer",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": float(LOCAL_TASK_VERSION)},
    }


class _YamlDumper(yaml.SafeDumper):
    """Strings with line breaks as double-quoted scalars with ``\\n`` (readable templates)."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if "\n" in data else None)


_YamlDumper.add_representer(str, _str_representer)


def _write_yaml(folder: Path, name: str, choices_as: str, workspace: Path, data_path: Path | None = None) -> Path:
    """Write ``<folder>/<name>.yaml`` atomically (a running job may be reading the old one)."""
    cfg = task_yaml(name, data_path or folder / DATA_FILE, choices_as,
                    cache_dir=Path(workspace) / "cache" / "datasets")
    path = folder / f"{name}.yaml"
    tmp = folder / f".{name}.yaml.tmp"
    tmp.write_text(yaml.dump(cfg, Dumper=_YamlDumper, sort_keys=False, allow_unicode=True, width=10_000),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def _convert(path: Path, fmt: str, question: str, choices: str | Sequence[str], answer: str,
             answer_format: str) -> tuple[list[dict[str, Any]], str]:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer_format {answer_format!r}; valid: {', '.join(ANSWER_FORMATS)}")
    cpaths, several = _choice_paths(choices)
    parsed: list[tuple[str, str, list[str], Any]] = []
    for where, rec, fields in _read_records(path, fmt):
        try:
            q = _as_text(_get(rec, question))
        except _Missing as e:
            raise ValueError(_missing_message(where, "question", question, e, fields)) from None
        if q is None:
            raise ValueError(f"{where}: the question field {question!r} is empty")
        ch = _row_choices(rec, where, cpaths, several, fields, header=fmt in ("csv", "tsv"))
        try:
            a = _get(rec, answer)
        except _Missing as e:
            raise ValueError(_missing_message(where, "answer", answer, e, fields)) from None
        if a is None or (isinstance(a, str) and not a.strip()):
            raise ValueError(f"{where}: the answer field {answer!r} is empty")
        parsed.append((where, q, ch, a))
    if not parsed:
        raise ValueError(f"{path.name} has no rows: a benchmark needs at least one question")
    formats = ("letter", "index", "text") if answer_format == "auto" else (answer_format,)
    counts = {f: sum(_answer_as(f, a, ch) is not None for _, _, ch, a in parsed) for f in formats}
    chosen = next((f for f in formats if counts[f] == len(parsed)), None)
    if chosen is None:
        best = max(formats, key=lambda f: counts[f])
        where, _q, ch, a = next(p for p in parsed if _answer_as(best, p[3], p[2]) is None)
        how = (f"read as {_FORMAT_WORDS[best]}" if answer_format != "auto" else
               f"answers are read as {_FORMAT_WORDS[best]}, the form that fits the most rows of this file "
               "(a file uses one form: a letter, a 0-based index or the text of the right choice)")
        raise ValueError(f"{where}: the answer {a!r} is outside the choices ({len(ch)} choices: "
                         f"{_show_choices(ch)}); {how}")
    rows = [{"question": q, "choices": ch, "answer": int(_answer_as(chosen, a, ch))}  # type: ignore[arg-type]
            for _, q, ch, a in parsed]
    return rows, chosen


def add_local_benchmark(workspace: str | Path, name: str, path: str | Path, question: str,
                        choices: str | Sequence[str], answer: str, fmt: str | None = None,
                        licence: str | None = None, source: str | None = None, *,
                        answer_format: str = "auto", choices_as: str = "letters", title: str | None = None,
                        overwrite: bool = False, _builtin: bool = False) -> LocalBenchmark:
    """Turn a JSONL/JSON/CSV/TSV file of multiple-choice questions into a local lm-eval benchmark.

    ``question``/``answer``: dotted field paths (``question.stem``); ``choices``: a path to a list, with ``[]``
    taking one field of each element (``question.choices[].text``), or several fields, one per choice
    (``"A,B,C,D"`` or a list). ``answer``: a letter (A–E or أ/ب/ج/د/هـ), a 0-based index or the text of the right
    choice; ``answer_format="auto"`` picks the first of letter, index, text that fits every row. Every row is
    checked (2–5 choices, a non-empty question, the answer among the choices); a bad row raises ValueError naming
    its line. Writes ``<workspace>/benchmarks/<name>/`` (``data.jsonl``, ``<name>.yaml``, ``benchmark.json``).
    """
    check_name(name, "benchmark name")
    if not _builtin and (name.lower() in _ALIASES or name.lower() in SUITES):
        raise ValueError(f"benchmark name {name!r} is taken by a registry benchmark; choose another name "
                         f"(registry names: {', '.join(BENCHMARKS)})")
    if choices_as not in CHOICES_AS:
        raise ValueError(f"unknown choices_as {choices_as!r}; valid: {', '.join(CHOICES_AS)}")
    src = Path(path).expanduser()
    if not src.is_file():
        raise ValueError(f"{src} is not a file; give a .jsonl, .json, .csv or .tsv file of questions")
    form = _detect_format(src, fmt)
    rows, chosen = _convert(src, form, question, choices, answer, answer_format)

    root = benchmarks_dir(workspace)
    folder = root / name
    if folder.exists() and not overwrite:
        raise ValueError(f"benchmark {name!r} already exists at {folder}; choose another name or overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        with (tmp / DATA_FILE).open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        mapping = {"question": question, "choices": choices if isinstance(choices, str) else list(choices),
                   "answer": answer, "answer_format": chosen, "format": form}
        meta = {"name": name, "title": title or name, "kind": "mcq", "headline": "acc_norm",
                "task_version": LOCAL_TASK_VERSION, "rows": len(rows), "source_file": str(src.resolve()),
                "source": source, "licence": licence, "mapping": mapping, "choices_as": choices_as,
                "answer_counts": _answer_counts(rows), "created": datetime.now(UTC).isoformat(timespec="seconds")}
        (tmp / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        _write_yaml(tmp, name, choices_as, Path(workspace), data_path=folder / DATA_FILE)
        if _builtin and _is_complete(folder):  # built meanwhile by a concurrent job: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return _load_local(folder)
        if folder.exists():
            shutil.rmtree(folder)
        try:
            tmp.rename(folder)
        except OSError:
            if not (_builtin and _is_complete(folder)):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_local(folder)


def _is_complete(folder: Path) -> bool:
    return (folder / META_FILE).is_file() and (folder / DATA_FILE).is_file() and any(folder.glob("*.yaml"))


def _answer_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        key = LATIN_LETTERS[r["answer"]]
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _load_local(folder: Path) -> LocalBenchmark:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    return LocalBenchmark(name=meta["name"], folder=folder, rows=int(meta.get("rows", 0)),
                          mapping=dict(meta.get("mapping") or {}), source=meta.get("source"),
                          licence=meta.get("licence"), choices_as=meta.get("choices_as", "letters"), meta=meta)


def list_local_benchmarks(workspace: str | Path) -> list[LocalBenchmark]:
    """Every benchmark under ``<workspace>/benchmarks`` (built-ins that were built included), by name."""
    root = benchmarks_dir(workspace)
    out = []
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and (folder / META_FILE).is_file():
                try:
                    out.append(_load_local(folder))
                except (OSError, ValueError, KeyError):
                    continue
    return out


def local_benchmark(workspace: str | Path, name: str) -> LocalBenchmark | None:
    folder = benchmarks_dir(workspace) / name
    if not (folder / META_FILE).is_file():
        return None
    return _load_local(folder)


def refresh_task_yaml(workspace: str | Path, local: LocalBenchmark) -> Path:
    """Rewrite a local benchmark's task YAML when it no longer points at its data (e.g. the workspace moved)."""
    ypath = local.yaml_path
    want = str(local.data_path.resolve())
    try:
        cfg = yaml.safe_load(ypath.read_text(encoding="utf-8"))
        ok = cfg["dataset_kwargs"]["data_files"]["test"] == want and cfg.get("task") == local.name
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        ok = False
    if not ok:
        _write_yaml(local.folder, local.name, local.choices_as, Path(workspace))
    return ypath


def ensure_builtin(name: str, workspace: str | Path, data_dir: str | Path | None) -> Path | None:
    """Make a built-in benchmark ready: build ``exams_ar`` into the workspace from the sample data folder if it is
    not there yet; check that NTREX is where the translation benchmarks need it. Returns the benchmark's folder
    (``exams_ar``) or the NTREX folder; None for names that are not built-ins."""
    from hala_core import translation

    bench = BENCHMARKS.get(name)
    if bench is None or bench.builtin_data is None:
        return None
    if bench.kind == "translation":
        folder = translation.ntrex_folder(Path(data_dir)) if data_dir is not None else None
        if folder is None:
            where = f"in {data_dir}" if data_dir is not None else "(no sample data folder is configured)"
            raise ValueError(f"benchmark {name} needs NTREX-128 ({translation.NTREX_DIR}/ with "
                             f"{translation.NTREX_FILES['en']} and {translation.NTREX_FILES['ar']}) {where}; "
                             "import the sample data (../shared/data) into the workspace")
        return folder
    existing = local_benchmark(workspace, name)
    if existing is not None and existing.data_path.is_file():
        refresh_task_yaml(workspace, existing)
        return existing.folder
    src = Path(data_dir) / bench.builtin_data if data_dir is not None else None
    if src is None or not src.is_file():
        where = f"{src} does not exist" if src is not None else "no sample data folder is configured"
        raise ValueError(f"benchmark {name} is built from the sample data file {bench.builtin_data}, but {where}; "
                         "import the sample data (../shared/data) or add the file as a local benchmark")
    local = add_local_benchmark(workspace, name, src, question="question.stem", choices="question.choices[].text",
                                answer="answerKey", fmt="jsonl", licence=bench.licence, source=bench.source,
                                answer_format="letter", title=bench.title, overwrite=True, _builtin=True)
    return local.folder


# --------------------------------------------------------------------------- resolving names

def lm_eval_tasks_dir() -> Path:
    """``lm_eval/tasks`` of the installed lm-eval, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("lm-eval is not installed; install lm-eval==0.4.13 to run lm-eval benchmarks")
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


@functools.lru_cache(maxsize=1)
def _lm_eval_index() -> dict[str, Any]:
    """lm-eval's full task index (all built-in tasks, groups and tags). ~6 s; once per process."""
    from lm_eval.tasks import TaskManager

    return dict(TaskManager(include_defaults=True).task_index)


_LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas")


def _cfg_is_local(cfg: dict[str, Any] | None) -> bool:
    if not cfg:
        return False
    dp = cfg.get("dataset_path")
    if cfg.get("custom_dataset") is not None and dp is None:
        return False
    if dp in _LOCAL_BUILDERS:
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        paths: list[Any] = []
        if isinstance(files, dict):
            for v in files.values():
                paths.extend(v if isinstance(v, list) else [v])
        elif isinstance(files, list):
            paths = files
        elif files is not None:
            paths = [files]
        return bool(paths) and all(not re.match(r"^[a-z]+://", str(p)) and not str(p).startswith("hf://")
                                   for p in paths)
    return dp is not None and Path(str(dp)).exists()


def _leaf_entries(index: dict[str, Any], name: str, seen: set[str] | None = None) -> list[Any]:
    seen = seen if seen is not None else set()
    if name in seen:
        return []
    seen.add(name)
    entry = index.get(name)
    if entry is None:
        return []
    kind = entry.kind.name
    if kind in ("TASK", "PY_TASK"):
        return [entry]
    children: list[Any] = []
    if kind == "TAG":
        children = sorted(entry.tags)
    elif kind == "GROUP":
        items = (entry.cfg or {}).get("task") or []
        children = items if isinstance(items, list) else [items]
    out: list[Any] = []
    for child in children:
        if isinstance(child, str):
            out.extend(_leaf_entries(index, child, seen))
        elif isinstance(child, dict) and "task" in child and isinstance(child["task"], str):
            if child["task"] in index:
                out.extend(_leaf_entries(index, child["task"], seen))
            else:
                out.append(type("InlineEntry", (), {"cfg": child, "yaml_path": entry.yaml_path, "name": child["task"],
                                                    "kind": entry.kind})())
    return out


def _raw_benchmark(name: str) -> Benchmark | None:
    index = _lm_eval_index()
    entry = index.get(name)
    if entry is None:
        return None
    leaves = _leaf_entries(index, name)
    local = bool(leaves) and all(_cfg_is_local(getattr(e, "cfg", None)) for e in leaves)
    dirs = [str(d) for d in _outermost(sorted({Path(p).parent for p in
                                                [entry.yaml_path, *(getattr(e, "yaml_path", None) for e in leaves)]
                                                if p is not None}))]
    version = ((entry.cfg or {}).get("metadata") or {}).get("version")
    output_types = {(getattr(e, "cfg", None) or {}).get("output_type") for e in leaves}
    kind: BenchmarkKind = "mcq" if output_types <= {"multiple_choice", "loglikelihood", None} else "generation"
    metrics: list[str] = []
    for e in leaves:
        for m in (getattr(e, "cfg", None) or {}).get("metric_list") or []:
            if isinstance(m, dict) and isinstance(m.get("metric"), str) and m["metric"] not in metrics:
                metrics.append(m["metric"])
    headline = next((m for m in HEADLINE_PREFERENCE if m in metrics), metrics[0] if metrics else "acc")
    src = sorted({str((getattr(e, "cfg", None) or {}).get("dataset_path")) for e in leaves})
    return Benchmark(
        name=name, title=name, kind=kind, tasks=(name,), headline=headline, needs_hub=not local,
        source=f"lm-eval task {name} (data: {', '.join(src) or 'unknown'})", licence="see the dataset's card",
        description=f"lm-eval {entry.kind.name.lower().replace('py_', '')} {name} run as it is, {len(leaves)} task(s)",
        metrics=tuple(metrics), task_versions=((name, str(version)),) if version is not None else (),
        raw=True, yaml_dirs=tuple(dirs),
    )


def _known_names(workspace: str | Path | None) -> list[str]:
    names = list(BENCHMARKS) + list(SUITES)
    if workspace is not None:
        names += [lb.name for lb in list_local_benchmarks(workspace) if lb.name not in BENCHMARKS]
    return names


def available_benchmarks(workspace: str | Path | None = None) -> list[Benchmark]:
    """The registry (six OALL v2 benchmarks, then the built-ins) and the workspace's local benchmarks."""
    out = list(BENCHMARKS.values())
    if workspace is not None:
        out += [lb.benchmark for lb in list_local_benchmarks(workspace) if lb.name not in BENCHMARKS]
    return out


def resolve_benchmarks(names: Iterable[str], workspace: str | Path | None = None,
                       allow_raw: bool = True) -> list[Benchmark]:
    """Registry names (case-insensitive; titles such as ``ArbMMLU-HT`` too), suite names (``oall-v2``: the six),
    local benchmarks of the workspace and — with ``allow_raw`` — any lm-eval task/group/tag name (checked
    lazily against lm-eval's task index). An unknown name raises ValueError listing close matches."""
    out: list[Benchmark] = []
    for raw_name in names:
        name = (raw_name or "").strip()
        if not name:
            continue
        key = name.lower()
        found: list[Benchmark] = []
        if key in SUITES:
            found = [BENCHMARKS[n] for n in SUITES[key]]
        elif key in _ALIASES:
            found = [BENCHMARKS[_ALIASES[key]]]
        elif workspace is not None and (lb := local_benchmark(workspace, name)) is not None:
            found = [lb.benchmark]
        elif allow_raw and (rb := _raw_benchmark(name)) is not None:
            found = [rb]
        if not found:
            known = _known_names(workspace)
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
            close += [n for n in difflib.get_close_matches(key, [k.lower() for k in known], n=5, cutoff=0.5)
                      if n not in close]
            if allow_raw:
                try:
                    close += [n for n in difflib.get_close_matches(name, list(_lm_eval_index()), n=5, cutoff=0.75)
                              if n not in close]
                except Exception:  # noqa: BLE001 - lm-eval missing or broken: the message still lists ours
                    pass
            hint = f"; close matches: {', '.join(close[:8])}" if close else ""
            extra = " or an lm-eval task name" if allow_raw else ""
            raise ValueError(f"unknown benchmark {name!r}{hint}; available benchmarks: {', '.join(known)}{extra}")
        for b in found:
            if b.name not in {x.name for x in out}:
                out.append(b)
    if not out:
        raise ValueError(f"no benchmark given; available benchmarks: {', '.join(_known_names(workspace))}")
    return out


def headline_metric(name: str, workspace: str | Path | None = None) -> str | None:
    """The headline metric of a benchmark name (for the leaderboard); None when the name is not ours."""
    b = BENCHMARKS.get(name) or BENCHMARKS.get(_ALIASES.get(name.lower(), ""))
    if b is not None:
        return b.headline
    if workspace is not None and local_benchmark(workspace, name) is not None:
        return "acc_norm"
    return None


# --------------------------------------------------------------------------- can it run here?

_HUB_CACHE: dict[str, tuple[float, bool]] = {}
_HUB_TTL_S = 60.0
_TRUE = ("1", "true", "yes", "on")


def hub_offline_by_env() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0, use_cache: bool = True) -> bool:
    """Whether the Hugging Face hub answers: False at once under ``HF_HUB_OFFLINE=1`` (or
    ``HF_DATASETS_OFFLINE=1``), else an HTTPS HEAD to ``HF_ENDPOINT`` (default https://huggingface.co).

    Never hangs: the request runs in a daemon thread that is given up after ``timeout`` seconds (a socket timeout
    alone does not bound a stuck DNS lookup). An answer is remembered for a minute."""
    if hub_offline_by_env():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    now = time.monotonic()
    if use_cache and endpoint in _HUB_CACHE and now - _HUB_CACHE[endpoint][0] < _HUB_TTL_S:
        return _HUB_CACHE[endpoint][1]
    answer: list[bool] = []

    def probe() -> None:
        import urllib.error
        import urllib.request

        try:
            req = urllib.request.Request(endpoint, method="HEAD", headers={"User-Agent": "hala-workbench"})
            with urllib.request.urlopen(req, timeout=timeout):
                answer.append(True)
        except urllib.error.HTTPError:
            answer.append(True)  # it answered (with an HTTP error status): reachable
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            answer.append(False)

    t = threading.Thread(target=probe, name="hala-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    ok = bool(answer and answer[0])
    _HUB_CACHE[endpoint] = (time.monotonic(), ok)
    return ok


def check_runnable(benchmarks: Iterable[Benchmark], hub: bool | None = None) -> None:
    """Raise ValueError for the first benchmark that cannot run here: one without an lm-eval implementation, or
    one whose data lives on the hub when the hub cannot be reached (``hub``: a known answer, else probed once)."""
    for b in benchmarks:
        if not b.runnable:
            raise ValueError(f"benchmark {b.name} ({b.title}) cannot run: {b.description}")
        if b.needs_hub:
            if hub is None:
                hub = hub_reachable()
            if not hub:
                raise ValueError(HUB_MESSAGE.format(name=b.name) + " (set HF_HUB_OFFLINE=0 on a machine that can "
                                 "reach it, or add the data as a local benchmark)")


def task_include_paths(benchmarks: Iterable[Benchmark], workspace: str | Path) -> tuple[list[Path], bool]:
    """(folders lm-eval's TaskManager must index, whether it also needs lm-eval's full built-in index).

    Registry benchmarks name their folders under ``lm_eval/tasks``; local ones their workspace folder; raw task
    names the folders their YAML files lie in — so no job indexes all ~14,000 built-in YAML files."""
    dirs: list[Path] = []
    defaults = False
    tasks_root: Path | None = None
    for b in benchmarks:
        if b.kind == "translation":
            continue
        if b.local:
            dirs.append(benchmarks_dir(workspace) / b.name)
        elif b.task_dirs:
            tasks_root = tasks_root or lm_eval_tasks_dir()
            dirs.extend(tasks_root / d for d in b.task_dirs)
        elif b.yaml_dirs:
            dirs.extend(Path(d) for d in b.yaml_dirs)
        elif b.tasks:
            defaults = True
    return _outermost(dirs), defaults


def _outermost(dirs: Iterable[Path | str]) -> list[Path]:
    """The folders without the ones inside another of them (lm-eval would index those twice)."""
    unique: list[Path] = []
    for d in (Path(x) for x in dirs):
        if d not in unique:
            unique.append(d)
    return [d for d in unique if not any(o != d and d.is_relative_to(o) for o in unique)]
