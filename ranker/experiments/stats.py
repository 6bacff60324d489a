"""A/B results kept up to date incrementally, so that reading them costs one small document per variant.

Three ranker collections (``ranker.collections``):

- ``experiment_stats``: one document per (experiment, variant) with ``picks_served``, ``users`` (exposed),
  ``clicked`` (served lists with a follow, play or like), ``playlists_served`` and ``followed`` (playlist pick lists
  served, and those of them with a follow: the follow-through), ``plays``, ``skips``, and for the listening minutes per
  user ``ms_users`` (users with a per-user document), ``min_sum`` and ``min_sq`` (sum and sum of squares of each
  user's summed minutes): enough for the mean and its 95 % interval without reading the users.
- ``experiment_users``: one document per (experiment, variant, user): ``exposed`` and the user's summed ``ms``
  (its old value is needed to move ``min_sq`` when it grows).
- ``experiment_pending``: feedback that names a ``rec_id`` whose served list is not logged yet (the served log
  is written in batches, ADR 0008, so a quick play can be stored first). Whoever sees both sides claims it with
  ``find_one_and_delete``, so it is counted exactly once.

Writers: the served log after each batch it inserts (``stats_served``), and ``picks_after_feedback`` with the
events it stored (``stats_feedback``). Work per call is bounded by the batch, never by the history.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache
from pymongo import ReturnDocument, UpdateOne
from pymongo.database import Database

from ranker import collections as c

log = logging.getLogger(__name__)
CLICK_KINDS = ("follow", "play", "like")
_exposed: LRUCache = LRUCache(maxsize=100_000)  # (database, user key) already exposed: no round trip again
_exposed_lock = threading.Lock()


def _stats_id(experiment: str, variant: str) -> str:
    return f"{experiment}\x00{variant}"


def _user_id(experiment: str, variant: str, user: str) -> str:
    return f"{experiment}\x00{variant}\x00{user}"


def _inc_stats(db: Database, incs: dict[tuple[str, str], dict[str, float]]) -> None:
    ops = [UpdateOne({"_id": _stats_id(e, v)}, {"$inc": inc, "$setOnInsert": {"experiment": e, "variant": v}},
                     upsert=True) for (e, v), inc in incs.items() if inc]
    if ops:
        db[c.EXPERIMENT_STATS].bulk_write(ops, ordered=False)


def stats_served(db: Database, docs: list[dict[str, Any]]) -> None:
    """Count served lists that were just inserted into ``served`` (each one once), then claim the feedback that
    arrived before them."""
    docs = [d for d in docs if d.get("experiment")]
    if not docs:
        return
    incs: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for doc in docs:
        incs[(doc["experiment"], doc["variant"])]["picks_served"] += 1
        if doc.get("kind") == "playlists":
            incs[(doc["experiment"], doc["variant"])]["playlists_served"] += 1
    with _exposed_lock:
        keys = [k for k in {(d["experiment"], d["variant"], d["user"]) for d in docs}
                if (db.name, _user_id(*k)) not in _exposed]
    if keys:
        # One bulk write for the batch's users: an upsert creates the ones first seen now (exposed at once); then
        # one update per variant marks exposed those that feedback had created first. Round trips per batch, not
        # per user (one each on the flush thread was most of the store's load at 300 picks/s).
        result = db[c.EXPERIMENT_USERS].bulk_write(
            [UpdateOne({"_id": _user_id(*k)}, {"$setOnInsert": {"experiment": k[0], "variant": k[1], "user": k[2],
                                                                "ms": 0, "exposed": True}}, upsert=True)
             for k in keys], ordered=False)
        created = set(result.upserted_ids)
        existing: dict[tuple[str, str], list[str]] = defaultdict(list)
        for n, k in enumerate(keys):
            if n in created:
                incs[k[:2]]["ms_users"] += 1
                incs[k[:2]]["users"] += 1
            else:
                existing[k[:2]].append(_user_id(*k))
        for variant_key, uids in existing.items():
            for start in range(0, len(uids), 100):  # short $in lists: long ones are slow on some servers
                marked = db[c.EXPERIMENT_USERS].update_many(
                    {"_id": {"$in": uids[start:start + 100]}, "exposed": {"$ne": True}}, {"$set": {"exposed": True}})
                incs[variant_key]["users"] += marked.modified_count
        with _exposed_lock:
            for k in keys:
                _exposed[(db.name, _user_id(*k))] = True
    _inc_stats(db, incs)
    by_rec = {d["_id"]: d for d in docs}
    if db[c.EXPERIMENT_PENDING].find_one({}, {"_id": 1}) is None:
        return  # nothing waits for a list (the usual case): no lookup of the batch's rec_ids
    for pending in (doc for start in range(0, len(by_rec), 100)
                    for doc in db[c.EXPERIMENT_PENDING].find({"_id": {"$in": list(by_rec)[start:start + 100]}},
                                                             {"_id": 1})):
        claimed = db[c.EXPERIMENT_PENDING].find_one_and_delete({"_id": pending["_id"]})
        if claimed is not None:
            served = by_rec[claimed["_id"]]
            _apply(db, {served["_id"]: (served["experiment"], served["variant"])}, claimed["events"])


def stats_feedback(db: Database, events: list[dict[str, Any]]) -> None:
    """Fold stored feedback events into the results: one lookup of their ``rec_id``s' (experiment, variant) per
    batch; events of lists not logged yet wait in ``experiment_pending``."""
    events = [e for e in events if e.get("rec_id")]
    if not events:
        return
    rec_ids = list({e["rec_id"] for e in events})
    logged = list(db[c.SERVED].find({"_id": {"$in": rec_ids}}, {"experiment": 1, "variant": 1}))
    found = {s["_id"]: (s["experiment"], s["variant"]) for s in logged if s.get("experiment")}
    _apply(db, found, [e for e in events if e["rec_id"] in found])
    missing = set(rec_ids) - {s["_id"] for s in logged}  # lists in no experiment count for nothing
    if not missing:
        return
    slim = defaultdict(list)
    for e in events:
        if e["rec_id"] in missing:
            slim[e["rec_id"]].append({k: e.get(k) for k in ("rec_id", "user", "kind", "ms_played")})
    now = datetime.now(UTC)
    db[c.EXPERIMENT_PENDING].bulk_write([UpdateOne({"_id": r}, {"$push": {"events": {"$each": evs}},
                                                                "$setOnInsert": {"ts": now}}, upsert=True)
                                         for r, evs in slim.items()], ordered=False)
    # The list may have been logged meanwhile (its flush looked for pending feedback before ours was written):
    # claim it now. Outside experiments (no experiment on the list) the pending feedback is just dropped.
    for served in db[c.SERVED].find({"_id": {"$in": list(missing)}}, {"experiment": 1, "variant": 1}):
        claimed = db[c.EXPERIMENT_PENDING].find_one_and_delete({"_id": served["_id"]})
        if claimed is not None and served.get("experiment"):
            _apply(db, {served["_id"]: (served["experiment"], served["variant"])}, claimed["events"])


def _apply(db: Database, variant_of: dict[str, tuple[str, str]], events: list[dict[str, Any]]) -> None:
    incs: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    clicked_recs: dict[tuple[str, str], set[str]] = defaultdict(set)
    followed_recs: dict[tuple[str, str], set[str]] = defaultdict(set)
    ms_by_user: dict[tuple[str, str, str], int] = defaultdict(int)
    for event in events:
        rec = event.get("rec_id")
        key = variant_of.get(rec) if rec else None
        if key is None:
            continue
        kind = event.get("kind")
        if kind in CLICK_KINDS:
            clicked_recs[key].add(rec)
        if kind == "follow":
            followed_recs[key].add(rec)
        if kind == "play":
            incs[key]["plays"] += 1
            ms_by_user[(*key, event["user"])] += int(event.get("ms_played") or 0)
        elif kind == "skip":
            incs[key]["skips"] += 1
    for key, recs in clicked_recs.items():  # a list counts once however many clicks it gets
        newly = db[c.SERVED].update_many({"_id": {"$in": list(recs)}, "clicked": {"$ne": True}},
                                         {"$set": {"clicked": True}}).modified_count
        incs[key]["clicked"] += newly
    for key, recs in followed_recs.items():  # a playlist list followed from counts once: the follow-through
        newly = db[c.SERVED].update_many({"_id": {"$in": list(recs)}, "kind": "playlists", "followed": {"$ne": True}},
                                         {"$set": {"followed": True}}).modified_count
        incs[key]["followed"] += newly
    for (experiment, variant, user), ms in ms_by_user.items():
        before = db[c.EXPERIMENT_USERS].find_one_and_update(
            {"_id": _user_id(experiment, variant, user)},
            {"$inc": {"ms": ms}, "$setOnInsert": {"experiment": experiment, "variant": variant, "user": user,
                                                  "exposed": False}},
            upsert=True, projection={"ms": 1}, return_document=ReturnDocument.BEFORE)
        old = int((before or {}).get("ms") or 0) / 60_000
        new = old + ms / 60_000
        inc = incs[(experiment, variant)]
        if before is None:
            inc["ms_users"] += 1
        inc["min_sum"] += new - old
        inc["min_sq"] += new * new - old * old
    _inc_stats(db, incs)


def stats_read(db: Database, *, experiment: str) -> dict[str, dict[str, float]]:
    """The kept counters of each variant of ``experiment`` (one small document per variant)."""
    return {d["variant"]: d for d in db[c.EXPERIMENT_STATS].find({"experiment": experiment})}


def stats_pending_delete_before(db: Database, *, before: datetime, batch: int) -> int:
    """Drop up to ``batch`` pending feedback documents older than ``before`` (their list was never logged, or
    expired); the retention cleanup calls it."""
    ids = [d["_id"] for d in db[c.EXPERIMENT_PENDING].find({"ts": {"$lt": before}}, {"_id": 1}).limit(batch)]
    return db[c.EXPERIMENT_PENDING].delete_many({"_id": {"$in": ids}}).deleted_count if ids else 0
