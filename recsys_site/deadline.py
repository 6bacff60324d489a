"""Shedding overload: a request that has already waited past its budget is answered at once, cheaply.

nginx stamps when it received a request (``proxy_set_header X-Request-Start "t=${msec}";``, docs/DEPLOY.md); the
time until a web worker takes it up is time spent queued behind other requests. Past ``REQUEST_DEADLINE_SECONDS``
the client has waited long enough: a picks read gets the popular fallback (``"fallback": "overload"``: the same
answer a new user gets, from a list kept in memory) and anything else a 503 with ``Retry-After``, instead of work
whose answer would come too late. Because a shed request costs almost nothing, a worker drains its backlog quickly
and the requests behind it are served in time again.
"""

from __future__ import annotations

import json
import re
import time
from http import HTTPStatus
from urllib.parse import parse_qs

from django.conf import settings
from django.http import JsonResponse
from django.urls import Resolver404, resolve

from ranker.picks.serve import overload_picks

from .metrics import REQUESTS_SHED

HEADER = "HTTP_X_REQUEST_START"
PICKS_VIEWS = {"user-tracks": "tracks", "user-playlists": "playlists"}
# The picks reads by path, for the WSGI fast path (``recsys_site/urls.py``: users/<user>/{kind}/recommended).
PICKS_PATH = re.compile(r"^/api/v1/users/[^/]+/(tracks|playlists)/recommended/?$")


def queued_seconds(request, now: float | None = None) -> float | None:
    """How long the request waited since the proxy received it (``X-Request-Start: t=<epoch s>``, or ms), or None
    without a (parseable) stamp."""
    return stamp_age(request.META.get(HEADER, ""), now)


def stamp_age(raw: str, now: float | None = None) -> float | None:
    """Seconds since the ``X-Request-Start`` value ``raw`` (``t=<epoch s>``, or ms or µs), or None if unparseable."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        stamp = float(raw[2:] if raw.startswith("t=") else raw)
    except ValueError:
        return None
    if stamp > 1e11:  # milliseconds (or micro): nginx's ${msec} is seconds with a fraction
        stamp /= 1000.0 if stamp < 1e14 else 1e6
    return max(0.0, (now or time.time()) - stamp)


def shed_answer(*, kind: str | None, k_raw: str | None, waited: float) -> tuple[int, dict[str, str], dict]:
    """What a shed request gets: (status, headers, body). ``kind`` is the picks read's (``tracks`` or
    ``playlists``), None for anything else."""
    REQUESTS_SHED.labels("fallback" if kind else "503").inc()
    if kind:
        try:
            k = int(k_raw if k_raw is not None else (50 if kind == "tracks" else 10))
        except ValueError:
            k = 10
        return 200, {"X-Shed": "fallback"}, overload_picks(kind=kind, k=min(max(k, 1), 100))
    return 503, {"Retry-After": "1"}, {"code": "overloaded", "message": f"the request waited {waited:.1f} s in "
                                       f"the queue, past its {settings.REQUEST_DEADLINE_SECONDS:g} s budget; try "
                                       "again shortly"}


class DeadlineMiddleware:
    """The shed inside Django (the test client, and any server that does not wrap the app in ``DeadlineWSGI``)."""

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
        status, headers, body = shed_answer(kind=kind, k_raw=request.GET.get("k"), waited=waited)
        return JsonResponse(body, status=status, headers=headers)


class DeadlineWSGI:
    """The same shed in front of Django (``recsys_site/wsgi.py``): a late request is answered from the WSGI
    environ alone, before Django builds a request, runs its middleware or resolves the URL. Under overload the
    shed answers are most of the work, and each one's cost is what decides whether a worker drains its backlog:
    measured in docs/BENCHMARKS.md (the overload scenario of ``bench/api.py``)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        budget = settings.REQUEST_DEADLINE_SECONDS
        raw = environ.get(HEADER)
        waited = stamp_age(raw) if raw and budget > 0 else None
        if waited is None or waited <= budget:
            return self.app(environ, start_response)
        match = PICKS_PATH.match(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "GET" else None
        k_raw = parse_qs(environ.get("QUERY_STRING", "")).get("k", [None])[-1] if match else None
        status, headers, body = shed_answer(kind=match.group(1) if match else None, k_raw=k_raw, waited=waited)
        payload = json.dumps(body, separators=(",", ":")).encode()
        start_response(f"{status} {HTTPStatus(status).phrase}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *headers.items()])
        return [payload]
