"""From stored documents to the matrices models fit: owners as users, events as positives and hard negatives."""

from __future__ import annotations

import numpy as np

from ranker.data import PLAY_POSITIVE_MS, Interactions, Playlists

DOCS = [
    {"_id": 1, "name_norm": "a", "owner": "u1", "num_followers": 3,
     "tracks": [{"uri": "t1", "artist_key": "x", "artist_name": "X"}, {"uri": "t2", "artist_key": "y"}]},
    {"_id": 2, "name_norm": "b", "owner": "u1", "tracks": [{"uri": "t2"}, {"uri": "t3"}, {"uri": "t2"}]},
    {"_id": 3, "name_norm": "c", "owner": "u2", "tracks": [{"uri": "t4"}]},
]


def test_playlists_keep_order_ids_and_artists():
    pl = Playlists.from_docs(DOCS)
    assert pl.item_ids.tolist() == ["t1", "t2", "t3", "t4"]
    assert pl.item_ids[pl.tracks_of(1)].tolist() == ["t2", "t3", "t2"]  # order and repeats as stored
    assert pl.matrix()[1].nnz == 2  # a repeat counts once in the matrix
    assert pl.item_artist.tolist() == ["x", "y", "", ""] and pl.item_artist_name[0] == "X"
    assert pl.followers.tolist() == [3, 0, 0]


def test_users_are_owners_and_events_add_positives_and_negatives():
    events = [
        {"user": "u2", "kind": "like", "track": "t1"},
        {"user": "u2", "kind": "play", "track": "t2", "ms_played": PLAY_POSITIVE_MS},
        {"user": "u2", "kind": "play", "track": "t3", "ms_played": 5_000},  # early stop: a negative
        {"user": "u1", "kind": "skip", "track": "t4"},
        {"user": "u1", "kind": "skip", "track": "t1"},  # u1 holds t1: not a negative
        {"user": "u3", "kind": "like", "track": "t3"},  # a user known only from events
        {"user": "u3", "kind": "like", "track": "unknown"},  # not in the catalogue: ignored
    ]
    inter = Interactions.build(playlists=Playlists.from_docs(DOCS), events=events)
    assert inter.user_ids.tolist() == ["u1", "u2", "u3"]
    items = inter.item_index

    def row(m, user):
        return sorted(inter.item_ids[m[inter.user_index[user]].indices].tolist())

    assert row(inter.positives, "u1") == ["t1", "t2", "t3"]  # union of the user's playlists
    assert row(inter.positives, "u2") == ["t1", "t2", "t4"]
    assert row(inter.positives, "u3") == ["t3"]
    assert row(inter.negatives, "u1") == ["t4"]
    assert row(inter.negatives, "u2") == ["t3"]
    assert set(np.unique(inter.positives.data)) == {1.0} and "unknown" not in items
    assert inter.snapshot() == {"users": 3, "items": 4, "positives": 7, "negatives": 2}
