"""Reads of the ingestion package. Other packages, views, tasks and the dashboard read through these."""

from __future__ import annotations

import bisect
import heapq
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache
from django.conf import settings
from pymongo import DESCENDING

from recsys_site.exceptions import NotFoundError
from recsys_site.mongo import get_db

from . import collections as c
from .feedback.rules import track_signal
from .feedback.selectors import event_count_since, event_iter, event_kind_counts
from .mpd import normalize_name


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


def ingest_run_list(*, limit: int = 20, kind: str | None = None, problems: int | None = None
                    ) -> list[dict[str, Any]]:
    """Ingest runs, newest first: all kinds or one (``"mpd"``, ``"triplets"``); ``problems`` keeps only the first
    that many stored problems of each run (a run stores up to 500, too many to ship to a page)."""
    projection = {"problems": {"$slice": problems}} if problems is not None else None
    query = {"kind": kind} if kind else {}
    return list(get_db()[c.INGEST_RUNS].find(query, projection).sort("started_at", DESCENDING).limit(limit))


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


def track_summaries(*, uris: list[str]) -> dict[str, dict[str, Any]]:
    """Name, artist and how many playlists hold it, of each track, by URI (for explaining search results)."""
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(uris), 100):  # $in stays short, as in ``playlist_summaries``
        for doc in get_db()[c.TRACKS].find({"_id": {"$in": uris[start:start + 100]}},
                                           {"name": 1, "artist_name": 1, "num_playlists": 1}):
            out[doc["_id"]] = doc
    return out


TRACK_LOOKUP_MAX = 50  # tracks one type-ahead lookup may return
TRACK_LOOKUP_MAX_CHARS = 100  # longer text is cut: no name is that long, and the ranges stay cheap


def _case_variants(text: str) -> list[str]:
    """The spellings a prefix is looked up in: as typed, lower case, Title Case, Capitalised (no duplicates)."""
    return list(dict.fromkeys([text, text.lower(), text.title(), text[:1].upper() + text[1:]]))


def track_lookup(*, text: str, limit: int = 20) -> list[dict[str, Any]]:
    """Tracks whose title or artist starts with ``text`` (as typed, in lower case, Title Case or Capitalised), the
    most-held first: the dashboard's type-ahead for seed tracks.

    Bounded: at most ``TRACK_LOOKUP_MAX`` results; each spelling is one range on the ``name`` or ``artist_name``
    index of at most ``limit`` documents (a range, never a ``$regex``, which SecantusDB answers by reading every
    track; see ``playlist_search_page``). Fewer than two characters find nothing."""
    text = " ".join((text or "").split())[:TRACK_LOOKUP_MAX_CHARS]
    limit = max(1, min(int(limit), TRACK_LOOKUP_MAX))
    if len(text) < 2:
        return []
    coll = get_db()[c.TRACKS]
    found: dict[str, dict[str, Any]] = {}
    for field in ("name", "artist_name"):
        for prefix in _case_variants(text):
            for doc in coll.find({field: {"$gte": prefix, "$lt": prefix + "\U0010ffff"}},
                                 {"name": 1, "artist_name": 1, "num_playlists": 1}).limit(limit):
                found.setdefault(doc["_id"], doc)
    return sorted(found.values(), key=lambda d: (-(d.get("num_playlists") or 0), d["_id"]))[:limit]


def user_liked_tracks(*, user: str) -> list[str]:
    """Everything a user is known to like now: tracks of their own playlists, liked tracks, plays of 30 s or more.

    What a per-user refresh folds in, so a like posted a second ago already counts.
    """
    tracks = dict.fromkeys(users_playlist_tracks(users=[user])[user])
    for event in event_iter(kinds=("like", "play"), user=user):
        if event.get("track") and track_signal(event["kind"], event.get("ms_played")) > 0:
            tracks[event["track"]] = None
    return list(tracks)


def users_playlist_tracks(*, users: list[str], chunk: int = 100) -> dict[str, list[str]]:
    """The distinct tracks of each user's own playlists, for many users in one query per ``chunk`` of them (short
    ``$in`` lists, ADR 0001); a user with none maps to []. One query per user would be N round trips, and SecantusDB
    scans for each."""
    tracks: dict[str, dict[str, None]] = {user: {} for user in users}
    for start in range(0, len(users), chunk):
        some = users[start:start + chunk]
        owner = some[0] if len(some) == 1 else {"$in": some}  # one user (the hot path's): an equality
        for playlist in get_db()[c.PLAYLISTS].find({"owner": owner}, {"owner": 1, "tracks.uri": 1}):
            tracks[playlist["owner"]].update(dict.fromkeys(t["uri"] for t in playlist.get("tracks") or ()))
    return {user: list(found) for user, found in tracks.items()}


