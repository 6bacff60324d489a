"""Mood search (``GET /api/v1/search``, ``ranker.picks.search``) against the live demo model: who may call it, its
bounds, and that what it returns matches the text it was given."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conftest import app_client

pytestmark = pytest.mark.django_db


def _named_playlist(live):
    """A demo playlist whose (normalised) name is shared by other playlists: the text model knows its words."""
    names = [str(n) for n in live.playlist_names]
    row = max((r for r, n in enumerate(names) if n), key=lambda r: names.count(names[r]))
    return int(live.playlist_ids[row]), names[row]


def test_anyone_may_search_playlists_and_the_nearest_names_come_first(live):
    from ingestion.mpd import normalize_name
    from ingestion.selectors import playlist_get

    pid, name = _named_playlist(live)
    response = APIClient().get("/api/v1/search", {"q": name.upper(), "type": "playlists", "k": 5})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["type"] == "playlists" and body["source"] == "text" and body["model_version"] == live.version
    results = body["results"]
    assert 1 <= len(results) <= 5
    assert normalize_name(results[0]["name"]) == name  # the exact name is the nearest
    sims = [r["why"]["similarity"] for r in results]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0
    for r in results:
        doc = playlist_get(pid=r["pid"])
        assert doc["name"] == r["name"] and doc["owner"] == r["owner"]
        assert set(r["why"]["matched"]) & {*name.split(), *(name[i:i + 3] for i in range(len(name)))}


def test_tracks_come_with_the_playlists_that_brought_them(live):
    from ingestion.selectors import playlist_get, track_get

    _, name = _named_playlist(live)
    body = APIClient().get("/api/v1/search", {"q": name, "type": "tracks", "k": 7}).json()
    results = body["results"]
    assert body["type"] == "tracks" and 1 <= len(results) <= 7
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results[:3]:
        doc = track_get(uri=r["uri"])
        assert doc["name"] == r["name"] and doc["artist_name"] == r["artist"]
        assert r["why"]["playlists"], r
        holder = playlist_get(pid=r["why"]["playlists"][0]["pid"])
        assert r["uri"] in {t["uri"] for t in holder["tracks"]}


def test_an_app_token_may_search_too_and_a_post_is_refused(live):
    _, name = _named_playlist(live)
    assert app_client("events:write").get("/api/v1/search", {"q": name}).status_code == 200
    assert APIClient().post("/api/v1/search", {"q": name}, format="json").status_code == 405


@pytest.mark.parametrize("params, field", [
    ({}, "q"), ({"q": "   "}, "q"), ({"q": "x" * 201}, "q"), ({"q": "chill", "type": "albums"}, "type"),
    ({"q": "chill", "k": 0}, "k"), ({"q": "chill", "k": 51}, "k"), ({"q": "chill", "k": "ten"}, "k"),
])
def test_bad_parameters_are_400s_that_name_them(live, params, field):
    response = APIClient().get("/api/v1/search", params)
    assert response.status_code == 400, response.json()
    assert field in response.json()["fields"]


def test_bounds_are_settings(live, settings):
    settings.SEARCH_MAX_K = 3
    settings.SEARCH_MAX_QUERY_CHARS = 10
    assert APIClient().get("/api/v1/search", {"q": "chill", "k": 4}).status_code == 400
    assert APIClient().get("/api/v1/search", {"q": "c" * 11}).status_code == 400
    assert len(APIClient().get("/api/v1/search", {"q": "chill", "k": 3}).json()["results"]) <= 3


def test_anonymous_searches_are_throttled_like_other_catalogue_reads(live, monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/min", "user": "3/min", "app": "3/min"})
    cache.clear()
    try:
        codes = [APIClient().get("/api/v1/search", {"q": "chill"}).status_code for _ in range(4)]
    finally:
        cache.clear()
    assert codes == [200, 200, 200, 429]


def test_a_version_without_a_text_model_answers_nothing_not_an_error(live):
    import dataclasses

    from ranker.picks.search import search

    older = dataclasses.replace(live, text=None)
    found = search(q="chill", kind="tracks", k=5, model=older)
    assert found["source"] == "none" and found["results"] == []


def test_the_schema_documents_the_endpoint(live):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    op = schema["paths"]["/api/v1/search"]["get"]
    assert {p["name"] for p in op["parameters"]} >= {"q", "type", "k"}
    assert "400" in op["responses"]
