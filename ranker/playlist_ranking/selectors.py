"""Reads of the learned playlist ranker: its versions, and the live one (loaded once per process, reloaded when the
daily job swaps another in)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import gridfs
from django.conf import settings
from pymongo import DESCENDING
from pymongo.errors import PyMongoError

from ranker import collections as c
from ranker.recommenders.playlist_ranker import PlaylistRanker
from recsys_site.mongo import get_db

log = logging.getLogger(__name__)

KIND = "playlist_ranker"  # its ``model_live`` document


def playlist_ranker_live_version() -> str | None:
    doc = get_db()[c.MODEL_LIVE].find_one({"_id": KIND})
    return doc["version"] if doc else None


def playlist_ranker_get(*, version: str) -> dict[str, Any] | None:
    return get_db()[c.PLAYLIST_RANKERS].find_one({"_id": version})


def playlist_ranker_list(*, limit: int = 50) -> list[dict[str, Any]]:
    """Versions, newest first: status (live, retired), metrics, learned weights."""
    return list(get_db()[c.PLAYLIST_RANKERS].find().sort("created_at", DESCENDING).limit(limit))


def playlist_ranker_load(*, version: str) -> PlaylistRanker:
    """One version from the store, its bytes checked against the SHA-256 recorded with it. ``LookupError`` when the
    version or its file is not there; ``ValueError`` when the file is not what was written."""
    doc = playlist_ranker_get(version=version)
    if doc is None:
        raise LookupError(f"no playlist ranker version {version!r}")
    bucket = gridfs.GridFSBucket(get_db(), bucket_name=c.PLAYLIST_RANKER_FILES)
    try:
        data = bucket.open_download_stream(doc["file_id"]).read()
    except gridfs.errors.NoFile as exc:
        raise LookupError(f"playlist ranker {version}: its file {doc['file_id']} is not in the store") from exc
    if hashlib.sha256(data).hexdigest() != doc["sha256"]:
        raise ValueError(f"playlist ranker {version}: the stored file does not match its SHA-256")
    return PlaylistRanker.from_bytes(data)


class _LiveRanker:
    """The live playlist ranker, cached per process; the pointer is read at most every ``MODEL_POLL_SECONDS``. A
    version that cannot be loaded is logged and served as none (the hand-set ranking), never an error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ranker: PlaylistRanker | None = None
        self._checked = -1e9
        self._db: str | None = None

    def get(self) -> PlaylistRanker | None:
        now = time.monotonic()
        if self._db == settings.MONGO_DB and now - self._checked < settings.MODEL_POLL_SECONDS:
            return self._ranker
        with self._lock:
            try:
                version = playlist_ranker_live_version()
                if version is None:
                    self._ranker = None
                elif self._ranker is None or self._ranker.version != version:
                    self._ranker = playlist_ranker_load(version=version)
            except (LookupError, ValueError, OSError, PyMongoError) as exc:
                log.error("the live playlist ranker cannot be loaded (%s); ranking by the hand-set weights", exc)
                self._ranker = None
            self._checked, self._db = now, settings.MONGO_DB
            return self._ranker

    def clear(self) -> None:
        with self._lock:
            self._ranker, self._checked, self._db = None, -1e9, None


_live = _LiveRanker()


def playlist_ranker_live() -> PlaylistRanker | None:
    """The live learned playlist ranker, or None (none trained yet, or it cannot be loaded here)."""
    return _live.get()


def playlist_ranker_live_clear() -> None:
    """Forget the cached ranker (after a swap in this process, and in tests)."""
    _live.clear()
