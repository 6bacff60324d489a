"""The dashboard's type-ahead for seed tracks (``ingestion.selectors.track_lookup``): by title or artist prefix, in
the case the analyst types, bounded, the most-held first."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def _a_track(db, skip=0):
    return db["tracks"].find_one({"name": {"$regex": "^[A-Za-z]{4}"}}, skip=skip)


def test_a_title_prefix_typed_in_any_case_finds_the_track(demo_store):
    from ingestion.selectors import track_lookup

    track = _a_track(demo_store)
    for typed in (track["name"][:4], track["name"][:4].lower(), track["name"][:4].upper().title()):
        found = track_lookup(text=typed, limit=50)
        assert track["_id"] in {t["_id"] for t in found}, typed
        assert all(t["name"].lower().startswith(typed.lower()) or t["artist_name"].lower().startswith(typed.lower())
                   for t in found)


def test_an_artist_prefix_finds_the_artists_tracks_most_held_first(demo_store):
    from ingestion.selectors import track_lookup

    track = _a_track(demo_store)
    artist = track["artist_name"]
    found = track_lookup(text=artist.lower(), limit=50)
    assert found and any(t["artist_name"] == artist for t in found)
    held = [t.get("num_playlists") or 0 for t in found]
    assert held == sorted(held, reverse=True)


def test_lookups_are_bounded(demo_store):
    from ingestion.selectors import TRACK_LOOKUP_MAX, track_lookup

    track = _a_track(demo_store)
    assert len(track_lookup(text=track["name"][:2], limit=3)) <= 3
    assert len(track_lookup(text=track["name"][:2], limit=10_000)) <= TRACK_LOOKUP_MAX
    assert track_lookup(text=track["name"][:1]) == [] and track_lookup(text="   ") == []
    assert track_lookup(text="\U0010ffff" * 500) == []


def test_track_summaries_name_each_track(demo_store):
    from ingestion.selectors import track_summaries

    tracks = [_a_track(demo_store, n) for n in range(3)]
    found = track_summaries(uris=[t["_id"] for t in tracks] + ["spotify:track:" + "Z" * 22])
    assert set(found) == {t["_id"] for t in tracks}
    assert all(found[t["_id"]]["name"] == t["name"] for t in tracks)
