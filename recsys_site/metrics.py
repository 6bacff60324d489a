"""Prometheus metrics at ``/metrics``: request latency, picks served by source, cache hits, the live model.

With several gunicorn workers each process keeps its own counters; ``make run`` sets ``PROMETHEUS_MULTIPROC_DIR``
so that a scrape of any worker sums them all (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUEST_SECONDS = Histogram("buddies_request_seconds", "API request latency", ["view", "method", "status"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0))
PICKS_SERVED = Counter("buddies_picks_served_total", "pick lists served", ["kind", "source", "variant"])
PICKS_CACHE = Counter("buddies_picks_cache_total", "picks cache lookups", ["result"])
SERVED_LOG_DROPPED = Counter("buddies_served_log_dropped_total",
                             "served pick lists dropped because the store was down longer than the buffer holds")
REQUESTS_SHED = Counter("buddies_requests_shed_total", "requests answered at once because they waited past their "
                        "deadline (REQUEST_DEADLINE_SECONDS)", ["answer"])
MODEL_INFO = Gauge("buddies_live_model_info", "the model version this process serves", ["version"],
                   multiprocess_mode="max")
# The degradation watch (ranker/watch/): set by each check, and from the stored states before every scrape.
WATCH_DEGRADED = Gauge("buddies_degraded", "1 while a watched signal is past its threshold (follow_through: "
                       "below WATCH_FOLLOW_THROUGH_MIN; drift: above WATCH_DRIFT_KL_MAX), else 0", ["signal"],
                       multiprocess_mode="mostrecent")
WATCH_VALUE = Gauge("buddies_watch_value", "a watched signal's value at its last check (follow-through share, score "
                    "drift KL; NaN without enough data)", ["signal"], multiprocess_mode="mostrecent")
WATCH_THRESHOLD = Gauge("buddies_watch_threshold", "a watched signal's threshold", ["signal"],
                        multiprocess_mode="mostrecent")

log = logging.getLogger(__name__)
_scrape_hooks: list[Callable[[], None]] = []


def on_scrape(hook: Callable[[], None]) -> None:
    """Call ``hook`` before each scrape of /metrics (a gauge whose truth is in the store, e.g. set by a worker);
    registered once, at start-up, by the package that owns the figures."""
    if hook not in _scrape_hooks:
        _scrape_hooks.append(hook)


def _run_scrape_hooks() -> None:
    for hook in _scrape_hooks:
        try:
            hook()
        except Exception:  # a scrape never fails for one gauge: the rest are still worth having
            log.exception("metrics: scrape hook %s failed", getattr(hook, "__qualname__", hook))


class MetricsMiddleware:
    """Times every request; the label is the URL pattern's name, never the raw path (bounded cardinality)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.url_name or match.view_name) if match else "unmatched"
        REQUEST_SECONDS.labels(view, request.method, str(response.status_code)).observe(
            time.perf_counter() - started)
        return response


def metrics_view(request):
    """Prometheus metrics, for the scraper (``Authorization: Bearer $METRICS_TOKEN``) and staff; public only where
    ``METRICS_PUBLIC`` is on (the local stack)."""
    token = settings.METRICS_TOKEN
    scraper = bool(token) and hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}")
    staff = request.user.is_authenticated and request.user.is_staff
    if not (scraper or staff or settings.METRICS_PUBLIC):
        return JsonResponse({"code": "not_authenticated", "message": "metrics: send the METRICS_TOKEN as a Bearer "
                             "token, or log in as staff"}, status=401)
    _run_scrape_hooks()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
