"""The picks cache: a small per-process LRU over Redis, in front of MongoDB's precomputed picks.

Keys carry the live model version, so a new model invalidates everything by itself. A user's refresh deletes
that user's keys in Redis (``forget_user``); the process tier keeps entries for ``PICKS_CACHE_LOCAL_SECONDS`` at
most, so every process sees the refresh within seconds. Redis being down only costs speed: each tier that fails
is skipped (with short timeouts), the request is answered from MongoDB.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import redis
from django.conf import settings

from recsys_site.metrics import PICKS_CACHE

log = logging.getLogger(__name__)

_lock = threading.Lock()
_local: OrderedDict[str, tuple[float, Any]] = OrderedDict()
_client = None
_stats = {"local_hits": 0, "redis_hits": 0, "misses": 0}


def _redis():
    global _client
    if _client is None and settings.PICKS_CACHE_URL:
        _client = redis.Redis.from_url(settings.PICKS_CACHE_URL, socket_timeout=0.05, socket_connect_timeout=0.05)
    return _client


def key(*, kind: str, version: str | None, user: str, k: int) -> str:
    return f"picks:{kind}:{version}:{user}:{k}"


def _user_set(user: str) -> str:
    return f"picks-keys:{user}"


def get(name: str) -> Any | None:
    now = time.monotonic()
    with _lock:
        hit = _local.get(name)
        if hit and hit[0] > now:
            _local.move_to_end(name)
            _stats["local_hits"] += 1
            _count("local_hit")
            return hit[1]
    try:
        raw = _redis().get(name) if _redis() else None
    except Exception as exc:  # Redis down or slow: answer from the store instead
        log.debug("picks cache: redis get failed: %s", exc)
        raw = None
    if raw is None:
        _stats["misses"] += 1
        _count("miss")
        return None
    value = json.loads(raw)
    _remember(name, value)
    _stats["redis_hits"] += 1
    _count("redis_hit")
    return value


def _count(result: str) -> None:
    PICKS_CACHE.labels(result).inc()


def put(name: str, value: Any, *, user: str) -> None:
    _remember(name, value)
    try:
        client = _redis()
        if client is not None:
            pipe = client.pipeline()
            pipe.set(name, json.dumps(value, default=str), ex=settings.PICKS_CACHE_REDIS_SECONDS)
            pipe.sadd(_user_set(user), name)
            pipe.expire(_user_set(user), settings.PICKS_CACHE_REDIS_SECONDS)
            pipe.execute()
    except Exception as exc:
        log.debug("picks cache: redis put failed: %s", exc)


def forget_user(user: str) -> None:
    """Drop a user's cached picks everywhere this process can reach (called after their picks are refreshed)."""
    with _lock:
        for name in [n for n in _local if f":{user}:" in n]:
            _local.pop(name, None)
    try:
        client = _redis()
        if client is not None:
            names = client.smembers(_user_set(user))
            if names:
                client.delete(*names)
            client.delete(_user_set(user))
    except Exception as exc:
        log.warning("picks cache: could not forget %s in redis: %s", user, exc)


def forget_users(users: list[str]) -> None:
    """``forget_user`` for a batch: one pass over this process's entries and two Redis round trips (the union of
    the users' key sets, then one delete), whatever the number of users."""
    users = list(dict.fromkeys(users))
    if not users:
        return
    wanted = set(users)
    with _lock:
        # A key is picks:{kind}:{version}:{variant}:{digest}:{user}:{k} (a user id may hold ":" itself).
        for name in [n for n in _local if n.split(":", 5)[-1].rsplit(":", 1)[0] in wanted]:
            _local.pop(name, None)
    try:
        client = _redis()
        if client is not None:
            sets = [_user_set(u) for u in users]
            names = client.sunion(sets)
            client.delete(*names, *sets)
    except Exception as exc:
        log.warning("picks cache: could not forget %d users in redis: %s", len(users), exc)


_PENDING_SECONDS = 600  # a refresh queued longer ago than this (lost with the broker) no longer blocks a new one


def _pending(user: str) -> str:
    return f"refresh-pending:{user}"


def refresh_claim(users: list[str]) -> list[str]:
    """The users among ``users`` with no refresh already queued, now marked as queued (one Redis round trip): a
    backlog holds at most one refresh per user however many events they send. Without Redis, all of them."""
    users = list(dict.fromkeys(users))
    try:
        client = _redis()
        if client is None or not users:
            return users
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.set(_pending(user), 1, nx=True, ex=_PENDING_SECONDS)
        return [u for u, fresh in zip(users, pipe.execute(), strict=True) if fresh]
    except Exception as exc:
        log.debug("picks cache: refresh claim failed: %s", exc)
        return users


def refresh_started(user: str) -> None:
    """A worker starts the user's refresh: feedback from now on queues another one."""
    try:
        client = _redis()
        if client is not None:
            client.delete(_pending(user))
    except Exception as exc:
        log.debug("picks cache: refresh mark not cleared: %s", exc)


def stats() -> dict[str, int]:
    return dict(_stats)


def clear_local() -> None:
    with _lock:
        _local.clear()


def _remember(name: str, value: Any) -> None:
    with _lock:
        _local[name] = (time.monotonic() + settings.PICKS_CACHE_LOCAL_SECONDS, value)
        _local.move_to_end(name)
        while len(_local) > settings.PICKS_CACHE_LOCAL_SIZE:
            _local.popitem(last=False)
