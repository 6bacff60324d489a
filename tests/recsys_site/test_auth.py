"""Who may call what (recsys_site/auth.py), each rule tried by a caller who should be refused.

Issue 15's access findings: (1) any token acted for any user and events did not record who sent them; (2) per-user
reads, experiment results, /metrics and /healthz's error text were anonymous, and every anonymous picks read was
logged as an A/B exposure; (3) the admin login had no limit on failed attempts.
"""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from tests.conftest import app_client

pytestmark = pytest.mark.django_db

TRACK = "spotify:track:" + "A" * 22


def _client(token: str | None = None, scheme: str = "Bearer") -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token}")
    return client


def _app(name: str, scopes: str, any_user: bool = False) -> APIClient:
    return app_client(*scopes.split(","), app=name, any_user=any_user)


@pytest.fixture
def world(live):
    """Two apps, each with a user it created (and that user's own token), and an MPD user nobody created."""
    radio = _app("radio", "users:write,events:write,picks:read")
    shop = _app("shop", "users:write,events:write,picks:read")
    made = {}
    suffix = uuid.uuid4().hex[:8]  # the store lives as long as the module; users are never deleted
    for app, name in ((radio, "rita"), (shop, "sam")):
        answer = app.post("/api/v1/users", {"name": f"{name}-{suffix}"}, format="json")
        assert answer.status_code == 201, answer.json()
        made[name] = answer.json()
    mpd_user = str(live.user_ids[0])
    return {"radio": radio, "shop": shop, "rita": made["rita"], "sam": made["sam"], "mpd": mpd_user}


def _like(user: str, **extra) -> dict:
    return {"user": user, "kind": "like", "track": TRACK, **extra}


def test_an_app_acts_only_for_its_own_users_and_events_record_the_credential(world):
    from ingestion import collections as c
    from recsys_site.mongo import get_db

    store = get_db()
    store[c.EVENTS].delete_many({})

    assert world["radio"].post("/api/v1/events", _like(world["rita"]["id"]), format="json").status_code == 201
    for other in (world["sam"]["id"], world["mpd"]):  # another app's user; a user no app created
        refused = world["radio"].post("/api/v1/events", _like(other), format="json")
        assert refused.status_code == 403 and "its own users" in refused.json()["message"], refused.json()
    mixed = world["radio"].post("/api/v1/events", [_like(world["rita"]["id"]), _like(world["sam"]["id"])],
                                format="json")
    assert mixed.status_code == 403  # all or nothing: not even rita's like is stored
    stored = list(store[c.EVENTS].find({}, {"_id": 0, "user": 1, "credential": 1}))
    assert stored == [{"user": world["rita"]["id"], "credential": "app:radio"}]
    assert world["radio"].post(f"/api/v1/users/{world['sam']['id']}/playlists", {"name": "x", "tracks": [TRACK]},
                               format="json").status_code == 403


def test_a_user_token_acts_for_its_own_user_only(world):
    from ingestion import collections as c
    from recsys_site.mongo import get_db

    store = get_db()
    store[c.EVENTS].delete_many({})

    rita = _client(world["rita"]["token"])
    assert rita.post("/api/v1/events", _like(world["rita"]["id"]), format="json").status_code == 201
    refused = rita.post("/api/v1/events", _like(world["mpd"]), format="json")
    assert refused.status_code == 403 and world["rita"]["id"] in refused.json()["message"]
    assert rita.post("/api/v1/users", {"name": "mallory"}, format="json").status_code == 403  # users:write is apps'
    assert rita.get(f"/api/v1/users/{world['rita']['id']}/tracks/recommended").status_code == 200
    assert rita.get(f"/api/v1/users/{world['sam']['id']}/tracks/recommended").status_code == 403
    assert store[c.EVENTS].find_one({}, {"credential": 1})["credential"] == f"user:{world['rita']['id']}"


def test_scopes_are_checked_and_unknown_tokens_are_401(world):
    from rest_framework.authtoken.models import Token

    writer = _app("writer", "events:write", any_user=True)
    assert writer.post("/api/v1/events", _like(world["mpd"]), format="json").status_code == 201
    denied = writer.get(f"/api/v1/users/{world['mpd']}/tracks/recommended")
    assert denied.status_code == 403 and "picks:read" in denied.json()["message"]
    assert writer.post("/api/v1/users", {"name": "x"}, format="json").status_code == 403  # no users:write
    assert _client("bdy_not-a-token").get(f"/api/v1/users/{world['mpd']}/buddies").status_code == 401
    from django.contrib.auth.models import User

    plain = _client(Token.objects.create(user=User.objects.create_user("plain")).key, scheme="Token")
    assert plain.post("/api/v1/events", _like(world["mpd"]), format="json").status_code == 403  # finding 1
    revoked = _app("gone", "picks:read", any_user=True)
    from recsys_site.auth import _known
    from recsys_site.models import Credential

    Credential.objects.filter(app="gone").update(active=False)
    _known.clear()
    assert revoked.get(f"/api/v1/users/{world['mpd']}/buddies").status_code == 401


