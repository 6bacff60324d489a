"""The inner-product index behind track candidates and playlist search: exact up to ``exact_max`` rows, IVF above."""

from __future__ import annotations

import faiss
import numpy as np
import scipy.sparse as sp

from ranker.recommenders.ann import inner_product_index
from ranker.recommenders.playlists import PlaylistSpace


def _clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(clusters, size=n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_small_index_is_exact_and_its_ids_are_row_numbers():
    vectors, queries = _clustered(500, 8, 5, seed=1), _clustered(20, 8, 5, seed=2)
    index = inner_product_index(vectors, exact_max=500)
    assert not isinstance(index, faiss.IndexIVF)
    scores, ids = index.search(queries, 10)
    expected = _brute(vectors, queries, 10)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, expected, axis=1), rtol=1e-5)
    assert (np.sort(ids, axis=1) == np.sort(expected, axis=1)).mean() > 0.99  # ties aside, the same rows


def test_large_index_is_ivf_and_still_finds_the_true_neighbours():
    vectors, queries = _clustered(6000, 16, 30, seed=3), _clustered(100, 16, 30, seed=4)
    index = inner_product_index(vectors, exact_max=5999)
    assert isinstance(index, faiss.IndexIVF) and index.nprobe < index.nlist  # it scans only part of the rows
    _, ids = index.search(queries, 10)
    expected = _brute(vectors, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, expected, strict=True)])
    assert recall >= 0.9


def test_playlist_search_above_exact_max_keeps_its_candidate_mask_and_finds_the_exact_neighbours():
    """Playlist vectors are means of their tracks' vectors: clustered tracks make clustered playlists."""
    rng = np.random.default_rng(5)
    n_items, n_playlists, dim = 400, 3000, 8
    groups = rng.integers(20, size=n_items)
    factors = (rng.normal(size=(20, dim))[groups] + 0.3 * rng.normal(size=(n_items, dim))).astype(np.float32)
    tracks = [np.unique(rng.choice(np.flatnonzero(groups == rng.integers(20)), size=6)) for _ in range(n_playlists)]
    items = sp.csr_matrix((np.ones(sum(map(len, tracks)), dtype=np.float32), np.concatenate(tracks),
                           np.concatenate([[0], np.cumsum([len(t) for t in tracks])])), shape=(n_playlists, n_items))
    mask = rng.random(n_playlists) < 0.8
    names = np.asarray([f"a{i}" for i in range(n_items)])

    def space(exact_max):
        return PlaylistSpace(playlist_items=items, item_factors=factors, item_bias=np.zeros(n_items, np.float32),
                             item_artist=names, item_artist_name=names, owners=np.asarray(["u"] * n_playlists),
                             candidate_mask=mask, exact_max=exact_max)

    exact, ivf = space(10_000), space(100)
    queries = exact.vectors[rng.choice(n_playlists, size=50, replace=False)]
    found, truth = ivf.nearest_many(queries, 20), exact.nearest_many(queries, 20)
    assert isinstance(ivf._index, faiss.IndexIVF) and not isinstance(exact._index, faiss.IndexIVF)
    assert all(mask[rows].all() and len(rows) == 20 for rows in found)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.8
