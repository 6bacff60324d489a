"""Reads of feedback events: for training, for one user's picks, and the engagement aggregates of the dashboard."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo.errors import OperationFailure

from recsys_site.mongo import get_db

from .. import collections as c


def event_iter(*, kinds: tuple[str, ...] | None = None, user: str | None = None) -> Iterator[dict[str, Any]]:
    """Feedback events (``user``, ``kind``, ``track`` or ``playlist``, ``ms_played``, ``ts``).

    One user's events come oldest first; all users' events come in store order (training does not care).
    """
    if user is not None:
        # One user's events through the (user, ts) index alone, their kinds filtered here: a query that also names
        # the kinds makes SecantusDB scan the whole collection (48 ms a user at 28k events, and growing with them;
        # measured), where mongod walks the same index either way. The hot path reads this for every user the live
        # model does not hold.
        cursor = get_db()[c.EVENTS].find({"user": user}, {"_id": 0}).sort("ts", 1)
        return (e for e in cursor if not kinds or e.get("kind") in kinds)
    query: dict[str, Any] = {"kind": {"$in": list(kinds)}} if kinds else {}
    return get_db()[c.EVENTS].find(query, {"_id": 0})


def user_followed_playlists(*, user: str) -> set[int]:
    """Playlists the user follows now: their follow events minus later unfollows."""
    return users_followed_playlists(users=[user])[user]


def events_for_recs(*, rec_ids: list[str]) -> Iterator[dict[str, Any]]:
    """The events that answer the given served pick lists (``rec_id``, ``kind``, ``ms_played``, ``user``)."""
    for start in range(0, len(rec_ids), 100):  # short $in lists: long ones are slow on some servers
        yield from get_db()[c.EVENTS].find({"rec_id": {"$in": rec_ids[start:start + 100]}},
                                           {"rec_id": 1, "kind": 1, "ms_played": 1, "user": 1, "_id": 0})


def users_followed_playlists(*, users: list[str], chunk: int = 1000) -> dict[str, set[int]]:
    """``user_followed_playlists`` for many users in one query per ``chunk`` of them (the picks precompute)."""
    followed: dict[str, set[int]] = {user: set() for user in users}
    for start in range(0, len(users), chunk):
        query = {"kind": {"$in": ["follow", "unfollow"]}, "user": {"$in": users[start:start + chunk]}}
        cursor = get_db()[c.EVENTS].find(query, {"_id": 0, "user": 1, "kind": 1, "playlist": 1})
        for event in cursor.sort("ts", 1):
            pid = event.get("playlist")
            if pid is None:
                continue
            mine = followed[event["user"]]
            (mine.add if event["kind"] == "follow" else mine.discard)(pid)
    return followed


def event_daily_counts(*, kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Feedback events per UTC day and kind, grouped by the server: ``day`` (``YYYY-MM-DD``), ``kind``, ``events``
    and ``ms_played`` (their summed listening time), oldest day first."""
    match: dict[str, Any] = {"kind": {"$in": list(kinds)}} if kinds else {}
    pipeline = [{"$match": match},
                {"$group": {"_id": {"day": {"$dateToString": {"format": "%Y-%m-%d", "date": "$ts"}}, "kind": "$kind"},
                            "events": {"$sum": 1}, "ms": {"$sum": "$ms_played"}}}]
    try:
        rows = [{"day": r["_id"]["day"], "kind": r["_id"]["kind"], "events": int(r["events"]),
                 "ms_played": int(r["ms"] or 0)} for r in get_db()[c.EVENTS].aggregate(pipeline)]
    except OperationFailure:  # a server without $dateToString: the same sums here, over the few fields needed
        sums: dict[tuple[str, str], list[int]] = {}
        for event in get_db()[c.EVENTS].find(match, {"ts": 1, "kind": 1, "ms_played": 1, "_id": 0}):
            row = sums.setdefault((f"{event['ts']:%Y-%m-%d}", event["kind"]), [0, 0])
            row[0] += 1
            row[1] += int(event.get("ms_played") or 0)
        rows = [{"day": day, "kind": kind, "events": n, "ms_played": ms} for (day, kind), (n, ms) in sums.items()]
    return sorted((r for r in rows if r["day"]), key=lambda r: (r["day"], r["kind"]))


