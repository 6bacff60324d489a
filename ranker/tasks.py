"""Thin tasks of the ranker package."""

from __future__ import annotations

from celery import shared_task
from pymongo.errors import AutoReconnect, ConnectionFailure

from ranker.picks import cache
from ranker.picks.precompute import picks_refresh_user
from ranker.watch.services import watch_check


@shared_task(name="ranker.refresh_user", ignore_result=True, time_limit=60, soft_time_limit=50,
             autoretry_for=(AutoReconnect, ConnectionFailure), retry_backoff=True, max_retries=3)
def refresh_user(user: str) -> None:
    """Recompute one user's picks from what they like now (sent when their feedback arrives)."""

    cache.refresh_started(user)  # feedback arriving from now on queues another refresh
    picks_refresh_user(user=user)


@shared_task(name="ranker.watch_check", ignore_result=True, time_limit=300, soft_time_limit=240)
def watch_check_task() -> dict:
    """The degradation watch (beat, every WATCH_INTERVAL_SECONDS): follow-through and score drift against their
    thresholds; crossings recorded, gauges set, a retrain started if WATCH_RETRAIN."""
    return watch_check()
