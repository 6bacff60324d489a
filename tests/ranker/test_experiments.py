"""A/B: stable assignment by weight, variants that change the re-ranking, results joined through rec_id."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from ranker.experiments import _wilson, assign, experiment_results

pytestmark = pytest.mark.django_db

SPEC = {"rerank": {"applies_to": ["playlists"], "variants": {
    "control": {"weight": 0.75}, "discovery": {"weight": 0.25, "playlist_weights": {"discovery": 5.0}}}}}


def test_assignment_is_stable_and_follows_the_weights(settings):
    settings.EXPERIMENTS = SPEC
    users = [f"u{i}" for i in range(4000)]
    first = [assign(user=u, experiment="rerank") for u in users]
    assert first == [assign(user=u, experiment="rerank") for u in users]
    share = first.count("discovery") / len(users)
    assert 0.22 < share < 0.28  # 0.25 ± 3 standard errors


def test_wilson_interval_by_hand():
    low, high = _wilson(5, 10)
    # p = .5, n = 10, z = 1.96: centre .5, half = 1.96·sqrt(.025 + .0096)/1.384 ≈ 0.2630
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert _wilson(0, 0) is None


def test_results_join_feedback_to_the_served_variant(live, settings):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    settings.EXPERIMENTS = SPEC
    api = APIClient()
    writer = APIClient()
    writer.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=User.objects.create_user('w')).key}")
    served = {}
    for user in [str(u) for u in live.user_ids[:40]]:
        body = api.get(f"/api/v1/users/{user}/playlists/recommended", {"k": 3}).json()
        assert body["experiment"] == "rerank" and body["variant"] == assign(user=user, experiment="rerank")
        served[user] = body
    # Every third user follows their first pick; every user of the discovery variant also skips a track.
    events = []
    for n, (user, body) in enumerate(served.items()):
        if n % 3 == 0:
            events.append({"user": user, "kind": "follow", "playlist": body["playlists"][0]["pid"],
                           "rec_id": body["rec_id"]})
        if body["variant"] == "discovery":
            events.append({"user": user, "kind": "skip", "track": str(live.item_ids[0]), "rec_id": body["rec_id"]})
    assert writer.post("/api/v1/events", events, format="json").status_code == 201
    results = experiment_results(name="rerank")["variants"]
    for variant in ("control", "discovery"):
        mine = [(n, b) for n, (u, b) in enumerate(served.items()) if b["variant"] == variant]
        assert results[variant]["picks_served"] == results[variant]["users"] == len(mine)
        clicked = sum(1 for n, _ in mine if n % 3 == 0)
        assert results[variant]["click_through"] == pytest.approx(clicked / len(mine))
    assert results["discovery"]["skip_rate"] == 1.0 and results["control"]["skip_rate"] == 0.0
    low, high = results["control"]["click_through_ci"]
    assert low <= results["control"]["click_through"] <= high


def test_the_discovery_variant_favours_new_tracks(live):
    from ranker.picks import recommend_playlists

    users = [str(u) for u in live.user_ids[:20]]
    control = [p["why"]["new_share"] for u in users for p in recommend_playlists(user=u, k=5).playlists]
    discovery = [p["why"]["new_share"] for u in users
                 for p in recommend_playlists(user=u, k=5, weights={"discovery": 5.0}).playlists]
    assert sum(discovery) / len(discovery) > sum(control) / len(control)


def test_results_endpoint(live, settings):
    settings.EXPERIMENTS = SPEC
    api = APIClient()
    api.get(f"/api/v1/users/{live.user_ids[0]}/playlists/recommended")
    body = api.get("/api/v1/experiments/rerank/results").json()
    assert set(body["variants"]) == {"control", "discovery"}
    assert sum(v["picks_served"] for v in body["variants"].values()) >= 1
    missing = api.get("/api/v1/experiments/nope/results")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
