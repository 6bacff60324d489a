"""A/B: stable assignment by weight, variants that change the re-ranking, results joined through rec_id."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from ranker.experiments.assign import _wilson, assign, experiment_results
from tests.conftest import app_client

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


def _app(scope: str) -> APIClient:
    """A first-party app's client (it may act for every user) with one scope."""
    return app_client(scope)


def test_results_join_feedback_to_the_served_variant(live, settings):
    settings.EXPERIMENTS = SPEC
    api = _app("picks:read")
    writer = _app("events:write")
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
    from ranker.picks.serve import recommend_playlists

    users = [str(u) for u in live.user_ids[:20]]
    control = [p["why"]["new_share"] for u in users for p in recommend_playlists(user=u, k=5).playlists]
    discovery = [p["why"]["new_share"] for u in users
                 for p in recommend_playlists(user=u, k=5, weights={"discovery": 5.0}).playlists]
    assert sum(discovery) / len(discovery) > sum(control) / len(control)


def test_results_endpoint(live, settings, admin_client):
    settings.EXPERIMENTS = SPEC
    _app("picks:read").get(f"/api/v1/users/{live.user_ids[0]}/playlists/recommended")
    api = admin_client  # results are for staff
    body = api.get("/api/v1/experiments/rerank/results").json()
    assert set(body["variants"]) == {"control", "discovery"}
    assert sum(v["picks_served"] for v in body["variants"].values()) >= 1
    missing = api.get("/api/v1/experiments/nope/results")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_an_admin_experiment_pinning_a_model_version_serves_that_version(live, settings):
    from ranker.experiments.assign import experiments_clear
    from ranker.models import Experiment
    from ranker.picks.serve import recommend_tracks
    from ranker.training.services import ranker_train
    from tests.conftest import FAST

    candidate = ranker_train(params={**FAST, "bpr": {**FAST["bpr"], "epochs": 10}})  # registered, never promoted
    assert candidate.version != live.version
    settings.EXPERIMENTS = {}
    Experiment.objects.create(name="pinned", applies_to=["tracks"],
                              variants={"candidate": {"weight": 1.0, "model_version": candidate.version}})
    experiments_clear()
    user = str(live.user_ids[5])
    body = _app("picks:read").get(f"/api/v1/users/{user}/tracks/recommended", {"k": 20}).json()
    assert (body["experiment"], body["variant"], body["model_version"]) == ("pinned", "candidate", candidate.version)
    expected = recommend_tracks(user=user, k=20, model=candidate).tracks
    assert [t["uri"] for t in body["tracks"]] == list(expected)
    assert body["source"] == "model"  # the live model's precomputed picks are not this variant's

    Experiment.objects.filter(name="pinned").update(active=False)
    experiments_clear()
    after = _app("picks:read").get(f"/api/v1/users/{user}/tracks/recommended", {"k": 20}).json()
    assert after["experiment"] is None and after["model_version"] == live.version


def test_admin_validation_names_each_problem(live):
    from django.core.exceptions import ValidationError

    from ranker.models import Experiment

    bad = Experiment(name="bad", applies_to=["albums"], variants={
        "a": {"weight": -1, "colour": "red"}, "b": {"model_version": "19990101T000000Z-nope"},
        "c": {"playlist_weights": {"loudness": 2}}})
    with pytest.raises(ValidationError) as caught:
        bad.full_clean()
    text = " ".join(caught.value.messages)
    assert "applies_to" in text and "'albums'" in text
    assert "variant 'a': unknown keys ['colour']" in text and "variant 'a': weight must be a positive number" in text
    assert "no model version '19990101T000000Z-nope'" in text
    assert "variant 'c': playlist_weights" in text


def test_the_admin_lists_and_refuses_a_bad_experiment(admin_client, store):
    from ranker.models import Experiment

    assert admin_client.get("/admin/ranker/experiment/").status_code == 200
    response = admin_client.post("/admin/ranker/experiment/add/", {
        "name": "weights", "active": "on", "applies_to": '["playlists"]', "description": "",
        "variants": '{"control": {"weight": 1}, "x": {"weight": 0}}'})
    assert response.status_code == 200 and "weight must be a positive number" in response.content.decode()
    assert not Experiment.objects.filter(name="weights").exists()
    response = admin_client.post("/admin/ranker/experiment/add/", {
        "name": "weights", "active": "on", "applies_to": '["playlists"]', "description": "",
        "variants": '{"control": {"weight": 1}, "x": {"weight": 1, "playlist_weights": {"discovery": 0.9}}}'})
    assert response.status_code == 302 and Experiment.objects.get(name="weights").variants["x"]["weight"] == 1


def test_a_malformed_experiment_in_settings_is_a_named_configuration_error(settings):
    from django.core.exceptions import ImproperlyConfigured

    from ranker.experiments.assign import experiments

    settings.EXPERIMENTS = {"broken": {"variants": {"a": {"weight": "lots"}}}}
    with pytest.raises(ImproperlyConfigured, match="experiment 'broken', variant 'a': weight must be a positive"):
        experiments()
