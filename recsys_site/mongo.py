"""The one place that creates MongoDB clients.

Every package reads and writes through ``get_db()``; nothing else constructs a ``MongoClient``.
A client is cached per process id because pymongo clients must not cross a ``fork`` (gunicorn and
Celery prefork workers fork after import).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading

from django.apps import apps
from django.conf import settings
from pymongo import MongoClient
from pymongo.database import Database

log = logging.getLogger(__name__)

_lock = threading.Lock()
_clients: dict[tuple[int, str], MongoClient] = {}


def mongo_uri() -> str:
    """The configured URI, or the embedded server's loopback address when ``MONGO_URI`` is unset."""
    return settings.MONGO_URI or f"mongodb://127.0.0.1:{settings.MONGO_PORT}"


def get_client() -> MongoClient:
    uri = mongo_uri()
    key = (os.getpid(), uri)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = MongoClient(
                    uri,
                    serverSelectionTimeoutMS=settings.MONGO_TIMEOUT_MS,
                    connectTimeoutMS=settings.MONGO_TIMEOUT_MS,
                    tz_aware=True,
                    appname="buddies",
                )
                _clients[key] = client
    return client


def get_db() -> Database:
    return get_client()[settings.MONGO_DB]


def close_clients() -> None:
    """Close every cached client (tests switch servers and databases)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def ensure_indexes() -> dict[str, list[str]]:
    """Create every index declared by an installed app's ``indexes.INDEXES``; safe to call any number of times.

    Each package owns its collections, so each declares its own indexes in ``<package>/indexes.py`` as
    ``{collection_name: [IndexModel, ...]}``.
    """
    db = get_db()
    created: dict[str, list[str]] = {}
    for app in apps.get_app_configs():
        try:
            module = importlib.import_module(f"{app.name}.indexes")
        except ModuleNotFoundError as exc:
            if exc.name != f"{app.name}.indexes":
                raise
            continue
        for collection, models in module.INDEXES.items():
            if models:
                created[collection] = db[collection].create_indexes(models)
    log.info("indexes ensured on %d collections", len(created))
    return created
