"""The write endpoints: token auth, users, a user's playlists, feedback events (all or nothing)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conftest import app_client as make_app_client

pytestmark = pytest.mark.django_db

TRACK = "spotify:track:" + "A" * 22


@pytest.fixture
def app_client():
    """An app's token with every scope: it acts for the users it creates."""
    return make_app_client("users:write", "events:write", "picks:read", app="app", any_user=False)


def _first_party() -> APIClient:
    """An app that may act for every user (``any_user``), with every scope."""
    return make_app_client("users:write", "events:write", "picks:read")


def test_writes_need_a_token(live):
    anonymous = APIClient()
    assert anonymous.post("/api/v1/users", {"name": "x"}, format="json").status_code == 401
    assert anonymous.post("/api/v1/events", {"user": "x", "kind": "like"}, format="json").status_code == 401


def test_users_playlists_and_a_like_that_changes_picks(app_client, live):
    created = app_client.post("/api/v1/users", {"name": "alice"}, format="json")
    assert created.status_code == 201 and created.json()["id"] == "api:alice" and created.json()["token"]
    assert app_client.post("/api/v1/users", {"name": "alice"}, format="json").status_code == 409
    assert app_client.post("/api/v1/users", {"name": "no spaces"}, format="json").status_code == 400

    cold = app_client.get("/api/v1/users/api:alice/tracks/recommended", {"k": 10}).json()
    assert cold["source"] == "popularity"
    tracks = live.item_ids[live.user_items[0].indices[:5]].tolist()
    playlist = app_client.post("/api/v1/users/api:alice/playlists", {"name": "Mine", "tracks": tracks[:3]},
                               format="json")
    assert playlist.status_code == 201, playlist.json()
    assert playlist.json()["owner"] == "api:alice" and len(playlist.json()["tracks"]) == 3
    stored = app_client.get(f"/api/v1/playlists/{playlist.json()['pid']}").json()
    assert [t["uri"] for t in stored["tracks"]] == tracks[:3]

    liked = app_client.post("/api/v1/events", [{"user": "api:alice", "kind": "like", "track": t} for t in tracks[3:]],
                            format="json")
    assert liked.status_code == 201 and liked.json() == {"stored": 2, "duplicates": 0}
    warm = app_client.get("/api/v1/users/api:alice/tracks/recommended", {"k": 10}).json()
    assert warm["source"] == "model" and not {t["uri"] for t in warm["tracks"]} & set(tracks)
    mine = app_client.get("/api/v1/users/api:alice/playlists/recommended", {"k": 3}).json()
    assert playlist.json()["pid"] not in [p["pid"] for p in mine["playlists"]]


def test_a_playlist_of_unknown_tracks_is_refused_and_nothing_is_written(app_client, live):
    from ingestion.selectors import playlist_count

    app_client.post("/api/v1/users", {"name": "bob"}, format="json")
    before = playlist_count()
    bad = app_client.post("/api/v1/users/api:bob/playlists", {"name": "x", "tracks": [TRACK]}, format="json")
    assert bad.status_code == 400 and TRACK in bad.json()["fields"]["tracks"][0]
    malformed = app_client.post("/api/v1/users/api:bob/playlists", {"name": "x", "tracks": ["nope"]}, format="json")
    assert malformed.status_code == 400 and "tracks" in malformed.json()["fields"]
    assert app_client.post("/api/v1/users/nobody:9/playlists", {"name": "x", "tracks": [TRACK]},
                           format="json").status_code == 403  # not this app's user (recsys_site/auth.py)
    assert _first_party().post("/api/v1/users/nobody:9/playlists", {"name": "x", "tracks": [TRACK]},
                               format="json").status_code == 404
    assert playlist_count() == before


def test_an_event_batch_is_all_or_nothing_with_errors_per_item(live):
    from ingestion.feedback.selectors import event_iter

    app_client = _first_party()  # the users are MPD pseudo-users: no app created them

    user = str(live.user_ids[0])
    good = {"user": user, "kind": "play", "track": str(live.item_ids[0]), "ms_played": 40_000}
    batch = [good, {"user": user, "kind": "play", "track": "bad"}, {"user": "ghost", "kind": "like", "track": TRACK},
             {"user": user, "kind": "follow"}, {"user": user, "kind": "dance"}, "not an object"]
    response = app_client.post("/api/v1/events", batch, format="json")
    body = response.json()
    assert response.status_code == 400 and body["code"] == "invalid"
    assert set(body["fields"]) == {"1", "2", "3", "4", "5"}
    assert "track" in body["fields"]["1"] and "ms_played" in body["fields"]["1"]
    assert "user" in body["fields"]["2"] and "playlist" in body["fields"]["3"] and "kind" in body["fields"]["4"]
    assert list(event_iter(user=user)) == []  # nothing stored, not even the good one
    single = app_client.post("/api/v1/events", good, format="json")
    assert single.status_code == 201 and len(list(event_iter(user=user))) == 1