def event_totals_by_rec(*, kind: str) -> dict[str | None, dict[str, int]]:
    """Events of one ``kind`` per ``rec_id`` (None: events that carry none): ``events`` and summed ``ms_played``.
    Grouped by the server, so what comes back is one row per pick list that got feedback."""
    pipeline = [{"$match": {"kind": kind}},
                {"$group": {"_id": "$rec_id", "events": {"$sum": 1}, "ms": {"$sum": "$ms_played"}}}]
    out: dict[str | None, dict[str, int]] = {}
    try:
        for row in get_db()[c.EVENTS].aggregate(pipeline):
            total = out.setdefault(row["_id"] or None, {"events": 0, "ms_played": 0})
            total["events"] += int(row["events"])
            total["ms_played"] += int(row["ms"] or 0)
    except OperationFailure:  # a server without $group on a field: sum here
        out.clear()
        for event in get_db()[c.EVENTS].find({"kind": kind}, {"rec_id": 1, "ms_played": 1, "_id": 0}):
            total = out.setdefault(event.get("rec_id") or None, {"events": 0, "ms_played": 0})
            total["events"] += 1
            total["ms_played"] += int(event.get("ms_played") or 0)
    return out


def event_kind_counts(*, until: datetime) -> dict[str, int]:
    match = {"ts": {"$lte": until}}
    try:
        rows = get_db()[c.EVENTS].aggregate([{"$match": match}, {"$group": {"_id": "$kind", "n": {"$sum": 1}}}])
        return {str(r["_id"]): int(r["n"]) for r in rows}
    except OperationFailure:  # a server without $group: count here
        return dict(Counter(str(e.get("kind")) for e in get_db()[c.EVENTS].find(match, {"kind": 1, "_id": 0})))


def event_count_since(*, since: datetime) -> int:
    """Events stored after ``since`` (a range on the ``ts`` index: cheap when ``since`` is recent)."""
    return get_db()[c.EVENTS].count_documents({"ts": {"$gt": since}})


def event_rec_ids_since(*, kind: str, since: datetime) -> set[str]:
    """The distinct ``rec_id``s carried by events of one ``kind`` stored after ``since`` (a range on the ``ts``
    index; events that answer no served list carry none and are left out)."""
    cursor = get_db()[c.EVENTS].find({"ts": {"$gt": since}, "kind": kind}, {"rec_id": 1, "_id": 0})
    return {e["rec_id"] for e in cursor if e.get("rec_id")}


def event_totals_for_recs(*, rec_ids: list[str], kinds: tuple[str, ...] = ("play", "skip"),
                          chunk: int = 500) -> dict[str, dict[str, dict[str, int]]]:
    """Per served list (``rec_id``) and event kind: ``events`` and summed ``ms_played``, grouped by the server one
    ``chunk`` of rec_ids at a time (on the ``rec_id`` index): what comes back is a row per list and kind, never the
    events. Lists with no such events are missing."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for start in range(0, len(rec_ids), chunk):
        match = {"rec_id": {"$in": rec_ids[start:start + chunk]}, "kind": {"$in": list(kinds)}}
        try:
            rows = [(r["_id"]["rec_id"], r["_id"]["kind"], int(r["events"]), int(r["ms"] or 0))
                    for r in get_db()[c.EVENTS].aggregate([
                        {"$match": match},
                        {"$group": {"_id": {"rec_id": "$rec_id", "kind": "$kind"}, "events": {"$sum": 1},
                                    "ms": {"$sum": "$ms_played"}}}])]
        except OperationFailure:  # a server without $group on a compound key: sum here
            sums: dict[tuple[str, str], list[int]] = {}
            for event in get_db()[c.EVENTS].find(match, {"rec_id": 1, "kind": 1, "ms_played": 1, "_id": 0}):
                row = sums.setdefault((event["rec_id"], event["kind"]), [0, 0])
                row[0] += 1
                row[1] += int(event.get("ms_played") or 0)
            rows = [(rec, kind, n, ms) for (rec, kind), (n, ms) in sums.items()]
        for rec, kind, n, ms in rows:
            out.setdefault(rec, {})[kind] = {"events": n, "ms_played": ms}
    return out
