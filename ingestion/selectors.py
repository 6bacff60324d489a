"""Reads of the ingestion package. Other packages, views, tasks and the dashboard read through these."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pymongo import DESCENDING

from recsys_site.mongo import get_db

from . import collections as c


def playlist_get(*, pid: int) -> dict[str, Any] | None:
    return get_db()[c.PLAYLISTS].find_one({"_id": pid})


def playlist_count() -> int:
    return get_db()[c.PLAYLISTS].estimated_document_count()


def store_is_empty() -> bool:
    return get_db()[c.PLAYLISTS].find_one({}, {"_id": 1}) is None


def playlist_iter(*, fields: tuple[str, ...] = ("tracks", "owner", "name"), batch_size: int = 500
                  ) -> Iterator[dict[str, Any]]:
    """Every playlist with the given fields, streamed (for training and evaluation)."""
    projection = {f: 1 for f in fields}
    return get_db()[c.PLAYLISTS].find({}, projection, batch_size=batch_size)


def track_get(*, uri: str) -> dict[str, Any] | None:
    return get_db()[c.TRACKS].find_one({"_id": uri})


def track_top(*, limit: int = 50) -> list[dict[str, Any]]:
    return list(get_db()[c.TRACKS].find({}).sort("num_playlists", DESCENDING).limit(limit))


def artist_top(*, limit: int = 50) -> list[dict[str, Any]]:
    return list(get_db()[c.ARTISTS].find({}).sort("num_tracks", DESCENDING).limit(limit))


def catalogue_counts() -> dict[str, int]:
    """Document counts per collection, for health pages and summaries."""
    db = get_db()
    names = {"playlists": c.PLAYLISTS, "tracks": c.TRACKS, "artists": c.ARTISTS, "users": c.USERS,
             "listens": c.LISTENS, "friendships": c.FRIENDSHIPS}
    return {key: db[coll].count_documents({}) for key, coll in names.items()}


def playlist_track_rows() -> int:
    """Total playlist-track entries (the MPD's "66M rows"), summed from the derived track counts."""
    rows = list(get_db()[c.TRACKS].aggregate([{"$group": {"_id": None, "n": {"$sum": "$num_occurrences"}}}]))
    return int(rows[0]["n"]) if rows else 0


def ingest_run_list(*, limit: int = 20) -> list[dict[str, Any]]:
    return list(get_db()[c.INGEST_RUNS].find({}).sort("started_at", DESCENDING).limit(limit))


def listen_iter(*, source: str | None = None) -> Iterator[dict[str, Any]]:
    query = {"source": source} if source else {}
    return get_db()[c.LISTENS].find(query, {"user": 1, "item": 1, "weight": 1})


def friendship_iter(*, source: str | None = None) -> Iterator[dict[str, Any]]:
    query = {"source": source} if source else {}
    return get_db()[c.FRIENDSHIPS].find(query, {"user": 1, "friend": 1})


def listen_count(*, source: str | None = None) -> int:
    """Stored listens, all or those of one source (``"hetrec:user_artists.dat"``)."""
    query = {"source": source} if source else {}
    return get_db()[c.LISTENS].count_documents(query)


def friendship_count(*, source: str | None = None) -> int:
    query = {"source": source} if source else {}
    return get_db()[c.FRIENDSHIPS].count_documents(query)


def listen_item_get(*, item: str) -> dict[str, Any] | None:
    """An item's name and url (HetRec artists), or None."""
    return get_db()[c.LISTEN_ITEMS].find_one({"_id": item})
