"""Writes of feedback events: each batch validated whole and stored all or none."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recsys_site.mongo import get_db

from .. import collections as c
from ..mpd import URI_RE
from ..selectors import users_existing
from .rules import EVENT_KINDS, TRACK_KINDS


def _now() -> datetime:
    return datetime.now(UTC)


class EventError(ValueError):
    """A batch of events was refused whole; ``errors`` maps each bad item's index to its field errors."""

    def __init__(self, errors: dict[int, dict[str, str]]) -> None:
        super().__init__("; ".join(f"event {i}: " + ", ".join(f"{k}: {v}" for k, v in e.items())
                                   for i, e in sorted(errors.items())))
        self.errors = errors


def _event_doc(raw: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    if not isinstance(raw, dict):
        return None, {"event": "must be an object"}
    errors: dict[str, str] = {}
    user, kind = raw.get("user"), raw.get("kind")
    if not isinstance(user, str) or not user.strip():
        errors["user"] = "required, a non-empty string"
    if kind not in EVENT_KINDS:
        errors["kind"] = f"must be one of {', '.join(EVENT_KINDS)}"
    track, playlist, ms = raw.get("track"), raw.get("playlist"), raw.get("ms_played")
    if kind in TRACK_KINDS and (not isinstance(track, str) or not URI_RE["track"].match(track)):
        errors["track"] = "required for play/skip/like: a spotify:track: URI"
    if kind in ("follow", "unfollow") and (not isinstance(playlist, int) or isinstance(playlist, bool)):
        errors["playlist"] = "required for follow/unfollow: a playlist id (integer)"
    if ms is not None and (not isinstance(ms, int) or isinstance(ms, bool) or ms < 0):
        errors["ms_played"] = "a non-negative integer (milliseconds)"
    if kind == "play" and ms is None:
        errors["ms_played"] = "required for play"
    if errors:
        return None, errors
    doc = {"user": user, "kind": kind, "ts": _now(), "rec_id": raw.get("rec_id")}
    doc |= {"track": track} if kind in TRACK_KINDS else {"playlist": playlist}
    if ms is not None:
        doc["ms_played"] = ms
    return doc, {}


def event_record_many(*, events: list[Any], check_users: bool = False) -> list[Any]:
    """Store feedback events, all or none (each bad item is named with its field errors); the ids of the stored
    events. ``check_users`` also refuses events of users the store does not know. What the events change downstream
    (each user's picks) is the caller's: ``ranker.picks.precompute.picks_after_feedback``."""
    return [doc["_id"] for doc in event_record_batch(events=events, check_users=check_users)]


def event_record_batch(*, events: list[Any], check_users: bool = False) -> list[dict[str, Any]]:
    """``event_record_many``, returning the stored documents (``user``, ``kind``, ``rec_id``, ``ms_played``, ...),
    which ``picks_after_feedback`` folds into the A/B results. The users are checked with one query per batch."""
    docs, errors = [], {}
    named = [raw.get("user") for raw in events if isinstance(raw, dict)]
    known = users_existing(users=[u for u in named if isinstance(u, str) and u.strip()]) if check_users else set()
    for index, raw in enumerate(events):
        doc, problems = _event_doc(raw)
        user = raw.get("user") if isinstance(raw, dict) else None
        if check_users and isinstance(user, str) and user.strip() and user not in known:
            problems["user"] = f"unknown user {user!r}"
        if problems:
            errors[index] = problems
        else:
            docs.append(doc)
    if errors:
        raise EventError(errors)
    if not docs:
        return []
    get_db()[c.EVENTS].insert_many(docs, ordered=True)  # sets each document's ``_id``
    return docs


def event_delete_before(*, before: datetime, batch: int) -> int:
    """Delete up to ``batch`` events stored before ``before`` (oldest first, by the ``ts`` index); how many went.
    The retention cleanup calls it until it returns less than ``batch``."""
    ids = [d["_id"] for d in get_db()[c.EVENTS].find({"ts": {"$lt": before}}, {"_id": 1}).sort("ts", 1).limit(batch)]
    return get_db()[c.EVENTS].delete_many({"_id": {"$in": ids}}).deleted_count if ids else 0
