"""Reads of the pairing package."""

from __future__ import annotations

from typing import Any

import numpy as np
from pymongo import DESCENDING

from ranker.training.selectors import live_model
from recsys_site.mongo import get_db

from . import collections as c
from .taste_map import TasteMap


def buddies_for_user(*, user: str, k: int = 10) -> list[dict[str, Any]] | None:
    """The user's top-``k`` buddies (user, similarity, shared_tracks, shared_artists), or None if never paired."""
    doc = get_db()[c.BUDDIES].find_one({"_id": user}, {"buddies": {"$slice": k}})
    return None if doc is None else doc["buddies"]


def buddies_for_users(*, users: list[str], k: int = 10, chunk: int = 1000) -> dict[str, list[dict[str, Any]]]:
    """``buddies_for_user`` for many users, one query per ``chunk`` of them; users never paired are left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(users), chunk):
        for doc in get_db()[c.BUDDIES].find({"_id": {"$in": users[start:start + chunk]}},
                                            {"buddies": {"$slice": k}}):
            out[doc["_id"]] = doc["buddies"]
    return out


def buddies_state() -> dict[str, Any] | None:
    """When the buddies now served were computed, from which model, by which method."""
    return get_db()[c.PAIRING_STATE].find_one({"_id": "buddies"})


def buddies_user_search(*, prefix: str, limit: int = 10) -> list[str]:
    """Ids of paired users that start with ``prefix`` (case-sensitive, as ids are), in id order.

    A range on the indexed ``user`` field, not a ``$regex``: SecantusDB answers a regex by reading every document.
    """
    prefix = prefix.strip()
    if not prefix:
        return []
    docs = get_db()[c.BUDDIES].find({"user": {"$gte": prefix, "$lt": prefix + "\U0010ffff"}}, {"_id": 1})
    return [d["_id"] for d in docs.sort("user", 1).limit(limit)]


def buddies_shared_tracks(*, user: str, buddies: list[str], limit: int = 5) -> dict[str, list[str]]:
    """For each of ``buddies``, up to ``limit`` track URIs that they and ``user`` both like, as the live model saw
    them when it was trained (the snapshot the stored ``shared_tracks`` counts come from), most popular first.

    Users the model does not know share nothing; empty when no model is live.
    """

    model = live_model()
    if model is None or user not in model.user_index:
        return {b: [] for b in buddies}
    mine = model.user_items[model.user_index[user]].indices
    out: dict[str, list[str]] = {}
    for buddy in buddies:
        row = model.user_index.get(buddy)
        if row is None:
            out[buddy] = []
            continue
        both = np.intersect1d(mine, model.user_items[row].indices)
        both = both[np.argsort(-np.asarray(model.popularity)[both], kind="stable")][:limit]
        out[buddy] = model.item_ids[both].tolist()
    return out


def taste_map_get() -> TasteMap | None:
    """The stored taste map (a seeded sample of users with their 2-D place and taste cluster), or None when
    ``buddies_compute`` has not made one."""
    db = get_db()[c.TASTE_MAP]
    state = db.find_one({"_id": "state"})
    if state is None:
        return None
    users: list[str] = []
    x: list[float] = []
    y: list[float] = []
    cluster: list[int] = []
    for chunk in db.find({"_id": {"$regex": "^chunk:"}}).sort("_id", 1):
        users += chunk["users"]
        x += chunk["x"]
        y += chunk["y"]
        cluster += chunk["cluster"]
    return TasteMap(model_version=state.get("model_version"), users=users, x=x, y=y, cluster=cluster,
                    total_users=int(state.get("users", len(users))), cluster_names=list(state.get("cluster_names", [])),
                    cluster_sizes=list(state.get("cluster_sizes", [])),
                    explained_variance=list(state.get("explained_variance", [])),
                    computed_at=state.get("computed_at"), source="stored")


def taste_map_positions(*, users: list[str]) -> dict[str, tuple[float, float, int]]:
    """Each user's (x, y, cluster) on the stored map, kept with their buddies; users without a place are left out."""
    out: dict[str, tuple[float, float, int]] = {}
    for start in range(0, len(users), 100):
        for doc in get_db()[c.BUDDIES].find({"_id": {"$in": users[start:start + 100]}, "map": {"$exists": True}},
                                            {"map": 1}):
            x, y, cluster = doc["map"]
            out[doc["_id"]] = (float(x), float(y), int(cluster))
    return out


def hetrec_result_latest() -> dict[str, Any] | None:
    """The newest recorded ``evaluate_pairing`` run (``created_at``, ``dataset``, ``result``), or None if never run."""
    return get_db()[c.PAIRING_EVALUATIONS].find_one({"kind": "hetrec"}, sort=[("created_at", DESCENDING)])
