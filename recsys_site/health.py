"""Liveness of the parts Buddies depends on: MongoDB, the Celery broker, and worker + beat (heartbeat)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from kombu import Connection

from .collections import HEARTBEATS
from .mongo import get_client, get_db


def _timed(check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
    except Exception as exc:  # a health check reports every failure instead of raising
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


def mongo_status() -> dict[str, Any]:
    return _timed(lambda: get_client().admin.command("ping"))


def broker_status() -> dict[str, Any]:
    def check() -> None:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    return _timed(check)


def heartbeat_record(*, source: str) -> None:
    get_db()[HEARTBEATS].update_one(
        {"_id": source}, {"$set": {"at": datetime.now(UTC)}}, upsert=True
    )


def heartbeat_age(*, source: str) -> float | None:
    doc = get_db()[HEARTBEATS].find_one({"_id": source})
    if not doc:
        return None
    at = doc["at"] if doc["at"].tzinfo else doc["at"].replace(tzinfo=UTC)
    return (datetime.now(UTC) - at).total_seconds()


def health() -> dict[str, Any]:
    mongo = mongo_status()
    broker = broker_status()
    report: dict[str, Any] = {
        "status": "ok" if mongo["ok"] and broker["ok"] else "unavailable",
        "mongodb": mongo,
        "broker": broker,
    }
    if mongo["ok"]:
        age = heartbeat_age(source="beat")
        stale = age is None or age > 3 * settings.HEARTBEAT_SECONDS
        report["scheduler"] = {"ok": not stale, "last_heartbeat_age_s": None if age is None else round(age, 1)}
    return report
