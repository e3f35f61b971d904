"""The review queue: claims with a lease, saves with optimistic locking, edit history, progress and agreement.

Claiming is one ``UPDATE … WHERE id = (SELECT … LIMIT 1) … RETURNING`` (``SKIP LOCKED`` on server databases),
so two annotators are never handed the same segment while its lease runs. A save names the ``version`` the
annotator saw; when somebody saved in between, nothing is written and :class:`ReviewConflict` says who and what.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from db.corpora import row_texts
from db.models import (
    REVIEWED_STATES,
    Corpus,
    CorpusRow,
    ReviewEvent,
    Segment,
    Translation,
    TranslationRun,
    utcnow,
)

MODES = ("next", "flagged", "random", "second")
MODE_LABELS = {"next": "next unreviewed", "flagged": "flagged first", "random": "random QA sample",
               "second": "second opinion (double annotation)"}
ACTIONS = ("accept", "edit", "reject", "flag")
ACTION_STATUS = {"accept": "accepted", "edit": "edited", "reject": "rejected", "flag": "flagged"}
DEFAULT_LEASE_S = 300
MAX_TEXT = 100_000


class ReviewConflict(ValueError):
    """A stale save: somebody saved this segment after it was handed out. ``current`` holds their version."""

    def __init__(self, message: str, current: dict[str, Any]) -> None:
        super().__init__(message)
        self.current = current


def _claimable(user: str, now: datetime) -> Any:
    return or_(Translation.claim_expires.is_(None), Translation.claim_expires < now, Translation.claimed_by == user)


def _candidate(run_id: int, user: str, mode: str, now: datetime) -> Any:
    base = select(Translation.id).where(Translation.run_id == run_id, _claimable(user, now))
    if mode == "second":
        return (base.where(Translation.double.is_(True), Translation.status.in_(REVIEWED_STATES),
                           Translation.second_status.is_(None), Translation.reviewed_by != user)
                .order_by(Translation.id))
    base = base.where(Translation.status == "unreviewed")
    if mode == "flagged":
        return base.where(Translation.passed.is_(False)).order_by(Translation.id)
    if mode == "random":
        return base.order_by(Translation.order_key)
    return base.order_by(Translation.id)


def claim_next(s: Session, run_id: int, user: str, mode: str = "next", lease_s: int = DEFAULT_LEASE_S
               ) -> int | None:
    """Hand ``user`` a translation to review (their own live claim first), or None when the queue is empty."""
    if mode not in MODES:
        raise ValueError(f"unknown queue mode {mode!r}; modes: {', '.join(MODES)}")
    now = utcnow()
    # the segment this annotator already holds (a reload, a second tab) comes back first, if it fits the queue
    held = None
    for tid, status, double, second_status, reviewed_by in s.execute(
            select(Translation.id, Translation.status, Translation.double, Translation.second_status,
                   Translation.reviewed_by)
            .where(Translation.claimed_by == user, Translation.run_id == run_id, Translation.claim_expires >= now)
            .order_by(Translation.id)):
        fits = (double and status in REVIEWED_STATES and second_status is None and reviewed_by != user
                if mode == "second" else status == "unreviewed")
        if fits:
            held = tid
            break
    picks = [mode] + (["next"] if mode == "flagged" else [])
    # the held segment first; if it slipped away meanwhile (on a server database its lease can run out and
    # another annotator take it between the SELECT above and the UPDATE), the queue's next one
    targets: list[Any] = [held] if held is not None else []
    targets += [_candidate(run_id, user, m, now).limit(1).with_for_update(skip_locked=True).scalar_subquery()
                for m in picks]
    for target in targets:
        stmt = (update(Translation).where(Translation.id == target, _claimable(user, now))
                .values(claimed_by=user, claim_expires=now + timedelta(seconds=lease_s))
                .returning(Translation.id).execution_options(synchronize_session=False))
        row = s.execute(stmt).first()
        if row:
            tid = int(row[0])
            # one annotator holds one segment per translation: switching queues frees the one left behind.
            # SKIP LOCKED: a row of ours that another transaction has locked is being taken over (our lease ran
            # out) or saved (which frees it anyway); waiting for it could deadlock with that transaction's own
            # release of a segment we just took over (PostgreSQL; SQLite ignores it and runs claims one at a time)
            mine = (select(Translation.id).where(Translation.run_id == run_id, Translation.claimed_by == user,
                                                 Translation.id != tid)
                    .with_for_update(skip_locked=True))
            s.execute(update(Translation).where(Translation.id.in_(mine), Translation.claimed_by == user)
                      .values(claimed_by=None, claim_expires=None).execution_options(synchronize_session=False))
            return tid
    return None


def release(s: Session, translation_id: int, user: str) -> None:
    s.execute(update(Translation).where(Translation.id == translation_id, Translation.claimed_by == user)
              .values(claimed_by=None, claim_expires=None).execution_options(synchronize_session=False))


def item(s: Session, translation_id: int) -> dict[str, Any]:
    """Everything the review pane shows for one translation: source, translation, scores, row context."""
    from hala_core.segment import restore

    t = s.get(Translation, translation_id)
    if t is None:
        raise ValueError(f"no translation {translation_id}")
    seg = s.get(Segment, t.segment_id)
    run = s.get(TranslationRun, t.run_id)
    corpus = s.get(Corpus, run.corpus_id)
    row = s.get(CorpusRow, seg.row_id)
    swapped = run.direction.split("-")[0] != corpus.source_lang
    source = (seg.reference or "") if swapped else restore(seg.text, seg.spans or {})[0]
    n_parts = s.scalar(select(func.count(Segment.id)).where(Segment.row_id == seg.row_id,
                                                            Segment.field_idx == seg.field_idx)) or 1
    return {
        "id": t.id, "run_id": run.id, "run": run.name, "corpus": corpus.name, "direction": run.direction,
        "segment_id": seg.id, "row": row.idx, "line": row.line, "field": seg.field_name, "role": seg.role,
        "part": seg.part, "parts": int(n_parts), "source": source,
        "reference": (restore(seg.text, seg.spans or {})[0] if swapped else seg.reference),
        "mt": t.text, "text": t.final_text if t.final_text is not None else t.text,
        "status": t.status, "version": t.version, "flags": [f for f in t.flags.split(",") if f],
        "scores": dict(t.scores or {}), "reason": t.reason, "reviewed_by": t.reviewed_by,
        "reviewed_at": t.reviewed_at, "double": t.double, "second_status": t.second_status,
        "second_by": t.second_by, "claimed_by": t.claimed_by, "claim_expires": t.claim_expires,
        "context": row_texts(s, seg.row_id), "verbatim": seg.verbatim,
    }


def save(s: Session, translation_id: int, user: str, action: str, version: int, text: str | None = None,
         reason: str | None = None, second: bool = False) -> dict[str, Any]:
    """Record a review decision if ``version`` is still current; raise :class:`ReviewConflict` if not.

    ``accept`` keeps the shown text (or ``text`` when it differs, which counts as an edit); ``edit`` saves
    ``text``; ``reject`` and ``flag`` need no text (``flag`` needs a reason). ``second=True`` records the
    second annotator's opinion of a double-annotation item instead of changing the first decision.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown review action {action!r}; actions: {', '.join(ACTIONS)}")
    if action == "flag" and not (reason or "").strip():
        raise ValueError("flagging needs a reason (what is wrong with this translation)")
    if text is not None and len(text) > MAX_TEXT:
        raise ValueError(f"the edited text has {len(text):,} characters; the limit is {MAX_TEXT:,}")
    if action == "edit" and not (text or "").strip():
        raise ValueError("an edit cannot be empty: reject the translation instead")
    t = s.get(Translation, translation_id)
    if t is None:
        raise ValueError(f"no translation {translation_id}")
    shown = t.final_text if t.final_text is not None else t.text
    if action == "accept" and text is not None and text != shown:
        action = "edit"
    status = ACTION_STATUS[action]
    new_text = text if action == "edit" else (shown if action == "accept" else None)
    now = utcnow()
    if second:
        values: dict[str, Any] = {"second_status": status, "second_text": new_text, "second_by": user,
                                  "second_at": now}
        before = t.second_text
    else:
        values = {"status": status, "reviewed_by": user, "reviewed_at": now,
                  "reason": (reason or "").strip()[:500] or None}
        if action in ("accept", "edit"):
            values["final_text"] = new_text
        before = shown
    values.update(version=Translation.version + 1, claimed_by=None, claim_expires=None)
    n = s.execute(update(Translation).where(Translation.id == translation_id, Translation.version == version)
                  .values(**values).execution_options(synchronize_session=False)).rowcount
    if n == 0:
        s.refresh(t)
        current = {"version": t.version, "status": t.status, "by": t.reviewed_by, "at": t.reviewed_at,
                   "text": t.final_text if t.final_text is not None else t.text, "second_by": t.second_by}
        who = t.second_by if second and t.second_by else t.reviewed_by
        when = (t.second_at if second else t.reviewed_at)
        raise ReviewConflict(
            f"conflict: {who or 'someone'} saved this segment"
            f"{' at ' + when.strftime('%H:%M:%S') if when else ''} after it was handed to you "
            f"(version {t.version}, you had version {version}); nothing of yours was written. Their text is "
            "shown now — reapply your change if it is still needed.", current)
    s.add(ReviewEvent(translation_id=translation_id, run_id=t.run_id, user=user, action=action, second=second,
                      before=before, after=new_text, reason=(reason or "").strip()[:500] or None,
                      version=version + 1))
    return {"version": version + 1, "status": status}


