"""Export: reviewed corpus rows → SFT records (``messages``), bilingual pairs, files and a dataset card.

Rows arrive re-assembled from the database (``db.corpora.export_rows``): ``{"row", "shape", "meta",
"fields": [{"field", "role", "source", "target"}]}`` with every field's segments joined back together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hala_core.translation import CHAT_INSTRUCTION, HALA_TRANSLATOR_TEMPLATE, LANGUAGES

EXPORT_FORMATS = ("jsonl", "parquet", "hf")
KINDS = ("sft", "pairs")


def _turns(fields: list[dict[str, Any]], side: str, shape: str) -> list[dict[str, str]]:
    if shape == "alpaca":
        by_name = {f["field"]: f[side].strip() for f in fields}
        user = by_name.get("instruction", "")
        if by_name.get("input"):
            user = f"{user}\n\n{by_name['input']}"
        return [{"role": "user", "content": user}, {"role": "assistant", "content": by_name.get("output", "")}]
    return [{"role": f["role"], "content": f[side].strip()} for f in fields]


def sft_record(corpus: str, row: dict[str, Any], target_lang: str) -> dict[str, Any]:
    """One row as an SFT conversation in the target language, with the source conversation kept alongside."""
    rec: dict[str, Any] = {
        "id": f"{corpus}-{row['row']}",
        "messages": _turns(row["fields"], "target", row["shape"]),
        "source_messages": _turns(row["fields"], "source", row["shape"]),
        "language": target_lang,
    }
    if row.get("meta"):
        rec["meta"] = json.dumps(row["meta"], ensure_ascii=False, sort_keys=True)
    return rec


def pair_records(corpus: str, row: dict[str, Any], source_lang: str, target_lang: str) -> Iterator[dict[str, Any]]:
    """Bilingual supervision: each translated field as two examples (source→target and target→source), in the
    Hala translator template (``prompt``/``completion``) and as a chat turn (``messages``)."""
    for f in row["fields"]:
        texts = {source_lang: f["source"].strip(), target_lang: f["target"].strip()}
        if not texts[source_lang] or not texts[target_lang] or texts[source_lang] == texts[target_lang]:
            continue  # empty, or copied verbatim (code): nothing to learn about translation
        for src, tgt in ((source_lang, target_lang), (target_lang, source_lang)):
            langs = {"src_lang": LANGUAGES[src], "tgt_lang": LANGUAGES[tgt]}
            yield {
                "id": f"{corpus}-{row['row']}-{f['field']}{f.get('index', '')}-{src}{tgt}",
                "direction": f"{src}-{tgt}",
                "prompt": HALA_TRANSLATOR_TEMPLATE.format(text=texts[src], **langs),
                "completion": texts[tgt],
                "messages": [{"role": "user", "content": CHAT_INSTRUCTION.format(text=texts[src], **langs)},
                             {"role": "assistant", "content": texts[tgt]}],
            }


def write_records(records: Iterable[dict[str, Any]], out: Path, fmt: str) -> int:
    """Write records as JSONL, Parquet or a ``datasets`` folder (``save_to_disk``); returns how many."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; formats: {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if fmt == "jsonl":
        out.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        tmp = out.with_name(out.name + ".part")
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        tmp.replace(out)
        return n
    from datasets import Dataset

    rows = list(records)
    if not rows:
        raise ValueError("nothing to export: no row passed the export options (see the counts)")
    ds = Dataset.from_list(rows)
    if fmt == "parquet":
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out))
    else:
        ds.save_to_disk(str(out))
    return len(rows)


def dataset_card(*, name: str, kind: str, corpus: str, source: str, licence: str | None, translation: str,
                 translator: str, direction: str, template: str, include: str, counts: dict[str, int],
                 records: int, thresholds: dict[str, Any], review: dict[str, Any]) -> str:
    """A README.md (Hugging Face dataset card) saying where the data came from and how it was filtered."""
    lic = (licence or "unknown").lower()
    review_lines = "\n".join(f"| {k} | {v} |" for k, v in review.items()) or "| (none) | |"
    threshold_lines = "\n".join(f"| {k} | {v} |" for k, v in thresholds.items())
    count_lines = "\n".join(f"| {k} | {v} |" for k, v in counts.items())
    what = ("Arabic instruction data in conversation (`messages`) format, ready for supervised fine-tuning"
            if kind == "sft" else
            "bilingual English↔Arabic translation pairs (both directions) for fine-tuning a translator: "
            "`prompt`/`completion` in the Hala translator template, and the same pair as `messages`")
    return f"""---
license: {lic}
language: [ar, en]
task_categories: [{'text-generation' if kind == 'sft' else 'translation'}]
tags: [hala, arabic, machine-translated]
---
# {name}

{what}.

Made by the Hala Workbench from corpus **{corpus}** (source: `{source}`), translation **{translation}**:
translator `{translator}`, direction {direction}, prompt template `{template}`.

**Licence:** {licence or 'unknown'} — carried over from the source data; machine translations of it keep the
source's terms.

## Selection
Rows exported: **{records}** ({'records' if kind == 'sft' else 'pairs'}). Included: {
'segments accepted or edited by a reviewer' if include == 'reviewed' else
'reviewed segments, plus unreviewed ones that passed every quality filter'};
a rejected or flagged segment keeps its whole row out.

| rows | count |
|---|---|
{count_lines}

## Quality filter thresholds
| threshold | value |
|---|---|
{threshold_lines}

## Review
| state | segments |
|---|---|
{review_lines}
"""
