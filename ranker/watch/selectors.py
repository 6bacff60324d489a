"""Reads of the degradation watch: the signals measured now, each signal's state and the recorded crossings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import DESCENDING

from ingestion.feedback.selectors import event_rec_ids_since
from ranker import collections as c
from ranker.experiments.selectors import served_count_since, served_get_many
from recsys_site.mongo import get_db


def watch_follow_through(*, since: datetime) -> dict[str, Any]:
    """Online follow-through since ``since``: ``served``, the playlist pick lists served after it; ``followed``, how
    many of them got at least one follow (a follow event carrying the list's ``rec_id``, stored after ``since``);
    ``value`` = followed / served, None when nothing was served. Work is bounded by the follows in the window, not
    by the lists served: the follows' rec_ids are looked up in the served log."""
    served = served_count_since(kind="playlists", since=since)
    rec_ids = sorted(event_rec_ids_since(kind="follow", since=since))
    lists = served_get_many(rec_ids=rec_ids)
    followed = sum(1 for doc in lists.values() if doc.get("kind") == "playlists" and _after(doc.get("ts"), since))
    return {"served": served, "followed": followed, "value": followed / served if served else None}


def _after(ts: datetime | None, since: datetime) -> bool:
    if ts is None:
        return False
    if ts.tzinfo is None and since.tzinfo is not None:  # the store hands back naive UTC
        since = since.replace(tzinfo=None)
    return ts > since


def watch_states() -> dict[str, dict[str, Any]]:
    """Each watched signal's state, by signal: ``degraded``, ``since`` (when it last crossed), ``value``,
    ``threshold`` and the other figures of the last check, ``checked_at``, ``alert`` (the open alert's id)."""
    return {doc["_id"]: doc for doc in get_db()[c.WATCH_STATE].find({})}


def watch_alerts_open() -> list[dict[str, Any]]:
    """The crossings into bad that have not recovered yet, newest first: one per degraded signal."""
    return list(get_db()[c.WATCH_ALERTS].find({"open": True}).sort("at", DESCENDING))


def watch_alerts_list(*, signal: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Recorded crossings (``kind`` degraded | recovered), newest first, of one signal or all."""
    query = {"signal": signal} if signal else {}
    return list(get_db()[c.WATCH_ALERTS].find(query).sort("at", DESCENDING).limit(limit))
