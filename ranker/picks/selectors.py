"""Reads of the picks: a user's precomputed picks and the state of the last precompute."""

from __future__ import annotations

from typing import Any

from ranker import collections as c
from recsys_site.mongo import get_db


def picks_for_user(*, user: str) -> dict[str, Any] | None:
    """The user's precomputed picks (``tracks``, ``playlists``, ``model_version``, ``computed_at``), or None."""
    return get_db()[c.PICKS].find_one({"_id": user})


def picks_state() -> dict[str, Any] | None:
    return get_db()[c.PICKS_STATE].find_one({"_id": "picks"})
