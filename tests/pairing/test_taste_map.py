"""The taste map (PCA + k-means of taste vectors) on vectors whose clusters are known, and the pairing records the
dashboard reads: the HetRec result and the stored map's positions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pairing.taste_map import MapFit, cluster_names, taste_map_fit


def blobs(sizes: list[int], d: int = 16, seed: int = 0, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Unit-ish vectors around well separated centres; returns (vectors, true group of each row)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[: len(sizes)] * 3
    groups = np.repeat(np.arange(len(sizes)), sizes)
    return (centres[groups] + spread * rng.normal(size=(len(groups), d))).astype(np.float32), groups


def test_fit_recovers_known_groups_numbered_by_size():
    vectors, groups = blobs([30, 50, 20])
    fit = taste_map_fit(vectors, clusters=3, random_state=0)
    assert fit.clusters == 3 and fit.xy.shape == (100, 2) and fit.rows.tolist() == list(range(100))
    # Each true group is exactly one cluster, and cluster 0 is the largest group (50), 2 the smallest (20).
    for g, expected in ((1, 0), (0, 1), (2, 2)):
        assert set(fit.cluster[groups == g].tolist()) == {expected}
    assert fit.cluster_sizes() == [50, 30, 20]
    assert len(fit.explained_variance) == 2 and 0.9 < sum(fit.explained_variance) <= 1.0
    # The 2-D places keep the groups apart: every point is nearer its own group's centre than another's.
    centres = np.stack([fit.xy[fit.cluster == c].mean(axis=0) for c in range(3)])
    nearest = np.argmin(((fit.xy[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest == fit.cluster).all()
    again = taste_map_fit(vectors, clusters=3, random_state=0)
    np.testing.assert_array_equal(again.xy, fit.xy)


def test_zero_rows_are_left_off_and_the_sample_is_seeded_and_capped():
    vectors, _ = blobs([40, 40])
    vectors[[3, 50]] = 0
    fit = taste_map_fit(vectors, clusters=2, sample=25, random_state=1)
    assert 3 not in fit.rows and 50 not in fit.rows and len(fit.rows) == 78
    assert len(fit.sample) == 25 and len(set(fit.sample.tolist())) == 25 and (np.diff(fit.sample) > 0).all()
    assert fit.sample.tolist() == taste_map_fit(vectors, clusters=2, sample=25, random_state=1).sample.tolist()
    assert fit.sample.tolist() != taste_map_fit(vectors, clusters=2, sample=25, random_state=2).sample.tolist()
    # Fitted on a sample, applied to all: every row still gets a place and a cluster.
    small = taste_map_fit(vectors, clusters=2, fit_sample=10, random_state=0)
    assert small.xy.shape == (78, 2) and set(small.cluster.tolist()) == {0, 1}


def test_tiny_inputs():
    assert taste_map_fit(np.zeros((4, 3))).clusters == 0
    one = taste_map_fit(np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert one.rows.tolist() == [0] and one.cluster.tolist() == [0] and one.xy.tolist() == [[0.0, 0.0]]
    same = taste_map_fit(np.ones((5, 3)), clusters=4)  # fewer distinct points than clusters
    assert same.clusters == 1 and set(same.cluster.tolist()) == {0}


def test_cluster_names_are_the_distinctive_artists():
    # Everyone likes artist 0 (so it names no cluster: no lift); cluster 0's users like 1 and 2, cluster 1's like 3.
    likes = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 1], [1, 0, 0, 1]], dtype=np.float32)
    fit = MapFit(rows=np.arange(5), xy=np.zeros((5, 2)), cluster=np.array([0, 0, 0, 1, 1]), sample=np.arange(5),
                 clusters=2, explained_variance=[], pca_mean=np.zeros(2), pca_components=np.zeros((2, 2)),
                 centroids=np.zeros((2, 2)))
    names = np.array(["Everyone", "Abba", "Blur", "Cher"], dtype=object)
    assert cluster_names(fit, sp.csr_matrix(likes * 3), names, top=2) == ["Abba, Blur", "Cher"]


def test_hetrec_results_are_recorded_and_the_latest_is_read(store):
    from pairing.selectors import hetrec_result_latest
    from pairing.services import hetrec_result_record

    assert hetrec_result_latest() is None
    first = hetrec_result_record(result={"k": 10, "friend_recall": 0.1, "extra": (1, np.float32(0.5))}, dataset="a")
    second = hetrec_result_record(result={"k": 5, "friend_recall": 0.2}, dataset="b")
    latest = hetrec_result_latest()
    assert first != second and latest["_id"] == second and latest["dataset"] == "b"
    assert latest["result"] == {"k": 5, "friend_recall": 0.2} and latest["created_at"] is not None


def test_map_positions_and_user_search_read_the_buddies_documents(store):
    from pairing import collections as c
    from pairing.selectors import buddies_user_search, taste_map_get, taste_map_positions

    store[c.BUDDIES].insert_many([
        {"_id": "mpd:1", "user": "mpd:1", "buddies": [], "map": [0.5, -1.25, 2]},
        {"_id": "mpd:12", "user": "mpd:12", "buddies": []},  # paired before maps existed: no place
        {"_id": "mpd:2", "user": "mpd:2", "buddies": [], "map": [1.0, 2.0, 0]},
        {"_id": "api:x.y", "user": "api:x.y", "buddies": [], "map": [0.0, 0.0, 1]},
        {"_id": "mpd:1x", "buddies": []},  # paired before the search field existed: not found by a search
    ])
    assert taste_map_positions(users=["mpd:1", "mpd:12", "nobody"]) == {"mpd:1": (0.5, -1.25, 2)}
    assert buddies_user_search(prefix="mpd:1") == ["mpd:1", "mpd:12"]
    assert buddies_user_search(prefix="api:x.") == ["api:x.y"] and buddies_user_search(prefix="api:x*") == []
    assert buddies_user_search(prefix="  ") == []
    assert taste_map_get() is None


@pytest.mark.parametrize("sample", [3, 10])
def test_stored_map_round_trips_through_chunks(store, monkeypatch, sample):
    from pairing import services
    from pairing.selectors import taste_map_get

    class Model:  # what _write_map reads of a model
        version = "v1"
        user_ids = np.array([f"u{i}" for i in range(10)], dtype=object)

    vectors, _ = blobs([5, 5], d=4)
    fit = taste_map_fit(vectors, clusters=2, sample=sample, random_state=0)
    fit.cluster_names = ["a", "b"]
    monkeypatch.setattr(services, "MAP_CHUNK", 4)  # several chunks, read back in order
    services._write_map(Model, fit, 0)
    got = taste_map_get()
    assert got.source == "stored" and got.model_version == "v1" and got.total_users == 10
    assert got.users == [f"u{i}" for i in fit.sample] and got.cluster == fit.cluster[fit.sample].tolist()
    np.testing.assert_allclose(got.x, fit.xy[fit.sample, 0], atol=1e-5)
    assert got.cluster_names == ["a", "b"] and got.cluster_sizes == [5, 5]