def user_get(*, user: str) -> dict[str, Any] | None:
    return get_db()[c.USERS].find_one({"_id": user})


class UnknownUser(NotFoundError):
    """A user id the store does not know (the API answers 404)."""

    def __init__(self, user: str):
        super().__init__(f"unknown user {user!r}")
        self.user = user


# Users are never deleted, so "this user exists" stays true: each process remembers the ids it has seen (per
# database), and a cached pick costs no store round trip for the 404 check. Unknown ids are asked every time.
_known_users: LRUCache = LRUCache(maxsize=200_000)
_known_lock = threading.Lock()


def users_app(*, users: list[str]) -> dict[str, str | None]:
    """The app that created each user through the API (None: a user from the MPD, triplets or an app-less call);
    users the store does not know are missing."""
    out: dict[str, str | None] = {}
    for start in range(0, len(users), 100):  # short $in lists: long ones are slow on some servers
        for doc in get_db()[c.USERS].find({"_id": {"$in": users[start:start + 100]}}, {"app": 1}):
            out[doc["_id"]] = doc.get("app")
    return out


def user_exists(*, user: str) -> bool:
    key = (settings.MONGO_DB, user)
    with _known_lock:
        if key in _known_users:
            return True
    found = get_db()[c.USERS].find_one({"_id": user}, {"_id": 1}) is not None
    if found:
        with _known_lock:
            _known_users[key] = True
    return found


def user_ids_of_source(*, source: str, batch_size: int = 1000) -> Iterator[str]:
    """Ids of the users created by one ``source`` (``api``, ``mpd``, a triplets source), in store order, through
    the ``source`` index."""
    for doc in get_db()[c.USERS].find({"source": source}, {"_id": 1}, batch_size=batch_size):
        yield doc["_id"]


def users_existing(*, users: list[str]) -> set[str]:
    """Which of ``users`` the store knows: ``user_exists`` for a batch, with one query for the ids this process has
    not seen yet (an event batch of 1,000 users is one round trip, not 1,000)."""
    wanted = set(users)
    with _known_lock:
        known = {u for u in wanted if (settings.MONGO_DB, u) in _known_users}
    ask = list(wanted - known)
    for start in range(0, len(ask), 1000):
        found = [d["_id"] for d in get_db()[c.USERS].find({"_id": {"$in": ask[start:start + 1000]}}, {"_id": 1})]
        with _known_lock:
            for user in found:
                _known_users[(settings.MONGO_DB, user)] = True
        known.update(found)
    return known


class PageTooDeep(ValueError):
    """A search page beyond ``PLAYLIST_SEARCH_MAX_ROWS`` rows (the API answers 400 naming the limit)."""


def playlist_search(*, text: str = "", page: int = 1, page_size: int = 20) -> tuple[list[dict[str, Any]], int]:
    """``playlist_search_page`` as (page of summaries, count)."""
    found = playlist_search_page(text=text, page=page, page_size=page_size)
    return found["results"], found["count"]


