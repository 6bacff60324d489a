"""Shedding overload: a request that has already waited past its budget is answered at once, cheaply.

nginx stamps when it received a request (``proxy_set_header X-Request-Start "t=${msec}";``, docs/DEPLOY.md); the
time until a web worker takes it up is time spent queued behind other requests. Past ``REQUEST_DEADLINE_SECONDS``
the client has waited long enough: a picks read gets the popular fallback (``"fallback": "overload"``: the same
answer a new user gets, from a list kept in memory) and anything else a 503 with ``Retry-After``, instead of work
whose answer would come too late. Because a shed request costs almost nothing, a worker drains its backlog quickly
and the requests behind it are served in time again.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.http import JsonResponse
from django.urls import Resolver404, resolve

from ranker.picks.serve import overload_picks

from .metrics import REQUESTS_SHED

HEADER = "HTTP_X_REQUEST_START"
PICKS_VIEWS = {"user-tracks": "tracks", "user-playlists": "playlists"}


def queued_seconds(request, now: float | None = None) -> float | None:
    """How long the request waited since the proxy received it (``X-Request-Start: t=<epoch s>``, or ms), or None
    without a (parseable) stamp."""
    raw = request.META.get(HEADER, "").strip()
    if not raw:
        return None
    try:
        stamp = float(raw[2:] if raw.startswith("t=") else raw)
    except ValueError:
        return None
    if stamp > 1e11:  # milliseconds (or micro): nginx's ${msec} is seconds with a fraction
        stamp /= 1000.0 if stamp < 1e14 else 1e6
    return max(0.0, (now or time.time()) - stamp)


class DeadlineMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        budget = settings.REQUEST_DEADLINE_SECONDS
        waited = queued_seconds(request) if budget > 0 else None
        if waited is None or waited <= budget:
            return self.get_response(request)
        try:
            name = resolve(request.path_info).url_name
        except Resolver404:
            name = None
        kind = PICKS_VIEWS.get(name) if request.method == "GET" else None
        REQUESTS_SHED.labels("fallback" if kind else "503").inc()
        if kind:
            try:
                k = int(request.GET.get("k", 50 if kind == "tracks" else 10))
            except ValueError:
                k = 10
            return JsonResponse(overload_picks(kind=kind, k=min(max(k, 1), 100)), headers={"X-Shed": "fallback"})
        response = JsonResponse({"code": "overloaded", "message": f"the request waited {waited:.1f} s in the queue, "
                                 f"past its {budget:g} s budget; try again shortly"}, status=503)
        response["Retry-After"] = "1"
        return response
