"""Reads of the ingestion package. Other packages, views, tasks and the dashboard read through these."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pymongo import DESCENDING

from recsys_site.mongo import get_db

from . import collections as c
from .events import PLAY_POSITIVE_MS


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


def event_iter(*, kinds: tuple[str, ...] | None = None, user: str | None = None) -> Iterator[dict[str, Any]]:
    """Feedback events (``user``, ``kind``, ``track`` or ``playlist``, ``ms_played``, ``ts``).

    One user's events come oldest first; all users' events come in store order (training does not care).
    """
    query: dict[str, Any] = {}
    if kinds:
        query["kind"] = {"$in": list(kinds)}
    if user is not None:
        query["user"] = user
        return get_db()[c.EVENTS].find(query, {"_id": 0}).sort("ts", 1)
    return get_db()[c.EVENTS].find(query, {"_id": 0})


def playlist_most_followed(*, limit: int = 10, exclude_pids: set[int] | None = None) -> list[dict[str, Any]]:
    """The most-followed playlists (the cold-start picks), best first."""
    exclude = exclude_pids or set()
    docs = get_db()[c.PLAYLISTS].find({}, {"name": 1, "owner": 1, "num_followers": 1, "num_tracks": 1}).sort(
        "num_followers", DESCENDING).limit(limit + len(exclude))
    return [d for d in docs if d["_id"] not in exclude][:limit]


def playlist_summaries(*, pids: list[int]) -> dict[int, dict[str, Any]]:
    """Name, owner, followers and length of each playlist, by pid (for explaining picks)."""
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(pids), 100):  # $in stays short: long lists are slow on some servers
        for doc in get_db()[c.PLAYLISTS].find({"_id": {"$in": pids[start:start + 100]}},
                                              {"name": 1, "owner": 1, "num_followers": 1, "num_tracks": 1}):
            out[doc["_id"]] = doc
    return out


def user_followed_playlists(*, user: str) -> set[int]:
    """Playlists the user follows now: their follow events minus later unfollows."""
    followed: set[int] = set()
    for event in event_iter(kinds=("follow", "unfollow"), user=user):
        pid = event.get("playlist")
        if pid is None:
            continue
        (followed.add if event["kind"] == "follow" else followed.discard)(pid)
    return followed


def user_liked_tracks(*, user: str) -> list[str]:
    """Everything a user is known to like now: tracks of their own playlists, liked tracks, plays of 30 s or more.

    What a per-user refresh folds in, so a like posted a second ago already counts.
    """
    tracks: dict[str, None] = {}
    for playlist in get_db()[c.PLAYLISTS].find({"owner": user}, {"tracks.uri": 1}):
        tracks.update(dict.fromkeys(t["uri"] for t in playlist.get("tracks") or ()))
    for event in event_iter(kinds=("like", "play"), user=user):
        if event.get("track") and (event["kind"] == "like" or (event.get("ms_played") or 0) >= PLAY_POSITIVE_MS):
            tracks[event["track"]] = None
    return list(tracks)


def user_get(*, user: str) -> dict[str, Any] | None:
    return get_db()[c.USERS].find_one({"_id": user})


def playlist_search(*, text: str = "", page: int = 1, page_size: int = 20) -> tuple[list[dict[str, Any]], int]:
    """Playlists whose normalised name starts with, or equals, the normalised ``text`` (all when empty), by
    followers; returns (page of summaries, total). A prefix on an indexed field: no text index needed."""
    import re

    from .mpd import normalize_name

    query: dict[str, Any] = {}
    needle = normalize_name(text)
    if needle:
        query["name_norm"] = {"$regex": f"^{re.escape(needle)}"}
    fields = {"name": 1, "owner": 1, "num_followers": 1, "num_tracks": 1}
    coll = get_db()[c.PLAYLISTS]
    total = coll.count_documents(query)
    docs = list(coll.find(query, fields).sort([("num_followers", DESCENDING), ("_id", 1)])
                .skip((page - 1) * page_size).limit(page_size))
    return docs, total
