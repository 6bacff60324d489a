"""Reads of the experiments: the served log's pick lists (joined to feedback for A/B results)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo.errors import OperationFailure

from ranker import collections as c
from recsys_site.mongo import get_db


def served_get_many(*, rec_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Served pick lists by ``rec_id``: ``kind`` (tracks | playlists), ``user``, ``experiment``, ``variant``,
    ``model_version``, ``ts``; rec_ids that were never served are missing."""
    out: dict[str, dict[str, Any]] = {}
    fields = {"kind": 1, "user": 1, "experiment": 1, "variant": 1, "model_version": 1, "ts": 1}
    for start in range(0, len(rec_ids), 100):  # short $in lists: long ones are slow on some servers
        for doc in get_db()[c.SERVED].find({"_id": {"$in": rec_ids[start:start + 100]}}, fields):
            out[doc["_id"]] = doc
    return out


def served_count_since(*, kind: str, since: datetime) -> int:
    """Pick lists of one ``kind`` served after ``since`` (a range on the ``ts`` index)."""
    return get_db()[c.SERVED].count_documents({"ts": {"$gt": since}, "kind": kind})


def served_daily_counts(*, kind: str | None = None) -> dict[str, int]:
    """Pick lists served per UTC day (``YYYY-MM-DD``), of one ``kind`` or all, grouped by the server."""

    match = {"kind": kind} if kind else {}
    pipeline = [{"$match": match},
                {"$group": {"_id": {"$dateToString": {"format": "%Y-%m-%d", "date": "$ts"}}, "n": {"$sum": 1}}}]
    try:
        return {row["_id"]: int(row["n"]) for row in get_db()[c.SERVED].aggregate(pipeline) if row["_id"]}
    except OperationFailure:  # a server without $dateToString: count here
        counts: dict[str, int] = {}
        for doc in get_db()[c.SERVED].find(match, {"ts": 1, "_id": 0}):
            if doc.get("ts"):
                day = f"{doc['ts']:%Y-%m-%d}"
                counts[day] = counts.get(day, 0) + 1
        return counts


def served_experiment_lists(*, experiment: str, since: datetime, kind: str = "playlists",
                            credentials: list[str] | None = None, exclude: bool = True,
                            limit: int = 200_000) -> list[dict[str, Any]]:
    """The pick lists of ``kind`` served in ``experiment`` since ``since``, newest first, at most ``limit``: each
    ``_id`` (its rec_id), ``variant``, ``user``, ``ts`` and ``followed`` (a follow came from it). ``credentials``
    (``app:NAME``, as the served log records who asked) are left out (``exclude``) or are the only ones kept.
    Bounded by the window and ``limit``, on the ``ts`` index."""
    query: dict[str, Any] = {"ts": {"$gte": since}, "experiment": experiment, "kind": kind}
    if credentials:
        query["credential"] = {"$nin" if exclude else "$in": list(credentials)}
    fields = {"variant": 1, "user": 1, "ts": 1, "followed": 1}
    return list(get_db()[c.SERVED].find(query, fields).sort("ts", -1).limit(limit))


def served_lists_iter(*, kind: str, batch_size: int = 2000) -> Iterator[dict[str, Any]]:
    """Every served pick list of ``kind`` still kept (``_id`` = rec_id, ``user``, ``items``, ``variant``, ``ts``), in
    store order: what the playlist ranker learns its impressions and hard negatives from."""
    fields = {"user": 1, "items": 1, "variant": 1, "ts": 1}
    yield from get_db()[c.SERVED].find({"kind": kind}, fields, batch_size=batch_size)
