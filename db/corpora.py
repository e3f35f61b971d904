"""Corpora in the database: import (bulk), the store a translation job writes through, filters and export rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from db.models import Corpus, CorpusRow, Segment, Translation, TranslationRun, utcnow
from db.session import read_scope, session_scope
from hala_core.corpus import PlannedRow

INSERT_CHUNK = 5_000
# Translations in the double-annotation sample: order_key % DOUBLE_MOD < share × DOUBLE_MOD.
DOUBLE_MOD = 10_000


def order_key(segment_id: int) -> int:
    """A fixed pseudo-random order of segments (Knuth's multiplicative hash), for the random QA queue."""
    return (segment_id * 2_654_435_761) % 2_147_483_647


def get_corpus(s: Session, name: str) -> Corpus:
    corpus = s.scalar(select(Corpus).where(Corpus.name == name))
    if corpus is None:
        names = list(s.scalars(select(Corpus.name).order_by(Corpus.name)))
        raise ValueError(f"no corpus named {name!r}; corpora: {', '.join(names) or 'none yet (import one first)'}")
    return corpus


def get_run(s: Session, corpus: str, run: str | None = None) -> TranslationRun:
    """A corpus's translation run by name, or its newest one when ``run`` is None."""
    c = get_corpus(s, corpus)
    q = select(TranslationRun).where(TranslationRun.corpus_id == c.id)
    found = s.scalar(q.where(TranslationRun.name == run) if run else q.order_by(TranslationRun.id.desc()).limit(1))
    if found is None:
        names = list(s.scalars(select(TranslationRun.name).where(TranslationRun.corpus_id == c.id)
                               .order_by(TranslationRun.name)))
        if run:
            raise ValueError(f"corpus {corpus!r} has no translation {run!r}; its translations: "
                             f"{', '.join(names) or 'none yet'}")
        raise ValueError(f"corpus {corpus!r} has no translation yet; run a translate job on it first")
    return found


# --------------------------------------------------------------------------- import

def import_corpus(url: str, name: str, planned: list[PlannedRow], *, source: str, format: str, source_lang: str,
                  licence: str | None, max_tokens: int, owner: str | None = None, dedupe: bool = True,
                  n_problems: int = 0, meta: dict[str, Any] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Store a planned corpus in one transaction (all or nothing): rows, then their segments.

    ``dedupe`` drops records whose texts repeat an earlier record (same roles and whitespace-normalised texts).
    Returns the corpus statistics."""
    with session_scope(url) as s:
        if s.scalar(select(Corpus.id).where(Corpus.name == name)) is not None:
            raise ValueError(f"a corpus named {name!r} exists already; pick another name (or delete it first)")
        has_refs = any(f.reference is not None for p in planned[:50] for f, _ in p.fields)
        licence = licence[:100] if licence else None  # a dataset card's licence can be a paragraph
        corpus = Corpus(name=name, source=source, format=format, source_lang=source_lang, licence=licence,
                        has_references=has_refs, max_tokens=max_tokens, created_by=owner, n_problems=n_problems,
                        meta=dict(meta or {}))
        s.add(corpus)
        s.flush()
        seen: set[str] = set()
        kept: list[PlannedRow] = []
        for p in planned:
            if dedupe and p.content_hash in seen:
                continue
            seen.add(p.content_hash)
            kept.append(p)
        conn = s.connection()
        n_segments = n_chars = n_tokens = 0
        from hala_core.segment import count_tokens

        for start in range(0, len(kept), INSERT_CHUNK):
            chunk = kept[start:start + INSERT_CHUNK]
            row_params = [{"corpus_id": corpus.id, "idx": start + i, "line": p.record.line, "shape": p.record.shape,
                           "content_hash": p.content_hash, "meta": p.record.meta or None}
                          for i, p in enumerate(chunk)]
            ids = [r[0] for r in conn.execute(
                insert(CorpusRow).returning(CorpusRow.id, sort_by_parameter_order=True), row_params)]
            seg_params: list[dict[str, Any]] = []
            for row_id, p in zip(ids, chunk, strict=True):
                for field_idx, (f, pieces) in enumerate(p.fields):
                    if not pieces:  # an empty field keeps its place as an empty verbatim segment
                        seg_params.append({"corpus_id": corpus.id, "row_id": row_id, "field_idx": field_idx,
                                           "field_name": f.name, "role": f.role, "part": 0, "text": "",
                                           "spans": None, "sep": "", "verbatim": True, "reference": f.reference,
                                           "n_chars": 0, "n_tokens": 0})
                        continue
                    for part, piece in enumerate(pieces):
                        chars = len(piece.text)
                        toks = 0 if piece.verbatim else count_tokens(piece.text)
                        n_chars += chars
                        n_tokens += toks
                        seg_params.append({"corpus_id": corpus.id, "row_id": row_id, "field_idx": field_idx,
                                           "field_name": f.name, "role": f.role, "part": part, "text": piece.text,
                                           "spans": piece.spans or None, "sep": piece.sep,
                                           "verbatim": piece.verbatim,
                                           "reference": f.reference if part == 0 else None,
                                           "n_chars": chars, "n_tokens": toks})
            conn.execute(insert(Segment), seg_params)
            n_segments += len(seg_params)
            if progress:
                progress(start + len(chunk), len(kept))
        corpus.n_rows = len(kept)
        corpus.n_segments = n_segments
        corpus.n_chars = n_chars
        corpus.n_tokens = n_tokens
        corpus.n_duplicates = len(planned) - len(kept)
        return corpus_stats(corpus)


def corpus_stats(c: Corpus) -> dict[str, Any]:
    return {"corpus": c.name, "format": c.format, "language": c.source_lang, "rows": c.n_rows,
            "segments": c.n_segments, "characters": c.n_chars, "tokens": c.n_tokens,
            "duplicates skipped": c.n_duplicates, "records skipped": c.n_problems,
            "references": "yes" if c.has_references else "no", "licence": c.licence or "unknown",
            "source": c.source}


def list_corpora(s: Session) -> list[dict[str, Any]]:
    out = []
    for c in s.scalars(select(Corpus).order_by(Corpus.id.desc())):
        runs = list(s.scalars(select(TranslationRun.name).where(TranslationRun.corpus_id == c.id)
                              .order_by(TranslationRun.id)))
        translated, reviewed = s.execute(
            select(func.count(Translation.id), func.count(Translation.reviewed_by))
            .join(TranslationRun, TranslationRun.id == Translation.run_id)
            .where(TranslationRun.corpus_id == c.id)).one()
        out.append({**corpus_stats(c), "translations": ", ".join(runs), "translated": int(translated or 0),
                    "reviewed": int(reviewed or 0), "created": c.created_at.strftime("%Y-%m-%d %H:%M")})
    return out


def delete_corpus(url: str, name: str) -> None:
    with session_scope(url) as s:
        c = get_corpus(s, name)
        s.execute(delete(Corpus).where(Corpus.id == c.id))


def row_texts(s: Session, row_id: int) -> list[dict[str, Any]]:
    """The fields of one row with their source text rebuilt from segments (protected spans restored)."""
    from hala_core.segment import restore

    fields: dict[int, dict[str, Any]] = {}
    for seg in s.scalars(select(Segment).where(Segment.row_id == row_id).order_by(Segment.field_idx, Segment.part)):
        f = fields.setdefault(seg.field_idx, {"field": seg.field_name, "role": seg.role, "text": ""})
        f["text"] += restore(seg.text, seg.spans or {})[0] + seg.sep
    return [fields[k] for k in sorted(fields)]


# --------------------------------------------------------------------------- the translation job's store

def check_translation(s: Session, corpus: str, name: str, *, model_ref: str, direction: str, template: str,
                      settings: dict[str, Any]) -> tuple[Corpus, TranslationRun | None, bool]:
    """Can this corpus be translated under this name? (corpus, existing run or None, swapped) or ValueError.

    An existing translation of that name is resumed only with the same translator and generation settings."""
    c = get_corpus(s, corpus)
    src, tgt = direction.split("-")
    swapped = src != c.source_lang
    if swapped and not c.has_references:
        raise ValueError(f"corpus {corpus!r} is in {c.source_lang!r} and has no references in {src!r}, so it "
                         f"cannot be translated {direction}; use direction {c.source_lang}-{src}")
    run = s.scalar(select(TranslationRun).where(TranslationRun.corpus_id == c.id, TranslationRun.name == name))
    if run is not None:
        wanted = {"model_ref": model_ref, "direction": direction, "template": template, "settings": settings}
        have = {"model_ref": run.model_ref, "direction": run.direction, "template": run.template,
                "settings": run.settings}
        diff = [k for k in wanted if wanted[k] != have[k]]
        if diff:
            raise ValueError(
                f"corpus {corpus!r} already has a translation {name!r} made with other "
                + ", ".join(f"{k} ({have[k]!r} there, {wanted[k]!r} now)" for k in diff)
                + "; resuming needs the same translator and settings: give the job another translation name")
    return c, run, swapped


@dataclass
class PendingSegment:
    id: int
    text: str  # masked source text to translate
    spans: dict[str, str]
    verbatim: bool
    reference: str | None


class CorpusStore:
    """What a translate step needs from the db (``hala_core.translate.CorpusStore``), one short transaction each."""

    def __init__(self, url: str) -> None:
        self.url = url

    def open_run(self, corpus: str, name: str, *, model_ref: str, model_artifact_id: int | None, direction: str,
                 template: str, settings: dict[str, Any], job_id: int, double_share: float) -> dict[str, Any]:
        """Create the run, or reopen it to resume when it was made with the same translator and settings."""
        with session_scope(self.url) as s:
            c, run, swapped = check_translation(s, corpus, name, model_ref=model_ref, direction=direction,
                                                template=template, settings=settings)
            tgt = direction.split("-")[1]
            if run is None:
                run = TranslationRun(corpus_id=c.id, name=name, model_ref=model_ref,
                                     model_artifact_id=model_artifact_id, direction=direction, template=template,
                                     settings=settings, job_id=job_id, n_total=c.n_segments,
                                     double_share=double_share)
                s.add(run)
                s.flush()
            else:
                run.job_id, run.status, run.updated_at = job_id, "running", utcnow()
            done = s.scalar(select(func.count(Translation.id)).where(Translation.run_id == run.id)) or 0
            return {"run_id": run.id, "corpus_id": c.id, "total": c.n_segments, "done": int(done),
                    "swapped": swapped, "target_lang": tgt, "has_references": c.has_references,
                    "thresholds": dict(c.thresholds or {}), "licence": c.licence,
                    "corpus_artifact_id": c.artifact_id}

    def pending(self, run_id: int, after_id: int, limit: int, swapped: bool) -> list[PendingSegment]:
        """Segments of the run's corpus with no translation in the run yet, by id, after ``after_id``."""
        from hala_core.segment import protect

        with read_scope(self.url) as s:
            run = s.get(TranslationRun, run_id)
            done = select(Translation.segment_id).where(Translation.run_id == run_id)
            rows = s.execute(
                select(Segment.id, Segment.text, Segment.spans, Segment.verbatim, Segment.reference)
                .where(Segment.corpus_id == run.corpus_id, Segment.id > after_id, Segment.id.not_in(done))
                .order_by(Segment.id).limit(limit)).all()
        out = []
        for sid, text, spans, verbatim, ref in rows:
            if swapped:  # translate the reference side; the source becomes the reference
                from hala_core.segment import restore

                source = restore(text, spans or {})[0]
                masked, new_spans = protect(ref or "")
                out.append(PendingSegment(sid, masked, new_spans, not (ref or "").strip(), source))
            else:
                out.append(PendingSegment(sid, text, dict(spans or {}), bool(verbatim), ref))
        return out

    def save(self, run_id: int, job_id: int, items: list[dict[str, Any]], double_share: float) -> int:
        """Insert translations; a segment already translated in this run is left alone. Returns how many new."""
        if not items:
            return 0
        rows = [{"run_id": run_id, "segment_id": it["segment_id"], "job_id": job_id, "text": it["text"],
                 "n_tokens": it.get("n_tokens", 0), "scores": it["scores"], "flags": ",".join(it["flags"]),
                 "passed": not it["flags"], "order_key": order_key(it["segment_id"]),
                 "double": order_key(it["segment_id"]) % DOUBLE_MOD < double_share * DOUBLE_MOD}
                for it in items]
        ids = [r["segment_id"] for r in rows]
        with session_scope(self.url) as s:
            already = s.scalar(select(func.count(Translation.id)).where(Translation.run_id == run_id,
                                                                        Translation.segment_id.in_(ids))) or 0
            s.connection().execute(_insert_ignore(s, Translation.__table__), rows)
            s.execute(update(TranslationRun).where(TranslationRun.id == run_id).values(updated_at=utcnow()))
            return len(set(ids)) - int(already)

    def count_done(self, run_id: int) -> int:
        with read_scope(self.url) as s:
            return int(s.scalar(select(func.count(Translation.id)).where(Translation.run_id == run_id)) or 0)

    def scored_fields(self, run_id: int, swapped: bool) -> tuple[list[str], list[str]]:
        """(hypotheses, references) per field that has a reference, translations of its pieces joined."""
        hyps: list[str] = []
        refs: list[str] = []
        from hala_core.segment import restore

        with read_scope(self.url) as s:
            q = (select(Segment.row_id, Segment.field_idx, Segment.text, Segment.spans, Segment.reference,
                        Segment.sep, Translation.text)
                 .join(Translation, (Translation.segment_id == Segment.id) & (Translation.run_id == run_id))
                 .order_by(Segment.row_id, Segment.field_idx, Segment.part))
            current: tuple[int, int] | None = None
            for row_id, field_idx, text, spans, ref, sep, out in s.execute(q):
                key = (row_id, field_idx)
                if key != current:
                    current = key
                    reference = restore(text, spans or {})[0] if swapped else ref
                    if reference is None or not reference.strip():
                        current = None
                        continue
                    hyps.append(out + sep)
                    refs.append(reference)
                elif hyps:
                    hyps[-1] += out + sep
        return [h.strip() for h in hyps], refs

    def finish(self, run_id: int, scores: dict[str, float] | None) -> None:
        with session_scope(self.url) as s:
            run = s.get(TranslationRun, run_id)
            done = s.scalar(select(func.count(Translation.id)).where(Translation.run_id == run_id)) or 0
            run.status = "done" if done >= run.n_total else "partial"
            if scores:
                run.scores = dict(scores)
            run.updated_at = utcnow()


def run_status(s: Session, run: TranslationRun) -> str:
    """The run's state as a reader needs it: a "running" run whose job is gone was stopped, and can resume."""
    from db.models import ACTIVE_STATES, Job

    if run.status != "running" or run.job_id is None:
        return run.status
    job = s.get(Job, run.job_id)
    if job is None or job.status in ACTIVE_STATES or job.status == "queued":
        return run.status
    return f"stopped (job {job.id} {job.status}; retry it to resume)"


def _insert_ignore(s: Session, table: Any) -> Any:
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:  # pragma: no cover - other servers: plain insert (the unique constraint still refuses duplicates)
        return insert(table)
    return dialect_insert(table).on_conflict_do_nothing()


# --------------------------------------------------------------------------- filters

def set_thresholds(url: str, corpus: str, thresholds: dict[str, Any]) -> dict[str, int]:
    """Store the corpus's filter thresholds and re-flag every translation of it from its stored scores."""
    from hala_core.filters import FilterThresholds, flags

    th = FilterThresholds(**thresholds)
    changed = total = 0
    with session_scope(url) as s:
        c = get_corpus(s, corpus)
        c.thresholds = th.model_dump()
        run_ids = list(s.scalars(select(TranslationRun.id).where(TranslationRun.corpus_id == c.id)))
        if not run_ids:
            return {"translations": 0, "changed": 0}
        q = (select(Translation.id, Translation.scores, Translation.flags, Segment.verbatim)
             .join(Segment, Segment.id == Translation.segment_id).where(Translation.run_id.in_(run_ids)))
        updates = []
        for tid, scores, old, verbatim in s.execute(q):
            total += 1
            new = ",".join(flags(scores or {}, th, verbatim=bool(verbatim)))
            if new != old:
                updates.append({"tid": tid, "flags": new, "passed": not new})
        if updates:
            from sqlalchemy import bindparam

            t = Translation.__table__
            s.connection().execute(update(t).where(t.c.id == bindparam("tid"))
                                   .values(flags=bindparam("flags"), passed=bindparam("passed")), updates)
            changed = len(updates)
    return {"translations": total, "changed": changed}


def filter_data(s: Session, run_id: int, sample: int = 20_000) -> tuple[list[dict[str, float]], list[list[str]]]:
    """Scores and flags of (up to ``sample``) translations of a run, for the summary charts."""
    rows = s.execute(select(Translation.scores, Translation.flags).where(Translation.run_id == run_id)
                     .order_by(Translation.order_key).limit(sample)).all()
    return [dict(r[0] or {}) for r in rows], [[f for f in (r[1] or "").split(",") if f] for r in rows]


def flag_counts(s: Session, run_id: int) -> dict[str, int]:
    """Exact flag counts over the whole run (flags are few; count per distinct flag string)."""
    counts: dict[str, int] = {}
    for flag_str, n in s.execute(select(Translation.flags, func.count()).where(Translation.run_id == run_id)
                                 .group_by(Translation.flags)):
        for f in (flag_str or "").split(","):
            key = f or "passed"
            counts[key] = counts.get(key, 0) + n
    return counts


# --------------------------------------------------------------------------- export

INCLUDE = ("reviewed", "passed")


def export_rows(s: Session, run_id: int, include: str = "reviewed",
                stats: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """The run's rows re-assembled: ``{"row": idx, "shape", "meta", "fields": [{field, role, source, target}]}``.

    ``include="reviewed"``: a row goes out when every translated segment of it was accepted or edited.
    ``include="passed"``: also unreviewed segments that passed the filters. A rejected or flagged segment, or
    one not translated yet, keeps its whole row out. ``stats`` (if given) counts rows kept and left out, by why.
    """
    from hala_core.segment import restore

    if include not in INCLUDE:
        raise ValueError(f"include must be one of {', '.join(INCLUDE)}, not {include!r}")
    stats = stats if stats is not None else {}
    for k in ("rows", "kept", "rejected", "unreviewed", "failed filters", "untranslated"):
        stats.setdefault(k, 0)
    run = s.get(TranslationRun, run_id)
    swapped = run.direction.split("-")[0] != s.get(Corpus, run.corpus_id).source_lang
    q = (select(CorpusRow.idx, CorpusRow.shape, CorpusRow.meta, Segment.field_idx, Segment.field_name, Segment.role,
                Segment.text, Segment.spans, Segment.sep, Segment.verbatim, Segment.reference,
                Translation.text, Translation.final_text, Translation.status, Translation.passed)
         .join(Segment, Segment.row_id == CorpusRow.id)
         .outerjoin(Translation, (Translation.segment_id == Segment.id) & (Translation.run_id == run_id))
         .where(CorpusRow.corpus_id == run.corpus_id)
         .order_by(CorpusRow.idx, Segment.field_idx, Segment.part)
         .execution_options(yield_per=5_000))
    current: dict[str, Any] | None = None
    why: str | None = None

    def flush() -> Iterator[dict[str, Any]]:
        if current is None:
            return
        stats["rows"] += 1
        if why:
            stats[why] += 1
        else:
            stats["kept"] += 1
            yield current

    for (idx, shape, meta, field_idx, field_name, role, text, spans, sep, verbatim, ref, mt, final, status,
         passed) in s.execute(q):
        if current is None or current["row"] != idx:
            yield from flush()
            current = {"row": idx, "shape": shape, "meta": meta or {}, "fields": []}
            why = None
        fields = current["fields"]
        if not fields or fields[-1]["index"] != field_idx:
            fields.append({"index": field_idx, "field": field_name, "role": role, "source": "", "target": ""})
        f = fields[-1]
        source = restore(text, spans or {})[0]
        if swapped:
            source = ref or ""
        if mt is None:
            if verbatim and not swapped:
                target = source
            else:
                why = why or "untranslated"
                target = ""
        elif status in ("rejected", "flagged"):
            why = why or "rejected"
            target = ""
        elif status in ("accepted", "edited"):
            target = final if final is not None else mt
        elif include == "passed" and passed:
            target = mt
        else:
            why = why or ("unreviewed" if include == "reviewed" else "failed filters")
            target = mt
        f["source"] += source + sep
        f["target"] += target + sep
    yield from flush()


def review_stats(s: Session, run_id: int) -> dict[str, int]:
    counts = dict(s.execute(select(Translation.status, func.count()).where(Translation.run_id == run_id)
                            .group_by(Translation.status)).all())
    return {k: int(v) for k, v in counts.items()}