@pytest.mark.parametrize("path", ["tracks/recommended", "playlists/recommended", "buddies"])
def test_per_user_reads_need_picks_read_unless_public(world, settings, path):
    user = world["mpd"]
    anonymous = _client().get(f"/api/v1/users/{user}/{path}")
    assert anonymous.status_code == 401, anonymous.json()
    assert world["radio"].get(f"/api/v1/users/{user}/{path}").status_code == 403  # not radio's user
    assert _app("site", "picks:read", any_user=True).get(f"/api/v1/users/{user}/{path}").status_code == 200
    settings.API_PUBLIC_READS = True  # the local demo
    assert _client().get(f"/api/v1/users/{user}/{path}").status_code == 200


def test_an_anonymous_public_read_is_not_an_exposure(world, settings):
    from ranker import collections as rc
    from recsys_site.mongo import get_db

    store = get_db()
    from ranker.experiments.served_log import SERVED_LOG

    settings.API_PUBLIC_READS = True
    SERVED_LOG.flush()  # the lists the fixture's requests left buffered
    before = store[rc.SERVED].count_documents({})
    for path in ("tracks/recommended", "playlists/recommended"):
        assert _client().get(f"/api/v1/users/{world['mpd']}/{path}").status_code == 200
    SERVED_LOG.flush()
    assert store[rc.SERVED].count_documents({}) == before
    site = _app("site", "picks:read", any_user=True)
    assert site.get(f"/api/v1/users/{world['mpd']}/playlists/recommended").status_code == 200
    SERVED_LOG.flush()
    assert store[rc.SERVED].count_documents({}) == before + 1


def test_experiment_results_metrics_and_health_details_are_for_staff(world, settings, admin_client):
    settings.METRICS_TOKEN = "scrape-me"
    name = next(iter(settings.EXPERIMENTS))
    assert _client().get(f"/api/v1/experiments/{name}/results").status_code == 401
    assert world["radio"].get(f"/api/v1/experiments/{name}/results").status_code == 403
    assert admin_client.get(f"/api/v1/experiments/{name}/results").status_code == 200
    assert _client().get("/metrics").status_code == 401
    assert _client("scrape-me").get("/metrics").status_code == 200
    assert admin_client.get("/metrics").status_code == 200
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # a broker that is down: the probe says so, not why
    public = _client().get("/healthz").json()
    assert public["broker"]["ok"] is False and "error" not in public["broker"]
    assert "error" in admin_client.get("/healthz").json()["broker"]


def test_the_admin_login_locks_out_after_repeated_failures(client, django_user_model, settings):
    django_user_model.objects.create_user("ana", password="right-password", is_staff=True)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "ana", "password": "wrong"})
    locked = client.post("/admin/login/", {"username": "ana", "password": "right-password"})
    assert locked.status_code == 429  # even the right password, until the cool-off ends
    assert "_auth_user_id" not in client.session


@pytest.fixture
def tight_limits(monkeypatch, settings):
    """Three requests a minute for each kind of caller, counted afresh (Django's cache: Redis in production)."""
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/min", "user": "3/min", "app": "3/min"})
    cache.clear()
    yield
    cache.clear()


def test_x_forwarded_for_does_not_buy_an_anonymous_caller_a_fresh_limit(live, tight_limits, settings):
    """Finding 6: anonymous callers were counted per X-Forwarded-For, a value they choose."""
    codes = [_client().get("/api/v1/playlists/1", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code
             for n in range(5)]
    assert codes == [200, 200, 200, 429, 429], codes
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}  # behind nginx: its last hop counts
    fresh = _client().get("/api/v1/playlists/1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert fresh.status_code == 200


def test_each_token_has_its_own_limit(live, tight_limits):
    site, other = _app("site", "picks:read", any_user=True), _app("other", "picks:read", any_user=True)
    user = str(live.user_ids[0])
    codes = [site.get(f"/api/v1/users/{user}/buddies").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert other.get(f"/api/v1/users/{user}/buddies").status_code == 200
