"""The read endpoints against the real servers: picks, buddies, continuation, catalogue, models, the schema."""

from __future__ import annotations

import pytest

from tests.conftest import app_client

pytestmark = pytest.mark.django_db

BOGUS = "spotify:track:" + "Z" * 22


@pytest.fixture
def api():
    """A first-party app that may read every user's picks."""
    return app_client("picks:read")


def _user_with_tracks(live, n=10):
    sizes = live.user_items.getnnz(axis=1)
    row = int((sizes >= n).nonzero()[0][0])
    return str(live.user_ids[row]), live.item_ids[live.user_items[row].indices].tolist()


def test_track_picks_on_the_fly_then_precomputed(api, live):
    from ranker.picks.precompute import picks_precompute

    user, tracks = _user_with_tracks(live)
    body = api.get(f"/api/v1/users/{user}/tracks/recommended", {"k": 20}).json()
    assert body["source"] == "model" and body["model_version"] == live.version and len(body["tracks"]) == 20
    assert body["rec_id"] and body["variant"] == "control"
    assert not {t["uri"] for t in body["tracks"]} & set(tracks)
    picks_precompute(model=live)
    from ranker.picks import cache

    cache.forget_user(user)  # the same model's cached answer would otherwise be served, and rightly
    again = api.get(f"/api/v1/users/{user}/tracks/recommended", {"k": 20}).json()
    assert again["source"] == "precomputed" and again["rec_id"] != body["rec_id"]
    assert [t["uri"] for t in again["tracks"]] == [t["uri"] for t in body["tracks"]]


def test_playlist_picks_and_buddies(api, live):
    user, _ = _user_with_tracks(live)
    picks = api.get(f"/api/v1/users/{user}/playlists/recommended", {"k": 5}).json()
    assert len(picks["playlists"]) == 5 and all("why" in p for p in picks["playlists"])
    assert int(user.split(":")[1]) not in [p["pid"] for p in picks["playlists"]]
    buddies = api.get(f"/api/v1/users/{user}/buddies", {"k": 3}).json()
    assert len(buddies["buddies"]) == 3 and buddies["model_version"] == live.version
    assert {"user", "similarity", "shared_tracks", "shared_artists"} <= set(buddies["buddies"][0])


@pytest.mark.parametrize("path", ["tracks/recommended", "playlists/recommended", "buddies"])
def test_unknown_users_are_404_and_bad_k_is_400(api, live, path):
    missing = api.get(f"/api/v1/users/nobody:1/{path}")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert "nobody:1" in missing.json()["message"]
    user, _ = _user_with_tracks(live)
    for k in ("0", "abc", "100000"):
        bad = api.get(f"/api/v1/users/{user}/{path}", {"k": k})
        assert bad.status_code == 400 and "k" in bad.json()["fields"], (k, bad.json())


def test_continuation_tolerates_unknown_seeds_and_refuses_malformed_ones(api, live):
    from ranker.api import ContinuationApi
    _, tracks = _user_with_tracks(live)
    ok = api.post("/api/v1/recommendations/continuation",
                  {"name": "road trip", "seed_tracks": [*tracks[:3], BOGUS], "k": 50}, format="json")
    body = ok.json()
    assert ok.status_code == 200 and body["unknown_seeds"] == [BOGUS] and len(body["tracks"]) == 50
    assert not {t["uri"] for t in body["tracks"]} & set(tracks[:3])
    # The view returns the picks as built, not through its serializer: they must be exactly the documented shape.
    schema = ContinuationApi.ContinuationSerializer(data=body)
    assert schema.is_valid(), schema.errors
    assert set(body) <= set(schema.fields) and all(set(t) == {"uri", "score"} for t in body["tracks"])
    assert schema.validated_data["tracks"] == body["tracks"]
    title_only = api.post("/api/v1/recommendations/continuation", {"name": "road trip"}, format="json").json()
    assert title_only["source"] in ("title", "popularity") and len(title_only["tracks"]) == 500
    for bad, field in ((["not-a-uri"], "seed_tracks"), ("spotify:track:x", "seed_tracks")):
        response = api.post("/api/v1/recommendations/continuation", {"seed_tracks": bad}, format="json")
        assert response.status_code == 400 and field in response.json()["fields"], response.json()
    assert api.post("/api/v1/recommendations/continuation", {}, format="json").status_code == 400
    too_many = api.post("/api/v1/recommendations/continuation", {"name": "x", "k": 501}, format="json")
    assert too_many.status_code == 400 and "k" in too_many.json()["fields"]


def test_catalogue_reads(api, live):
    from ingestion.selectors import playlist_most_followed

    top = playlist_most_followed(limit=1)[0]
    detail = api.get(f"/api/v1/playlists/{top['_id']}").json()
    assert detail["pid"] == top["_id"] and detail["tracks"] and detail["name"] == top["name"]
    assert api.get("/api/v1/playlists/99999999").status_code == 404
    page = api.get("/api/v1/playlists", {"search": top["name"][:3], "page_size": 5}).json()
    assert page["count"] >= 1 and len(page["results"]) <= 5
    assert all(r["name"].lower().startswith(top["name"][:3].lower()) for r in page["results"])
    assert api.get("/api/v1/playlists", {"page": 0}).status_code == 400
    uri = detail["tracks"][0]["uri"]
    track = api.get(f"/api/v1/tracks/{uri}").json()
    assert track["uri"] == uri and track["num_playlists"] >= 1
    assert api.get(f"/api/v1/tracks/{BOGUS}").status_code == 404
    malformed = api.get("/api/v1/tracks/spotify:track:nope")
    assert malformed.status_code == 400 and "uri" in malformed.json()["fields"]


def test_models_list_marks_the_live_version(api, live):
    body = api.get("/api/v1/models").json()
    assert body["live"] == live.version
    assert [m["version"] for m in body["results"] if m["live"]] == [live.version]


def test_schema_and_docs_are_served(api, live):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/recommendations/continuation" in paths and "/api/v1/users/{user}/buddies" in paths
    assert api.get("/api/docs/").status_code == 200


def test_picks_are_cached_and_a_refresh_invalidates_them(api, live):
    from ranker.picks import cache
    from ranker.picks.precompute import picks_refresh_user

    user, _ = _user_with_tracks(live, n=20)
    first = api.get(f"/api/v1/users/{user}/playlists/recommended", {"k": 4}).json()
    second = api.get(f"/api/v1/users/{user}/playlists/recommended", {"k": 4}).json()
    assert second["cached"] and second["playlists"] == first["playlists"] and second["rec_id"] != first["rec_id"]
    cache.clear_local()  # another process: only Redis holds it
    before = cache.stats()["redis_hits"]
    assert api.get(f"/api/v1/users/{user}/playlists/recommended", {"k": 4}).json()["cached"]
    assert cache.stats()["redis_hits"] == before + 1
    picks_refresh_user(user=user)
    assert not api.get(f"/api/v1/users/{user}/playlists/recommended", {"k": 4}).json()["cached"]
