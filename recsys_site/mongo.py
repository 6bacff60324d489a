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
from pymongo import ASCENDING, IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

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
                try:
                    created[collection] = db[collection].create_indexes(models)
                except OperationFailure as exc:
                    if exc.code not in _INDEX_CONFLICT:
                        raise
                    created[collection] = [_create_or_retune(db[collection], model) for model in models]
    log.info("indexes ensured on %d collections", len(created))
    return created


_INDEX_CONFLICT = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict: same keys, other options


def retention_index(field: str, days: float) -> IndexModel:
    """An index on the date ``field`` that also expires documents older than ``days`` (a TTL index; none when
    ``days`` is 0). Changing the retention later retunes the existing index (``collMod``) in ``ensure_indexes``."""
    options = {"expireAfterSeconds": int(days * 86400)} if days > 0 else {}
    return IndexModel([(field, ASCENDING)], **options)


def _create_or_retune(collection: Collection, model: IndexModel) -> str:
    doc = model.document
    try:
        return collection.create_indexes([model])[0]
    except OperationFailure as exc:
        if exc.code not in _INDEX_CONFLICT:
            raise
        if "expireAfterSeconds" not in doc:
            log.warning("index %s on %s exists with other options (a TTL?); left as it is", doc["name"],
                        collection.name)
            return doc["name"]
    collection.database.command("collMod", collection.name, index={"keyPattern": dict(doc["key"]),
                                                                   "expireAfterSeconds": doc["expireAfterSeconds"]})
    log.info("index %s on %s now expires documents after %d s", doc["name"], collection.name,
             doc["expireAfterSeconds"])
    return doc["name"]
