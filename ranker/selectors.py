"""Reads of the ranker package: registered model versions and the live model, cached per process."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from pymongo import DESCENDING

from recsys_site.mongo import get_db

from . import collections as c
from .artifacts import KIND, RankerModel


def model_get(*, version: str) -> dict[str, Any] | None:
    return get_db()[c.MODELS].find_one({"_id": version})


def model_list(*, limit: int = 50) -> list[dict[str, Any]]:
    """Model versions, newest first, each with its status (candidate, live, retired, rejected, deleted)."""
    return list(get_db()[c.MODELS].find({"kind": KIND}).sort("created_at", DESCENDING).limit(limit))


def live_version() -> str | None:
    doc = get_db()[c.MODEL_LIVE].find_one({"_id": KIND})
    return doc["version"] if doc else None


class _LiveCache:
    """The live model, loaded once per process and reloaded when another version goes live.

    The pointer is read at most every ``MODEL_POLL_SECONDS``; a version's files never change, so the cached
    object stays valid until the pointer moves.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: RankerModel | None = None
        self._checked = 0.0
        self._db = None

    def get(self) -> RankerModel | None:
        now = time.monotonic()
        db_name = settings.MONGO_DB
        if self._db == db_name and now - self._checked < settings.MODEL_POLL_SECONDS:
            return self._model
        with self._lock:
            version = live_version()
            if version is None:
                self._model = None
            elif self._model is None or self._model.version != version:
                self._model = RankerModel.load(version)
            self._checked, self._db = now, db_name
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._model, self._checked, self._db = None, 0.0, None


_live = _LiveCache()


def live_model() -> RankerModel | None:
    """The model serving now, or None before any model went live."""
    return _live.get()


def live_model_clear() -> None:
    """Forget the cached live model (after a promotion in this process, and in tests)."""
    _live.clear()


def evaluation_latest() -> dict[str, Any] | None:
    return get_db()[c.EVALUATIONS].find_one({}, sort=[("created_at", DESCENDING)])


def picks_for_user(*, user: str) -> dict[str, Any] | None:
    """The user's precomputed picks (``tracks``, ``playlists``, ``model_version``, ``computed_at``), or None."""
    return get_db()[c.PICKS].find_one({"_id": user})


def picks_state() -> dict[str, Any] | None:
    return get_db()[c.PICKS_STATE].find_one({"_id": "picks"})
