"""Corpus import and export as the Corpus tab and ``hala corpus`` run them: read, plan, store, register.

Import runs in the calling process (reading and storing 5,000 Alpaca records takes well under a second); the
translation, which takes hours at scale, is a job.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from db.artifacts import register_artifact
from db.corpora import export_rows, get_corpus, get_run, import_corpus, review_stats
from db.models import Corpus
from db.session import read_scope, session_scope
from hala_core.settings import Settings, resolve_inside
from hala_core.specs import check_name

PREVIEW_ROWS = 5
# The sample corpora imported in one click: (name, path under the sample data folder, records).
SAMPLES = (("alpaca-sample", "alpaca_5000/alpaca_5000.json", 500),
           ("ntrex-sample", "ntrex128_en_ar", 200))


def _source(settings: Settings, source: str, fmt: str | None) -> str:
    from hala_core.models import looks_like_hub_id

    source = (source or "").strip()
    if not source:
        raise ValueError("no file given: upload a file or type a path (or a hub dataset id)")
    if fmt == "hub" or (fmt is None and looks_like_hub_id(source)):
        return source
    return str(resolve_inside(source, settings.read_roots))


def preview(settings: Settings, source: str, fmt: str | None = None, mapping: dict[str, str] | None = None,
            encoding: str | None = None, reference: str | None = None, language: str = "en",
            n: int = PREVIEW_ROWS) -> dict[str, Any]:
    """The detected format, the first ``n`` records and the problems among the first few hundred records."""
    from hala_core.corpus_io import read_corpus

    src = _source(settings, source, fmt)
    ref = _source(settings, reference, None) if reference else None
    res = read_corpus(src, format=fmt, mapping=mapping, on_error="skip", encoding=encoding, limit=max(n, 200),
                      reference=ref, source_lang=language)
    rows = [{"line": r.line, "shape": r.shape,
             **{f"{f.name}{i if f.name == 'turn' else ''} ({f.role})": f.text[:300] for i, f in enumerate(r.fields)},
             **({"reference": r.fields[0].reference[:300]} if r.fields and r.fields[0].reference else {})}
            for r in res.records[:n]]
    return {"format": res.format, "licence": res.licence, "rows": rows,
            "problems": [str(p) for p in res.problems[:50]], "records_read": len(res.records)}


def import_file(settings: Settings, source: str, name: str, *, fmt: str | None = None,
                mapping: dict[str, str] | None = None, on_error: str = "abort", encoding: str | None = None,
                language: str = "en", max_tokens: int = 256, dedupe: bool = True, limit: int | None = None,
                reference: str | None = None, licence: str | None = None, owner: str | None = None
                ) -> dict[str, Any]:
    """Read a file (or hub dataset), cut it into segments and store it as a corpus; register it as a dataset."""
    from hala_core.corpus import plan_rows
    from hala_core.corpus_io import read_corpus

    check_name(name, "corpus name")
    if language not in ("en", "ar"):
        raise ValueError(f"language {language!r} is not supported; use en or ar")
    if not 8 <= max_tokens <= 32_768:
        raise ValueError(f"max_tokens {max_tokens} is outside 8–32768 (the segment budget)")
    with read_scope(settings.db_url) as s:  # fail before reading a big file
        if s.query(Corpus.id).filter(Corpus.name == name).first() is not None:
            raise ValueError(f"a corpus named {name!r} exists already; pick another name")
    src = _source(settings, source, fmt)
    ref = _source(settings, reference, None) if reference else None
    t0 = time.perf_counter()
    res = read_corpus(src, format=fmt, mapping=mapping, on_error=on_error, encoding=encoding, limit=limit,
                      reference=ref, source_lang=language)
    t_read = time.perf_counter() - t0
    planned = plan_rows(res.records, max_tokens)
    t_plan = time.perf_counter() - t0 - t_read
    lic = licence or res.licence
    stats = import_corpus(settings.db_url, name, planned, source=src, format=res.format, source_lang=language,
                          licence=lic, max_tokens=max_tokens, owner=owner, dedupe=dedupe,
                          n_problems=len(res.problems),
                          meta={"problems": [str(p) for p in res.problems[:200]], "mapping": mapping or {},
                                "records_seen": res.total})
    with session_scope(settings.db_url) as s:
        corpus = get_corpus(s, name)
        art = register_artifact(s, "dataset", f"corpus-{name}", src,
                                {"corpus": name, "format": res.format, "licence": lic, "rows": corpus.n_rows,
                                 "segments": corpus.n_segments, "source": src}, owner=owner)
        corpus.artifact_id = art.id
    total = time.perf_counter() - t0
    stats.update({"problems": [str(p) for p in res.problems[:20]], "seconds": round(total, 3),
                  "read_s": round(t_read, 3), "segment_s": round(t_plan, 3),
                  "segments_per_s": round(stats["segments"] / total, 1) if total else None})
    return stats


def export(settings: Settings, corpus: str, *, translation: str | None = None, fmt: str = "jsonl",
           out: str | Path | None = None, include: str = "reviewed", kind: str = "sft", name: str | None = None,
           owner: str | None = None, check_roots: bool = False) -> dict[str, Any]:
    """Write a translation of a corpus as SFT records (``kind="sft"``) or bilingual pairs (``"pairs"``), with a
    dataset card, and register it as a dataset artifact made from the corpus and the translator."""
    from hala_core.corpus_export import (
        EXPORT_FORMATS,
        KINDS,
        dataset_card,
        pair_records,
        sft_record,
        write_records,
    )
    from hala_core.filters import FilterThresholds

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; formats: {', '.join(EXPORT_FORMATS)}")
    if kind not in KINDS:
        raise ValueError(f"unknown export kind {kind!r}; kinds: {', '.join(KINDS)}")
    with read_scope(settings.db_url) as s:
        c = get_corpus(s, corpus)
        run = get_run(s, corpus, translation)
        default = f"{corpus}-{run.name}-{kind}" + ("" if fmt == "jsonl" else f"-{fmt}")
        name = check_name(name or default, "dataset name")
        suffix = {"jsonl": ".jsonl", "parquet": ".parquet", "hf": ""}[fmt]
        folder = settings.datasets_dir / name
        path = Path(out).expanduser().resolve() if out else (folder if fmt == "hf" else folder / f"{name}{suffix}")
        if out and check_roots:
            path = resolve_inside(path, (settings.home,))
        src_lang, tgt_lang = run.direction.split("-")
        counts: dict[str, int] = {}
        rows = list(export_rows(s, run.id, include, counts))
        review = review_stats(s, run.id)
        thresholds = FilterThresholds(**(c.thresholds or {})).model_dump()
        info = {"corpus": c.name, "source": c.source, "licence": c.licence, "translation": run.name,
                "translator": run.model_ref, "direction": run.direction, "template": run.template,
                "inputs": [i for i in (c.artifact_id, run.model_artifact_id) if i]}
    if kind == "sft":
        records = [sft_record(corpus, r, tgt_lang) for r in rows]
    else:
        records = [p for r in rows for p in pair_records(corpus, r, src_lang, tgt_lang)]
    n = write_records(records, path, fmt)
    card = dataset_card(name=name, kind=kind, corpus=info["corpus"], source=info["source"], licence=info["licence"],
                        translation=info["translation"], translator=info["translator"], direction=info["direction"],
                        template=info["template"], include=include, counts=counts, records=n,
                        thresholds=thresholds, review=review)
    card_path = (path / "README.md") if fmt == "hf" else path.with_name(f"{path.name}.README.md")
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.write_text(card, encoding="utf-8")
    with session_scope(settings.db_url) as s:
        art = register_artifact(s, "dataset", name, str(path),
                                {"kind": kind, "format": fmt, "records": n, "licence": info["licence"],
                                 "corpus": corpus, "translation": info["translation"], "include": include,
                                 "counts": counts, "card": str(card_path)},
                                inputs=info["inputs"], owner=owner)
    return {"dataset": name, "path": str(path), "card": str(card_path), "records": n, "counts": counts,
            "artifact_id": art.id, "format": fmt, "kind": kind}


def import_sample_data(settings: Settings, owner: str | None) -> str:
    """Import the sample corpora (Alpaca and NTREX) from the sample data folder, those not imported yet."""
    if settings.data_dir is None:
        raise ValueError("no sample data folder here (../shared/data); import a file instead")
    lines = []
    for name, rel, limit in SAMPLES:
        src = settings.data_dir / rel
        if not src.exists():
            lines.append(f"- `{name}`: `{src}` is missing, skipped")
            continue
        with read_scope(settings.db_url) as s:
            exists = s.query(Corpus.id).filter(Corpus.name == name).first() is not None
        if not exists:
            try:
                st = import_file(settings, str(src), name, limit=limit, owner=owner)
            except ValueError as e:
                if "exists already" not in str(e):  # a second click racing the first one
                    raise
            else:
                lines.append(f"- imported `{name}`: {st['rows']} rows, {st['segments']} segments, "
                             f"licence {st['licence']}")
                continue
        lines.append(f"- `{name}` was imported already")
    return "\n".join(lines)