def playlist_search_page(*, text: str = "", page: int = 1, page_size: int = 20) -> dict[str, Any]:
    """Playlists whose normalised name starts with, or equals, the normalised ``text`` (all when empty), by
    followers: ``results`` (one page of summaries), ``count`` and ``count_is``. A prefix on an indexed field: no
    text index needed.

    The prefix is a range, not an anchored ``$regex``: SecantusDB answers a regex by reading every playlist
    (3–6 s on the 7k sample), a range through the ``name_norm`` index in about 25 ms.

    Work per request is bounded: a page may end at most ``PLAYLIST_SEARCH_MAX_ROWS`` rows deep (``PageTooDeep``
    beyond), and the count is never a full count: without a search it is the collection's estimated size
    (``count_is`` "estimated", from metadata), with one it is counted up to the same limit ("exact" below it,
    "at_least" when it reached it)."""

    limit = settings.PLAYLIST_SEARCH_MAX_ROWS
    if page * page_size > limit:
        raise PageTooDeep(f"a search reaches at most {limit:,} rows (page × page_size ≤ {limit:,}; "
                          "PLAYLIST_SEARCH_MAX_ROWS): refine the search instead")
    query: dict[str, Any] = {}
    needle = normalize_name(text)
    if needle:
        query["name_norm"] = {"$gte": needle, "$lt": needle + "\U0010ffff"}  # every string that starts with it
    fields = {"name": 1, "owner": 1, "num_followers": 1, "num_tracks": 1}
    coll = get_db()[c.PLAYLISTS]
    if query:
        total = coll.count_documents(query, limit=limit)
        count_is = "at_least" if total >= limit else "exact"
    else:
        total, count_is = coll.estimated_document_count(), "estimated"
    docs = list(coll.find(query, fields).sort([("num_followers", DESCENDING), ("_id", 1)])
                .skip((page - 1) * page_size).limit(page_size))
    return {"results": docs, "count": total, "count_is": count_is}


# --- catalogue statistics (dashboard) ----------------------------------------------------------------------------
# Counting or sorting a large collection takes seconds on some servers (SecantusDB scans for every count), so the
# overview and catalogue pages read one precomputed document instead: ``catalogue_stats_compute`` stores it after
# each MPD ingest and in the weekly job; ``catalogue_stats`` computes it on the fly while none is stored.

CATALOGUE_STATS_ID = "catalogue"
STATS_TOP = 100  # tracks, artists and name words kept per statistic
# Candidate "at least this many followers" filters; those that select the same playlists as a lower one are dropped.
FOLLOWER_THRESHOLDS = (0, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000)
MIN_TIER_PLAYLISTS = 10  # a filter that leaves fewer playlists than this tells nothing
NAME_STOP_WORDS = frozenset({"a", "an", "and", "are", "by", "for", "from", "i", "im", "in", "is", "it", "its", "me",
                             "my", "n", "of", "on", "or", "s", "so", "t", "the", "this", "to", "with"})


def catalogue_stats_get() -> dict[str, Any] | None:
    """The stored catalogue statistics document, or None before the first computation."""
    return get_db()[c.CATALOGUE_STATS].find_one({"_id": CATALOGUE_STATS_ID})


def catalogue_stats(*, compute_if_missing: bool = True) -> dict[str, Any] | None:
    """The stored statistics (``stored`` True), else, with ``compute_if_missing``, the same computed now (``stored``
    False: one pass over playlists and tracks, seconds on a large store)."""
    doc = catalogue_stats_get()
    if doc is not None:
        return {**doc, "stored": True}
    return {**catalogue_stats_build(), "stored": False} if compute_if_missing else None


def _word_set(name_norm: str) -> set[str]:
    return {w for w in name_norm.split() if w not in NAME_STOP_WORDS}


