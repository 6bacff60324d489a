"""From stored documents to the matrices models fit: owners as users, events as positives and hard negatives."""

from __future__ import annotations

import numpy as np

from ingestion.feedback.rules import PLAY_POSITIVE_MS
from ranker.training.data import Interactions, Playlists

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


def test_the_matrix_never_reorders_the_playlists_tracks():
    """A model's fit sorts a CSR's indices in place: the playlists' order (the second stage reads it) must survive."""
    pl = Playlists.from_docs([*DOCS, {"_id": 4, "tracks": [{"uri": "t4"}, {"uri": "t1"}, {"uri": "t3"}]}])
    m = pl.matrix()
    m.indices[:] = m.indices[::-1]  # what any in-place work on the matrix could do
    m.sort_indices()
    assert pl.item_ids[pl.tracks_of(3)].tolist() == ["t4", "t1", "t3"]


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


def _same(a: Playlists, b: Playlists) -> None:
    for name in ("pids", "followers", "indptr", "tracks", "item_ids", "item_artist", "item_artist_name"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    assert a.names == b.names and a.owners == b.owners and a.item_index == b.item_index


def test_from_store_reads_the_same_playlists_in_one_streaming_pass(store):
    """Several round trips (batch_size 2 over 5 playlists), unused fields left out, the same arrays as from_docs."""
    docs = [*DOCS,
            {"_id": 4, "name_norm": "d", "owner": "u3", "num_followers": 7, "description": "not read",
             "tracks": [{"uri": "t5", "artist_key": "z", "artist_name": "Z", "duration_ms": 1},
                        {"uri": "t1", "artist_key": "x", "artist_name": "X"}]},
            {"_id": 5, "name_norm": "e", "owner": "u4", "tracks": []}]
    store["playlists"].insert_many([dict(d) for d in docs])
    stored = Playlists.from_store(batch_size=2)
    _same(stored, Playlists.from_docs(docs))
    assert stored.tracks.dtype == np.int32 and stored.indptr.tolist() == [0, 2, 5, 6, 8, 8]
    assert stored.item_ids[stored.tracks_of(3)].tolist() == ["t5", "t1"]


def test_no_playlists_give_empty_arrays_of_the_right_types():
    pl = Playlists.from_docs([])
    assert len(pl) == 0 and pl.n_items == 0 and pl.indptr.tolist() == [0]
    assert pl.tracks.dtype == np.int32 and pl.pids.dtype == np.int64
    assert pl.matrix().shape == (0, 0)
    inter = Interactions.build(playlists=pl)
    assert inter.positives.shape == (0, 0) and inter.negatives is None


def test_many_events_match_one_at_a_time():
    """Events are buffered flat; the matrices equal building with each event's playlist-free equivalent."""
    rng = np.random.default_rng(0)
    pl = Playlists.from_docs(DOCS)
    users = ["u1", "u2", "u5", "u6"]
    events = [{"user": users[rng.integers(4)], "kind": ["like", "skip", "play"][rng.integers(3)],
               "track": f"t{rng.integers(1, 6)}", "ms_played": int(rng.integers(0, 2 * PLAY_POSITIVE_MS))}
              for _ in range(500)]
    inter = Interactions.build(playlists=pl, events=events)
    pos, neg = set(), set()
    for u, row in zip(pl.owners, range(len(pl)), strict=True):
        pos |= {(u, pl.item_ids[t]) for t in pl.tracks_of(row)}
    for e in events:
        if e["track"] not in pl.item_index:
            continue
        positive = e["kind"] == "like" or (e["kind"] == "play" and e["ms_played"] >= PLAY_POSITIVE_MS)
        (pos if positive else neg).add((e["user"], e["track"]))
    neg -= pos

    def pairs(m):
        coo = m.tocoo()
        return {(inter.user_ids[r], inter.item_ids[c]) for r, c in zip(coo.row, coo.col, strict=True)}

    assert pairs(inter.positives) == pos and pairs(inter.negatives) == neg


def test_a_sample_keeps_whole_playlists_and_only_their_tracks():
    docs = [{"_id": pid, "name_norm": f"p{pid}", "owner": f"u{pid}", "num_followers": pid,
             "tracks": [{"uri": f"t{pid}-{i}", "artist_key": f"a{i}", "name": f"n{i}", "album_uri": f"al{pid}"}
                        for i in range(pid % 4)]
             + [{"uri": "shared"}]} for pid in range(30)]
    pl = Playlists.from_docs(docs)
    sample = pl.sample(10, seed=7)
    assert len(sample) == 10 and sample.pids.tolist() == sorted(sample.pids.tolist())  # stored order kept
    for row, pid in enumerate(sample.pids.tolist()):
        whole = pl.item_ids[pl.tracks_of(pid)].tolist()  # pid = its row in ``pl``
        assert sample.item_ids[sample.tracks_of(row)].tolist() == whole
        assert (sample.names[row], sample.owners[row], sample.followers[row]) == (f"p{pid}", f"u{pid}", pid)
    # Only the sample's tracks are items, each once, with its own artist and name.
    assert sorted(sample.item_ids.tolist()) == sorted(set(sample.item_ids[sample.tracks].tolist()))
    for uri, artist, name, album in zip(sample.item_ids, sample.item_artist, sample.item_name, sample.item_album,
                                        strict=True):
        assert (artist, name) == (pl.item_artist[pl.item_index[uri]], pl.item_name[pl.item_index[uri]])
        assert album == pl.item_album[pl.item_index[uri]]  # the second stage's album share reads it
    assert sample.matrix().shape == (10, sample.n_items)
    assert sample.pids.tolist() == pl.sample(10, seed=7).pids.tolist() != pl.sample(10, seed=8).pids.tolist()
    assert pl.sample(30) is pl and pl.sample(100) is pl
