"""Chat conversations and arena votes: writes from the Chat tab, reads for its summaries."""

from __future__ import annotations

from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Conversation, Vote, utcnow

NON_MODEL_WINNERS = ("tie", "all bad")


def save_conversation(s: Session, conversation_id: int | None, owner: str | None, mode: str, models: list[str],
                      system_prompt: str | None, settings: dict[str, Any],
                      messages: dict[str, list[dict[str, str]]]) -> int:
    """Create or update a conversation; only its owner's conversation is updated."""
    conv = s.get(Conversation, conversation_id) if conversation_id else None
    if conv is None or conv.owner != owner:
        conv = Conversation(owner=owner, mode=mode)
        s.add(conv)
    conv.models, conv.system_prompt, conv.settings = list(models), system_prompt, dict(settings)
    conv.messages, conv.updated_at = {k: list(v) for k, v in messages.items()}, utcnow()
    s.flush()
    return conv.id


def get_conversation(s: Session, conversation_id: int) -> Conversation | None:
    return s.get(Conversation, conversation_id)


def latest_conversation(s: Session, owner: str | None, mode: str) -> Conversation | None:
    q = select(Conversation).where(Conversation.mode == mode).order_by(Conversation.updated_at.desc()).limit(1)
    q = q.where(Conversation.owner == owner) if owner else q.where(Conversation.owner.is_(None))
    return s.scalar(q)


def record_vote(s: Session, conversation_id: int, owner: str | None, prompt: str, models: list[str],
                winner: str) -> Vote:
    if winner not in models and winner not in NON_MODEL_WINNERS:
        raise ValueError(f"vote for {winner!r}: choose one of {', '.join([*models, *NON_MODEL_WINNERS])}")
    if s.get(Conversation, conversation_id) is None:
        raise ValueError(f"no conversation {conversation_id}")
    vote = Vote(conversation_id=conversation_id, owner=owner, prompt=prompt, models=list(models), winner=winner)
    s.add(vote)
    s.flush()
    return vote


def votes_of(s: Session, conversation_id: int) -> list[dict[str, Any]]:
    return [{"prompt": v.prompt, "models": v.models, "winner": v.winner, "owner": v.owner}
            for v in s.scalars(select(Vote).where(Vote.conversation_id == conversation_id).order_by(Vote.id))]


def win_rates(s: Session) -> list[dict[str, Any]]:
    """Per model pair: battles, wins of each side, ties (a "tie" or "all bad" vote), and win rates."""
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for v in s.scalars(select(Vote).order_by(Vote.id)):
        for a, b in combinations(sorted(set(v.models)), 2):
            p = pairs.setdefault((a, b), {"model_a": a, "model_b": b, "battles": 0, "wins_a": 0, "wins_b": 0,
                                          "ties": 0})
            if v.winner == a:
                p["wins_a"] += 1
            elif v.winner == b:
                p["wins_b"] += 1
            elif v.winner in NON_MODEL_WINNERS:
                p["ties"] += 1
            else:
                continue  # a third model won: this pair neither won nor tied
            p["battles"] += 1
    out = []
    for p in pairs.values():
        if p["battles"]:
            p["win_rate_a"] = round(p["wins_a"] / p["battles"], 3)
            p["win_rate_b"] = round(p["wins_b"] / p["battles"], 3)
            out.append(p)
    return sorted(out, key=lambda p: -p["battles"])