def history(s: Session, translation_id: int) -> list[dict[str, Any]]:
    rows = s.scalars(select(ReviewEvent).where(ReviewEvent.translation_id == translation_id)
                     .order_by(ReviewEvent.id))
    return [{"when": e.created_at.strftime("%Y-%m-%d %H:%M:%S"), "who": e.user,
             "action": e.action + (" (second opinion)" if e.second else ""), "before": e.before or "",
             "after": e.after or "", "reason": e.reason or "", "version": e.version} for e in rows]


def recent(s: Session, run_id: int, user: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The latest decisions in a run (of one user, when given), newest first."""
    q = (select(ReviewEvent, Translation.final_text).join(Translation, Translation.id == ReviewEvent.translation_id)
         .where(ReviewEvent.run_id == run_id).order_by(ReviewEvent.id.desc()).limit(limit))
    if user:
        q = q.where(ReviewEvent.user == user)
    return [{"id": e.translation_id, "when": e.created_at.strftime("%H:%M:%S"), "who": e.user, "action": e.action,
             "text": (e.after or "")[:200]} for e, _ in s.execute(q)]


def progress(s: Session, run_id: int) -> dict[str, Any]:
    """Counts per review state, per annotator, and of the double-annotation sample."""
    by_status = {k: int(v) for k, v in s.execute(
        select(Translation.status, func.count()).where(Translation.run_id == run_id).group_by(Translation.status))}
    total = sum(by_status.values())
    reviewed = sum(v for k, v in by_status.items() if k != "unreviewed")
    per_user = []
    for user, action, n in s.execute(
            select(ReviewEvent.user, ReviewEvent.action, func.count(func.distinct(ReviewEvent.translation_id)))
            .where(ReviewEvent.run_id == run_id).group_by(ReviewEvent.user, ReviewEvent.action)):
        per_user.append((user, action, int(n)))
    users: dict[str, dict[str, int]] = {}
    for user, action, n in per_user:
        users.setdefault(user, {a: 0 for a in ACTIONS})[action] = n
    double_total, double_done = s.execute(
        select(func.count(), func.sum(case((Translation.second_status.is_not(None), 1), else_=0)))
        .where(Translation.run_id == run_id, Translation.double.is_(True))).one()
    return {"total": total, "reviewed": reviewed, "by_status": by_status,
            "annotators": [{"annotator": u, **c, "total": sum(c.values())} for u, c in sorted(users.items())],
            "double_total": int(double_total or 0), "double_done": int(double_done or 0)}


def agreement(s: Session, run_id: int) -> dict[str, Any]:
    """Agreement on the double-annotation sample: Cohen's κ on accept/reject, chrF++ between edited versions."""
    from hala_core.filters import cohen_kappa, pair_chrf

    rows = s.execute(select(Translation.status, Translation.final_text, Translation.second_status,
                            Translation.second_text)
                     .where(Translation.run_id == run_id, Translation.double.is_(True),
                            Translation.second_status.is_not(None),
                            Translation.status.in_(REVIEWED_STATES))).all()

    def label(status: str) -> str:
        return "accept" if status in ("accepted", "edited") else "reject"

    a = [label(r[0]) for r in rows]
    b = [label(r[2]) for r in rows]
    both = [(r[1], r[3]) for r in rows if r[1] is not None and r[3] is not None]
    kappa = cohen_kappa(a, b)
    chrf = pair_chrf([x for x, _ in both], [y for _, y in both]) if both else None
    agree = sum(x == y for x, y in zip(a, b, strict=True))
    return {"items": len(rows), "raw_agreement": (agree / len(rows)) if rows else None, "kappa": kappa,
            "chrf_between_edits": chrf, "pairs_with_text": len(both)}


def run_choices(s: Session) -> list[tuple[str, str]]:
    """(label, "corpus/run") for every translation run, newest first."""
    rows = s.execute(select(Corpus.name, TranslationRun.name, TranslationRun.direction, TranslationRun.id)
                     .join(TranslationRun, TranslationRun.corpus_id == Corpus.id)
                     .order_by(TranslationRun.id.desc())).all()
    return [(f"{c} / {r} ({d})", f"{c}/{r}") for c, r, d, _ in rows]


def resolve_run(s: Session, key: str) -> TranslationRun:
    """``"corpus/run"`` (or a corpus name: its newest run) → the run."""
    from db.corpora import get_run

    corpus, _, run = (key or "").partition("/")
    if not corpus:
        raise ValueError("choose a translation to review (corpus / translation)")
    return get_run(s, corpus, run or None)


def stale_claims(s: Session, run_id: int) -> int:
    now = utcnow()
    return int(s.scalar(select(func.count()).where(
        Translation.run_id == run_id, and_(Translation.claim_expires.is_not(None), Translation.claim_expires < now)))
        or 0)
