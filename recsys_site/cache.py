"""Django's cache in production: one Redis shared by every web process and machine, failing open.

What goes through Django's cache here (DRF's throttling counts) is worth less than answering the request: while
Redis does not answer, reads miss and writes are skipped (throttling is not enforced meanwhile), as the picks cache
does (``ranker.picks.cache``), instead of every API request failing with a 500. Short socket timeouts (in
``CACHES["default"]["OPTIONS"]``, recsys_site/settings/production.py) bound what a silent Redis costs a request.
"""

from __future__ import annotations

import logging
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
_WARN_EVERY_SECONDS = 60.0
_last_warning = 0.0


def _failed(operation: str, exc: Exception) -> None:
    """Log a failure as a warning at most once a minute per process (at 300 requests/s, one per request floods)."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY_SECONDS:
        _last_warning = now
        log.warning("Django's cache (Redis) unavailable, answering without it: %s failed: %s", operation, exc)
    else:
        log.debug("Django's cache: %s failed: %s", operation, exc)


class SharedRedisCache(RedisCache):
    """Django's RedisCache whose reads miss and writes do nothing while Redis does not answer."""

    def get(self, key, default=None, version=None):
        try:
            return super().get(key, default, version)
        except RedisError as exc:
            _failed("get", exc)
            return default

    def get_many(self, keys, version=None):
        try:
            return super().get_many(keys, version)
        except RedisError as exc:
            _failed("get_many", exc)
            return {}

    def has_key(self, key, version=None):
        try:
            return super().has_key(key, version)
        except RedisError as exc:
            _failed("has_key", exc)
            return False

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            super().set(key, value, timeout, version)
        except RedisError as exc:
            _failed("set", exc)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().add(key, value, timeout, version)
        except RedisError as exc:
            _failed("add", exc)
            return False

    def incr(self, key, delta=1, version=None):
        try:
            return super().incr(key, delta, version)
        except RedisError as exc:
            _failed("incr", exc)
            return 0  # a throttle counting against an unreachable Redis lets the request through

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().set_many(data, timeout, version)
        except RedisError as exc:
            _failed("set_many", exc)
            return list(data)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().touch(key, timeout, version)
        except RedisError as exc:
            _failed("touch", exc)
            return False

    def delete(self, key, version=None):
        try:
            return super().delete(key, version)
        except RedisError as exc:
            _failed("delete", exc)
            return False

    def delete_many(self, keys, version=None):
        try:
            super().delete_many(keys, version)
        except RedisError as exc:
            _failed("delete_many", exc)
