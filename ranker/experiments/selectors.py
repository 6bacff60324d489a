"""Reads of the experiments: the served log's pick lists (joined to feedback for A/B results)."""

from __future__ import annotations

from collections.abc import Iterator
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


def served_lists_iter(*, kind: str, batch_size: int = 2000) -> Iterator[dict[str, Any]]:
    """Every served pick list of ``kind`` still kept (``_id`` = rec_id, ``user``, ``items``, ``variant``, ``ts``), in
    store order: what the playlist ranker learns its impressions and hard negatives from."""
    fields = {"user": 1, "items": 1, "variant": 1, "ts": 1}
    yield from get_db()[c.SERVED].find({"kind": kind}, fields, batch_size=batch_size)