def catalogue_stats_build(*, playlist_rows: Iterable[dict[str, Any]] | None = None,
                          track_rows: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Catalogue statistics from one pass over playlists (scalar fields only) and one over tracks.

    ``playlist_rows`` and ``track_rows``, when given, stand for those two passes (documents with the same fields):
    a first load that still holds the whole catalogue in memory passes them instead of reading back what it wrote.

    Returns ``counts`` (playlists, tracks, artists, users, listens, friendships, events, playlist_tracks),
    ``events_by_kind`` and ``events_until`` (events stored after it are counted live by ``event_count``),
    ``top_tracks`` and ``top_artists`` (by playlists holding them), and ``tiers``: one per "at least N followers"
    filter (``min_followers`` 0 is every playlist) with ``playlists``, ``playlist_tracks`` and the ``length``,
    ``followers`` and ``edits`` distributions as ``[value, playlists]`` pairs and the top name ``words`` as
    ``[word, playlists]`` pairs. Pairs, not mappings: BSON keys must be strings.
    """

    began = time.perf_counter()
    db = get_db()
    events_until = datetime.now(UTC)
    events_by_kind = event_kind_counts(until=events_until)

    # Each playlist goes to the bucket of the highest candidate threshold it reaches; a tier sums its bucket and
    # every bucket above, so one pass serves every filter without holding the playlists in memory.
    n_buckets = len(FOLLOWER_THRESHOLDS)
    buckets = [{"playlists": 0, "playlist_tracks": 0, "length": Counter(), "followers": Counter(),
                "edits": Counter(), "words": Counter()} for _ in range(n_buckets)]
    fields = {"name_norm": 1, "num_tracks": 1, "num_followers": 1, "num_edits": 1, "_id": 0}
    for playlist in db[c.PLAYLISTS].find({}, fields, batch_size=2000) if playlist_rows is None else playlist_rows:
        followers = playlist.get("num_followers")
        bucket = buckets[bisect.bisect_right(FOLLOWER_THRESHOLDS, followers or 0) - 1]
        length = int(playlist.get("num_tracks") or 0)
        bucket["playlists"] += 1
        bucket["playlist_tracks"] += length
        bucket["length"][length] += 1
        if followers is not None:
            bucket["followers"][followers] += 1
        if playlist.get("num_edits") is not None:
            bucket["edits"][playlist["num_edits"]] += 1
        bucket["words"].update(_word_set(playlist.get("name_norm") or ""))

    tiers: list[dict[str, Any]] = []
    for index in range(n_buckets):
        above = buckets[index:]
        size = sum(b["playlists"] for b in above)
        if index and (size < MIN_TIER_PLAYLISTS or size == tiers[-1]["playlists"]):
            continue
        merged = {key: sum((b[key] for b in above), Counter()) for key in ("length", "followers", "edits", "words")}
        tiers.append({"min_followers": FOLLOWER_THRESHOLDS[index], "playlists": size,
                      "playlist_tracks": sum(b["playlist_tracks"] for b in above),
                      **{key: sorted(merged[key].items()) for key in ("length", "followers", "edits")},
                      "words": [[w, n] for w, n in sorted(merged["words"].items(), key=lambda x: (-x[1], x[0]))
                                [:STATS_TOP]]})

    track_count = 0
    artists: Counter = Counter()
    artist_tracks: Counter = Counter()
    artist_names: dict[str, str] = {}

    def tracks() -> Iterator[dict[str, Any]]:
        nonlocal track_count
        for track in track_rows if track_rows is not None else db[c.TRACKS].find(
                {}, {"name": 1, "artist_name": 1, "artist_key": 1, "num_playlists": 1}, batch_size=5000):
            track_count += 1
            key = track.get("artist_key") or track.get("artist_name") or "?"
            artists[key] += int(track.get("num_playlists") or 0)
            artist_tracks[key] += 1
            artist_names.setdefault(key, track.get("artist_name") or key)
            yield track

    top = heapq.nlargest(STATS_TOP, tracks(), key=lambda t: int(t.get("num_playlists") or 0))
    top_tracks = [{"uri": t["_id"], "name": t.get("name"), "artist_name": t.get("artist_name"),
                   "num_playlists": int(t.get("num_playlists") or 0)} for t in top]
    top_artists = [{"artist_key": k, "name": artist_names[k], "playlist_tracks": n, "num_tracks": artist_tracks[k]}
                   for k, n in sorted(artists.items(), key=lambda x: (-x[1], x[0]))[:STATS_TOP]]
    counts = {"playlists": tiers[0]["playlists"], "tracks": track_count, "artists": len(artists),
              "users": db[c.USERS].estimated_document_count(), "listens": db[c.LISTENS].estimated_document_count(),
              "friendships": db[c.FRIENDSHIPS].estimated_document_count(), "events": sum(events_by_kind.values()),
              "playlist_tracks": tiers[0]["playlist_tracks"]}
    return {"_id": CATALOGUE_STATS_ID, "computed_at": datetime.now(UTC), "events_until": events_until,
            "seconds": round(time.perf_counter() - began, 2), "counts": counts, "events_by_kind": events_by_kind,
            "top_tracks": top_tracks, "top_artists": top_artists, "tiers": tiers}


def event_count() -> int:
    """Every stored feedback event: the statistics document's count plus those stored since it was computed,
    so no page view counts the whole collection; a full count only while no statistics are stored."""
    doc = get_db()[c.CATALOGUE_STATS].find_one({"_id": CATALOGUE_STATS_ID}, {"counts.events": 1, "events_until": 1})
    if doc is None or doc.get("events_until") is None:
        return get_db()[c.EVENTS].count_documents({})
    return int(doc["counts"]["events"]) + event_count_since(since=doc["events_until"])
