"""A small per-process cache for dashboard aggregates, so that a page view never rescans a collection."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cachetools import TTLCache
from django.conf import settings

F = TypeVar("F", bound=Callable[..., Any])
_CACHES: list[TTLCache] = []


def clear_all() -> None:
    """Forget every cached aggregate (tests; after an ingest in the same process)."""
    for cache in _CACHES:
        cache.clear()


def cached(seconds: float, maxsize: int = 256) -> Callable[[F], F]:
    """Memoise a function of hashable keyword/positional arguments for ``seconds`` (per process, thread-safe).

    The wrapped function gains ``cache_clear()``; tests call it between databases.
    """

    def decorate(func: F) -> F:
        cache: TTLCache = TTLCache(maxsize=maxsize, ttl=seconds)
        _CACHES.append(cache)
        lock = threading.Lock()

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = (settings.MONGO_DB, args, tuple(sorted(kwargs.items())))
            with lock:
                if key in cache:
                    return cache[key]
            value = func(*args, **kwargs)
            with lock:
                cache[key] = value
            return value

        wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
