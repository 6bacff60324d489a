"""Shedding overload (issue 15, finding 7): past about 90 requests/s on the fly, requests used to queue until the
client's timeout. A request that already waited past REQUEST_DEADLINE_SECONDS since the proxy received it
(X-Request-Start) is now answered at once: a picks read with the popular fallback, anything else with a 503."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from tests.conftest import app_client

pytestmark = pytest.mark.django_db


def _site() -> APIClient:
    return app_client("picks:read")


def _stamp(seconds_ago: float, ms: bool = False) -> str:
    at = time.time() - seconds_ago
    return f"{at * 1000:.0f}" if ms else f"t={at:.3f}"


def test_a_picks_read_that_waited_too_long_gets_the_flagged_popular_fallback(live, settings):
    settings.REQUEST_DEADLINE_SECONDS = 0.5
    user = str(live.user_ids[0])
    fresh = _site().get(f"/api/v1/users/{user}/tracks/recommended", {"k": 5}, HTTP_X_REQUEST_START=_stamp(0.05))
    assert fresh.status_code == 200 and "fallback" not in fresh.json() and fresh.json()["source"] != "popularity"
    for stamp in (_stamp(3.0), _stamp(3.0, ms=True)):
        shed = _site().get(f"/api/v1/users/{user}/tracks/recommended", {"k": 5}, HTTP_X_REQUEST_START=stamp)
        body = shed.json()
        assert shed.status_code == 200 and body["fallback"] == "overload" and body["source"] == "popularity"
        assert len(body["tracks"]) == 5 and shed["X-Shed"] == "fallback"
    playlists = _site().get(f"/api/v1/users/{user}/playlists/recommended", {"k": 3},
                            HTTP_X_REQUEST_START=_stamp(3.0)).json()
    assert playlists["fallback"] == "overload" and len(playlists["playlists"]) == 3


def test_any_other_request_that_waited_too_long_is_a_503_with_retry_after(live, settings):
    settings.REQUEST_DEADLINE_SECONDS = 0.5
    late = APIClient().get("/api/v1/playlists", HTTP_X_REQUEST_START=_stamp(2.0))
    assert late.status_code == 503 and late.json()["code"] == "overloaded" and late["Retry-After"] == "1"
    assert APIClient().get("/api/v1/playlists", HTTP_X_REQUEST_START=_stamp(0.1)).status_code == 200
    assert APIClient().get("/api/v1/playlists", HTTP_X_REQUEST_START="garbage").status_code == 200
    settings.REQUEST_DEADLINE_SECONDS = 0  # off
    assert APIClient().get("/api/v1/playlists", HTTP_X_REQUEST_START=_stamp(2.0)).status_code == 200


def _wsgi_get(app, path: str, query: str = "", **headers: str) -> tuple[str, dict[str, str], bytes]:
    """One real WSGI call of ``app``: (status line, headers, body)."""
    import io

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "testserver",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.version": (1, 0),
               "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(), "wsgi.multithread": False,
               "wsgi.multiprocess": True, "wsgi.run_once": False, "HTTP_HOST": "testserver",
               **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
    seen: dict[str, object] = {}

    def start_response(status, response_headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(response_headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_the_wsgi_fast_path_sheds_before_django_and_passes_the_rest_through(live, settings):
    """recsys_site.wsgi wraps Django in DeadlineWSGI: a late picks read gets the flagged fallback and any other
    late request the 503, answered from the environ; a request in time reaches Django (a real picks list)."""
    import json

    from django.core.wsgi import get_wsgi_application

    from recsys_site.auth import credential_create
    from recsys_site.deadline import DeadlineWSGI

    settings.REQUEST_DEADLINE_SECONDS = 0.5
    settings.ALLOWED_HOSTS = ["testserver"]
    def unreachable(environ, start_response):
        raise AssertionError(f"a late request reached Django: {environ['PATH_INFO']}")

    late_only = DeadlineWSGI(unreachable)
    app = DeadlineWSGI(get_wsgi_application())
    _, token = credential_create(kind="app", app="site", scopes=["picks:read"], any_user=True)
    user = str(live.user_ids[0])
    path = f"/api/v1/users/{user}/tracks/recommended"
    status, headers, body = _wsgi_get(late_only, path, "k=7", x_request_start=_stamp(3.0))
    shed = json.loads(body)
    assert status.startswith("200") and headers["X-Shed"] == "fallback" and shed["fallback"] == "overload"
    assert len(shed["tracks"]) == 7 and shed["source"] == "popularity"
    status, headers, body = _wsgi_get(late_only, f"/api/v1/users/{user}/playlists/recommended/", "k=2",
                                      x_request_start=_stamp(3.0, ms=True))
    assert status.startswith("200") and len(json.loads(body)["playlists"]) == 2
    status, headers, body = _wsgi_get(late_only, "/api/v1/playlists", x_request_start=_stamp(3.0))
    assert status.startswith("503") and headers["Retry-After"] == "1" and json.loads(body)["code"] == "overloaded"
    status, _, body = _wsgi_get(app, path, "k=7", x_request_start=_stamp(0.05), authorization=f"Bearer {token}")
    served = json.loads(body)
    assert status.startswith("200") and "fallback" not in served and served["source"] != "popularity"
    assert len(served["tracks"]) == 7
