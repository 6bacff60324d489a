"""Writes of the degradation watch: one check of every signal, its crossings recorded once, the gauges set.

A signal is *bad* past its threshold: online follow-through below ``WATCH_FOLLOW_THROUGH_MIN``, the score drift KL
above ``WATCH_DRIFT_KL_MAX``. A check with too little to go on (fewer than ``WATCH_MIN_SERVED`` playlist lists in
the window; fewer than two model versions with a score histogram) leaves the signal's state as it was. A crossing
(ok → bad, bad → ok) is claimed by a compare-and-set on the signal's ``watch_state`` document, so two checks
running at once record it once; the checks between crossings record nothing but the state's last figures.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ranker import collections as c
from ranker.training.selectors import live_version, score_drift
from recsys_site.jobs import REGISTRY, JobRefused, job_start
from recsys_site.metrics import WATCH_DEGRADED, WATCH_THRESHOLD, WATCH_VALUE
from recsys_site.mongo import get_db

from .selectors import watch_follow_through, watch_states

log = logging.getLogger(__name__)

SIGNALS = ("follow_through", "drift")
# The job a bad signal starts with WATCH_RETRAIN: the playlist ranker's own where it is registered, else the ranker's.
RETRAIN_JOBS = ("train_playlist_ranker", "train_ranker")


def _readings(now: datetime) -> dict[str, dict[str, Any]]:
    """Each signal's figures now, and ``bad``: True past the threshold, False within it, None without enough data."""
    window = settings.WATCH_WINDOW_HOURS
    live = live_version()
    follow = watch_follow_through(since=now - timedelta(hours=window))
    enough = follow["served"] >= settings.WATCH_MIN_SERVED and follow["value"] is not None
    drift = score_drift() or {}
    kl = drift.get("kl")
    return {
        "follow_through": {
            "bad": (follow["value"] < settings.WATCH_FOLLOW_THROUGH_MIN) if enough else None,
            "value": follow["value"], "threshold": settings.WATCH_FOLLOW_THROUGH_MIN, "direction": "below",
            "window_hours": window, "served": follow["served"], "followed": follow["followed"],
            "min_served": settings.WATCH_MIN_SERVED, "model_version": live},
        "drift": {
            "bad": (kl > settings.WATCH_DRIFT_KL_MAX) if kl is not None else None,
            "value": kl, "threshold": settings.WATCH_DRIFT_KL_MAX, "direction": "above",
            "window_hours": window, "served": follow["served"],
            "model_version": (drift.get("new") or {}).get("version"),
            "old_version": (drift.get("old") or {}).get("version"), "live_version": live},
    }


def watch_check(*, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Check every signal once: record the crossings, update the states and the gauges, start a retrain for a
    signal gone bad when ``WATCH_RETRAIN`` is on, and drop closed alerts past ``WATCH_ALERTS_RETENTION_DAYS``.
    Returns, per signal, ``status`` (ok | degraded | unknown), ``value``, ``threshold`` and ``crossed`` (degraded |
    recovered | None) with the recorded ``alert``'s id."""
    now = now or datetime.now(UTC)
    out = {}
    for signal, reading in _readings(now).items():
        out[signal] = _check(signal, reading, now)
    _prune(now)
    watch_gauges_refresh()
    return out


def _check(signal: str, reading: dict[str, Any], now: datetime) -> dict[str, Any]:
    db = get_db()
    bad = reading.pop("bad")
    figures = {**reading, "checked_at": now, "status": "unknown" if bad is None else "degraded" if bad else "ok"}
    state = db[c.WATCH_STATE].find_one({"_id": signal})
    was = bool(state and state.get("degraded"))
    result = {"status": figures["status"], "value": reading["value"], "threshold": reading["threshold"],
              "crossed": None, "alert": None}
    if bad is None or bad == was:
        try:
            db[c.WATCH_STATE].update_one({"_id": signal}, {"$set": figures, "$setOnInsert": {"degraded": False}},
                                         upsert=True)
        except DuplicateKeyError:  # another check created the document meanwhile: update the one it wrote
            db[c.WATCH_STATE].update_one({"_id": signal}, {"$set": figures})
        return result
    alert_id = uuid.uuid4().hex
    change = {**figures, "degraded": bad, "since": now, "alert": alert_id if bad else None}
    try:  # compare-and-set: of two checks that see the same crossing, one records it
        if state is None:
            db[c.WATCH_STATE].insert_one({"_id": signal, **change})
        elif db[c.WATCH_STATE].find_one_and_update({"_id": signal, "degraded": was}, {"$set": change},
                                                   return_document=ReturnDocument.BEFORE) is None:
            return result
    except DuplicateKeyError:
        return result
    kind = "degraded" if bad else "recovered"
    alert = {"_id": alert_id, "signal": signal, "kind": kind, "open": bad, "at": now,
             **reading}
    if bad:
        alert["retrain"] = _retrain(signal) if settings.WATCH_RETRAIN else None
    else:
        alert["degraded_since"] = (state or {}).get("since")
        alert["opened_by"] = (state or {}).get("alert")
    db[c.WATCH_ALERTS].insert_one(alert)
    if not bad:
        db[c.WATCH_ALERTS].update_many({"signal": signal, "open": True, "_id": {"$ne": alert_id}},
                                       {"$set": {"open": False, "closed_at": now, "closed_by": alert_id}})
    log.warning("watch: %s %s: %s %s threshold %s (%s)", signal, kind, reading["value"], reading["direction"],
                reading["threshold"], {k: v for k, v in reading.items() if k not in ("value", "threshold")})
    return {**result, "crossed": kind, "alert": alert_id}


def _retrain(signal: str) -> dict[str, Any]:
    """Start the retrain job; what happened is recorded in the alert (a run already going counts as started)."""
    name = next((job for job in RETRAIN_JOBS if job in REGISTRY), RETRAIN_JOBS[-1])
    try:
        run = job_start(name=name, trigger=f"watch:{signal}")
        log.warning("watch: %s went bad; started %s as run %s", signal, name, run["_id"])
        return {"job": name, "run_id": run["_id"], "started": True}
    except JobRefused as exc:
        return {"job": name, "run_id": exc.run_id, "started": False, "reason": str(exc)}
    except Exception as exc:  # the broker down: the crossing is recorded all the same, with why nothing started
        log.error("watch: %s went bad but %s could not start: %s", signal, name, exc)
        return {"job": name, "run_id": None, "started": False, "reason": f"{type(exc).__name__}: {exc}"}


def _prune(now: datetime) -> int:
    """Closed alerts older than the retention go (open ones stay whatever their age)."""
    days = settings.WATCH_ALERTS_RETENTION_DAYS
    if days <= 0:
        return 0
    return get_db()[c.WATCH_ALERTS].delete_many({"open": False, "at": {"$lt": now - timedelta(days=days)}}
                                                ).deleted_count


def watch_gauges_refresh() -> None:
    """Set this process's watch gauges from the stored states (``/metrics`` calls it before each scrape, so the web
    process exports what the worker's last check found)."""
    states = watch_states()
    for signal in SIGNALS:
        state = states.get(signal) or {}
        value, threshold = state.get("value"), state.get("threshold")
        WATCH_DEGRADED.labels(signal).set(1.0 if state.get("degraded") else 0.0)
        WATCH_VALUE.labels(signal).set(float(value) if value is not None else math.nan)
        WATCH_THRESHOLD.labels(signal).set(float(threshold) if threshold is not None else math.nan)
