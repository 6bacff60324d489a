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
