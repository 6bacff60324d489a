"""Reads of the pairing package."""

from __future__ import annotations

from typing import Any

from recsys_site.mongo import get_db

from . import collections as c


def buddies_for_user(*, user: str, k: int = 10) -> list[dict[str, Any]] | None:
    """The user's top-``k`` buddies (user, similarity, shared_tracks, shared_artists), or None if never paired."""
    doc = get_db()[c.BUDDIES].find_one({"_id": user}, {"buddies": {"$slice": k}})
    return None if doc is None else doc["buddies"]


def buddies_state() -> dict[str, Any] | None:
    """When the buddies now served were computed, from which model, by which method."""
    return get_db()[c.PAIRING_STATE].find_one({"_id": "buddies"})
