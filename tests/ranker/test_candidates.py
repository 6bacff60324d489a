"""Candidate retrieval with exact re-scoring against the dense blend it stands in for at catalogue scale."""

from __future__ import annotations

import numpy as np
import pytest


def _users(live, n=60):
    sizes = live.user_items.getnnz(axis=1)
    return np.flatnonzero(sizes > 0)[:n]


def test_candidates_find_the_dense_top_k_with_the_same_scores(live):
    from ranker.candidates import CandidateScorer

    rows = _users(live)
    liked = live.user_items[rows]
    dense_ids, dense_scores = live.recommender.recommend(rows, liked, 50)
    ids, scores = CandidateScorer(live.recommender).recommend(rows, liked, 50)
    overlap = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / 50 for a, b in zip(ids, dense_ids, strict=True)])
    assert overlap >= 0.95, overlap
    for r in range(len(rows)):  # a track both paths pick gets the same blend score
        dense = dict(zip(dense_ids[r].tolist(), dense_scores[r].tolist(), strict=True))
        same = [(dense[i], s) for i, s in zip(ids[r].tolist(), scores[r].tolist(), strict=True) if i in dense]
        expected, got = np.asarray(same).T
        assert np.allclose(expected, got, atol=1e-4)
        assert not set(ids[r]) & set(liked[r].indices)


def test_too_few_candidates_lose_recall(live):
    """The test above can fail: with one candidate per part (plus as many as the user has tracks, which are never
    picked) the union cannot hold the dense top 50 of users with few tracks."""
    from ranker.candidates import CandidateScorer

    sizes = live.user_items.getnnz(axis=1)
    rows = np.sort(np.argsort(np.where(sizes > 0, sizes, 10**9), kind="stable")[:20])
    liked = live.user_items[rows]
    dense_ids, _ = live.recommender.recommend(rows, liked, 50)
    ids, _ = CandidateScorer(live.recommender, per_part=1).recommend(rows, liked, 50)
    overlap = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / 50 for a, b in zip(ids, dense_ids, strict=True)])
    assert overlap < 0.5


def test_ivf_above_the_exact_threshold_keeps_most_of_the_dense_top_k(live):
    from ranker.candidates import CandidateScorer

    rows = _users(live, 40)
    liked = live.user_items[rows]
    dense_ids, _ = live.recommender.recommend(rows, liked, 50)
    ids, _ = CandidateScorer(live.recommender, exact_max=10).recommend(rows, liked, 50)
    overlap = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / 50 for a, b in zip(ids, dense_ids, strict=True)])
    assert overlap >= 0.9, overlap


def test_precompute_switches_to_candidates_above_the_dense_threshold(live, settings):
    from ranker.services import picks_compute

    rows = _users(live, 30)
    settings.PICKS_DENSE_MAX_ITEMS = 10**9
    dense, _ = picks_compute(model=live, rows=rows)
    settings.PICKS_DENSE_MAX_ITEMS = 10
    sparse, _ = picks_compute(model=live, rows=rows)
    same = np.mean([len({t["uri"] for t in a["tracks"]} & {t["uri"] for t in b["tracks"]}) / 50
                    for a, b in zip(dense, sparse, strict=True)])
    assert same >= 0.95, same
    assert [d["playlists"] for d in dense] == [d["playlists"] for d in sparse]


def test_only_a_blend_of_known_parts_is_scored_by_candidates(live):
    from ranker.candidates import CandidateScorer, Unsupported

    with pytest.raises(Unsupported, match="not a blend"):
        CandidateScorer(live.bpr)


def test_the_score_histogram_by_candidates_matches_the_dense_one(live, settings):
    """A version's score histogram (the dashboard's drift) is found by candidates on a large catalogue."""
    from ranker.services import score_histogram

    settings.PICKS_DENSE_MAX_ITEMS = 10**9
    dense = score_histogram(recommender=live.recommender, user_ids=live.user_ids, user_items=live.user_items)
    settings.PICKS_DENSE_MAX_ITEMS = 10
    sparse = score_histogram(recommender=live.recommender, user_ids=live.user_ids, user_items=live.user_items)
    assert sparse["edges"] == dense["edges"] and sum(sparse["counts"]) == sum(dense["counts"]) > 0
    moved = sum(abs(a - b) for a, b in zip(sparse["counts"], dense["counts"], strict=True)) / 2
    assert moved / sum(dense["counts"]) <= 0.05, (dense["counts"], sparse["counts"])
