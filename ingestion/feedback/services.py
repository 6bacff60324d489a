"""Writes of feedback events: each batch validated whole and stored all or none; a retried event (same user and
``event_id``) is stored once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from pymongo.errors import BulkWriteError

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


ID_MAX_CHARS = 64  # rec_id and event_id: 1 to this many printable characters
MS_PLAYED_MAX = 24 * 60 * 60 * 1000  # one play lasts at most 24 h
DUPLICATE_KEY = 11000


def _text_id_error(value: Any) -> str | None:
    """Why ``value`` is not a usable id (``rec_id``, ``event_id``), or None. Anything but a short printable string,
    an object such as ``{"$gt": ""}`` included, is refused: an id is compared and joined on, never interpreted."""
    if not isinstance(value, str) or not 1 <= len(value) <= ID_MAX_CHARS or not value.isprintable():
        return f"a string of 1 to {ID_MAX_CHARS} printable characters"
    return None


def client_ts_max_age_days(retention_days: float) -> float:
    """How old a client's ``ts`` may be: ``CLIENT_TS_MAX_AGE_DAYS``, and never past ``retention_days`` (what the
    store keeps of that collection; 0 keeps forever), so that a dated document is not expired as it lands."""
    limits = [d for d in (settings.CLIENT_TS_MAX_AGE_DAYS, retention_days) if d > 0]
    return min(limits) if limits else float("inf")


def client_ts_parse(value: Any, *, retention_days: float, now: datetime | None = None
                    ) -> tuple[datetime | None, str | None]:
    """A client's timestamp (ISO-8601 text with a time zone, e.g. ``2026-05-01T12:00:00Z``) as a UTC datetime, or
    why it is refused: not such text, more than ``CLIENT_TS_SKEW_SECONDS`` in the future, or older than
    ``client_ts_max_age_days(retention_days)``. Events (``ts``) and picks reads (``?ts=``) share it."""
    now = now or _now()
    max_days = client_ts_max_age_days(retention_days)
    shape = "an ISO-8601 date and time with a time zone, e.g. 2026-05-01T12:00:00Z"
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None, f"optional; {shape}"
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None, f"optional; {shape}, not {value!r}"
    if at.tzinfo is None or at.utcoffset() is None:
        return None, f"optional; {shape}: {value!r} has no time zone"
    at = at.astimezone(UTC)
    if at > now + timedelta(seconds=settings.CLIENT_TS_SKEW_SECONDS):
        return None, f"{value} is in the future (more than {settings.CLIENT_TS_SKEW_SECONDS:g} s ahead of the server)"
    if at < now - timedelta(days=max_days):
        return None, f"{value} is older than {max_days:g} days (CLIENT_TS_MAX_AGE_DAYS, retention)"
    return at, None


def _event_doc(raw: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The one place an event is validated: the document to store, or its field errors."""
    if not isinstance(raw, dict):
        return None, {"event": "must be an object"}
    errors: dict[str, str] = {}
    user, kind = raw.get("user"), raw.get("kind")
    if not isinstance(user, str) or not user.strip():
        errors["user"] = "required, a non-empty string"
    if kind not in EVENT_KINDS:
        errors["kind"] = f"must be one of {', '.join(EVENT_KINDS)}"
    track, playlist, ms = raw.get("track"), raw.get("playlist"), raw.get("ms_played")
    rec_id, event_id = raw.get("rec_id"), raw.get("event_id")
    if kind in TRACK_KINDS and (not isinstance(track, str) or not URI_RE["track"].fullmatch(track)):
        errors["track"] = "required for play/skip/like: a spotify:track: URI"
    if kind in ("follow", "unfollow") and (not isinstance(playlist, int) or isinstance(playlist, bool)):
        errors["playlist"] = "required for follow/unfollow: a playlist id (integer)"
    elif playlist is not None and (not isinstance(playlist, int) or isinstance(playlist, bool) or playlist < 0):
        errors["playlist"] = "optional for play/skip/like: the playlist id (integer) the track was played from"
    if ms is not None and (not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= MS_PLAYED_MAX):
        errors["ms_played"] = f"an integer of milliseconds from 0 to {MS_PLAYED_MAX} (24 h)"
    if kind == "play" and ms is None:
        errors["ms_played"] = "required for play"
    for name, value in (("rec_id", rec_id), ("event_id", event_id)):
        if value is not None and (why := _text_id_error(value)):
            errors[name] = f"optional; {why}"
    ts = _now()
    if raw.get("ts") is not None:  # the client's time of the event (a replay, the simulator): bounded both ways
        at, why = client_ts_parse(raw["ts"], retention_days=settings.EVENTS_RETENTION_DAYS, now=ts)
        if why:
            errors["ts"] = why
        else:
            ts = at
    if errors:
        return None, errors
    doc = {"user": user, "kind": kind, "ts": ts, "rec_id": rec_id}
    doc |= {"track": track} if kind in TRACK_KINDS else {"playlist": playlist}
    if kind in TRACK_KINDS and playlist is not None:  # its context: the playlist it was played from
        doc["playlist"] = playlist
    if ms is not None:
        doc["ms_played"] = ms
    if event_id is not None:
        doc["event_id"] = event_id  # unique per user (ingestion/indexes.py): a retry is not stored twice
    return doc, {}


@dataclass(frozen=True)
class EventsStored:
    """What ``event_record_many`` did: ``docs``, the events stored now (``user``, ``kind``, ``rec_id``, ``ms_played``,
    … with their ``_id``: ``picks_after_feedback`` folds them into the A/B results); ``duplicates``, how many events
    were not stored because an event with the same user and ``event_id`` already was (a client's retry)."""

    docs: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0

    @property
    def ids(self) -> list[Any]:
        return [doc["_id"] for doc in self.docs]

    @property
    def stored(self) -> int:
        return len(self.docs)


def event_record_many(*, events: list[Any], check_users: bool = False, credential: str | None = None
                      ) -> EventsStored:
    """Store feedback events, all or none (each bad item is named with its field errors). An event whose user and
    ``event_id`` are already stored (a retry, or twice in this batch) is not stored again: it is counted in
    ``duplicates``, not an error. ``check_users`` also refuses events of users the store does not know (one query
    per batch); ``credential`` (``app:NAME``, ``user:ID``, ``staff:NAME``) is recorded with each event. What the
    events change downstream (each user's picks, the A/B results) is the caller's:
    ``ranker.picks.precompute.picks_after_feedback``."""
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
        return EventsStored()
    if credential:
        for doc in docs:
            doc["credential"] = credential
    try:
        get_db()[c.EVENTS].insert_many(docs, ordered=False)  # sets each document's ``_id``
        return EventsStored(docs=docs)
    except BulkWriteError as exc:
        failed = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in failed):
            raise
        duplicate = {e["index"] for e in failed}
        return EventsStored(docs=[d for i, d in enumerate(docs) if i not in duplicate], duplicates=len(duplicate))


def event_delete_before(*, before: datetime, batch: int) -> int:
    """Delete up to ``batch`` events stored before ``before`` (oldest first, by the ``ts`` index); how many went.
    The retention cleanup calls it until it returns less than ``batch``."""
    ids = [d["_id"] for d in get_db()[c.EVENTS].find({"ts": {"$lt": before}}, {"_id": 1}).sort("ts", 1).limit(batch)]
    return get_db()[c.EVENTS].delete_many({"_id": {"$in": ids}}).deleted_count if ids else 0
