"""Candidate retrieval with exact re-scoring against the dense blend it stands in for at catalogue scale."""

from __future__ import annotations

import numpy as np
import pytest


def _users(live, n=60):
    sizes = live.user_items.getnnz(axis=1)
    return np.flatnonzero(sizes > 0)[:n]


def _overlap(ids, dense_ids, k=50):
    return np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / k for a, b in zip(ids, dense_ids, strict=True)])


def test_factor_candidates_find_the_dense_top_k_with_the_same_scores(live):
    """Without item-kNN (whose neighbours are truncated) the candidates are re-scored exactly."""
    from ranker.recommenders import Blend, ItemKNN
    from ranker.recommenders.candidates import CandidateScorer

    factors = Blend(components=[(m, 0.0 if isinstance(m, ItemKNN) else w) for m, w in live.recommender.components])
    rows = _users(live)
    liked = live.user_items[rows]
    dense_ids, dense_scores = factors.recommend(rows, liked, 50)
    ids, scores = CandidateScorer(factors).recommend(rows, liked, 50)
    assert _overlap(ids, dense_ids) >= 0.95
    for r in range(len(rows)):  # a track both paths pick gets the same blend score
        dense = dict(zip(dense_ids[r].tolist(), dense_scores[r].tolist(), strict=True))
        same = [(dense[i], s) for i, s in zip(ids[r].tolist(), scores[r].tolist(), strict=True) if i in dense]
        expected, got = np.asarray(same).T
        assert np.allclose(expected, got, atol=1e-4)
        assert not set(ids[r]) & set(liked[r].indices)


def test_the_whole_blend_by_candidates_keeps_most_of_the_dense_top_k(live):
    from ranker.recommenders.candidates import CandidateScorer

    rows = _users(live)
    liked = live.user_items[rows]
    dense_ids, _ = live.recommender.recommend(rows, liked, 50)
    overlap = _overlap(CandidateScorer(live.recommender).recommend(rows, liked, 50)[0], dense_ids)
    wider = _overlap(CandidateScorer(live.recommender, neighbours=1000).recommend(rows, liked, 50)[0], dense_ids)
    assert overlap >= 0.85 and wider >= 0.95 and wider >= overlap, (overlap, wider)


def test_too_few_candidates_lose_recall(live):
    """The test above can fail: with one candidate per part (plus as many as the user has tracks, which are never
    picked) the union cannot hold the dense top 50 of users with few tracks."""
    from ranker.recommenders.candidates import CandidateScorer

    sizes = live.user_items.getnnz(axis=1)
    rows = np.sort(np.argsort(np.where(sizes > 0, sizes, 10**9), kind="stable")[:20])
    liked = live.user_items[rows]
    dense_ids, _ = live.recommender.recommend(rows, liked, 50)
    ids, _ = CandidateScorer(live.recommender, per_part=1).recommend(rows, liked, 50)
    overlap = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / 50 for a, b in zip(ids, dense_ids, strict=True)])
    assert overlap < 0.5


def test_ivf_above_the_exact_threshold_keeps_most_of_the_dense_top_k(live):
    from ranker.recommenders.candidates import CandidateScorer

    rows = _users(live, 40)
    liked = live.user_items[rows]
    dense_ids, _ = live.recommender.recommend(rows, liked, 50)
    exact = _overlap(CandidateScorer(live.recommender).recommend(rows, liked, 50)[0], dense_ids)
    ivf = _overlap(CandidateScorer(live.recommender, exact_max=10).recommend(rows, liked, 50)[0], dense_ids)
    assert ivf >= exact - 0.05, (ivf, exact)


def test_precompute_switches_to_candidates_above_the_dense_threshold(live, settings):
    from ranker.picks.precompute import picks_compute

    rows = _users(live, 30)
    settings.PICKS_DENSE_MAX_ITEMS = 10**9
    dense, _ = picks_compute(model=live, rows=rows)
    settings.PICKS_DENSE_MAX_ITEMS = 10
    sparse, _ = picks_compute(model=live, rows=rows)
    same = np.mean([len({t["uri"] for t in a["tracks"]} & {t["uri"] for t in b["tracks"]}) / 50
                    for a, b in zip(dense, sparse, strict=True)])
    assert same >= 0.85, same
    assert [d["playlists"] for d in dense] == [d["playlists"] for d in sparse]


def test_only_a_blend_of_known_parts_is_scored_by_candidates(live):
    from ranker.recommenders.candidates import CandidateScorer, Unsupported

    with pytest.raises(Unsupported, match="not a blend"):
        CandidateScorer(live.bpr)


def test_the_score_histogram_by_candidates_matches_the_dense_one(live, settings):
    """A version's score histogram (the dashboard's drift) is found by candidates on a large catalogue."""
    from ranker.training.services import score_histogram

    settings.PICKS_DENSE_MAX_ITEMS = 10**9
    dense = score_histogram(recommender=live.recommender, user_ids=live.user_ids, user_items=live.user_items)
    settings.PICKS_DENSE_MAX_ITEMS = 10
    sparse = score_histogram(recommender=live.recommender, user_ids=live.user_ids, user_items=live.user_items)
    assert sparse["edges"] == dense["edges"] and sum(sparse["counts"]) == sum(dense["counts"]) > 0
    centres = (np.asarray(dense["edges"][:-1]) + np.asarray(dense["edges"][1:])) / 2

    def mean_and_spread(counts):
        weights = np.asarray(counts) / sum(counts)
        mean = float(centres @ weights)
        return mean, float(np.sqrt(((centres - mean) ** 2) @ weights))

    (dense_mean, dense_spread), (mean, spread) = mean_and_spread(dense["counts"]), mean_and_spread(sparse["counts"])
    # Truncated item-kNN scores a little lower: the histogram may slide by up to one bin, not change its shape.
    assert abs(mean - dense_mean) <= 0.05 and abs(spread - dense_spread) <= 0.02, (dense["counts"], sparse["counts"])


def _devices():
    import torch

    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", _devices())
def test_device_scoring_of_the_whole_catalogue_is_the_dense_blend(live, device):
    """With item-kNN's rows untruncated, batched device scoring gives the dense top k and its scores."""
    from ranker.recommenders.candidates import DeviceScorer

    rows = _users(live)
    liked = live.user_items[rows]
    dense_ids, dense_scores = live.recommender.recommend(rows, liked, 50)
    scorer = DeviceScorer(live.recommender, device=device, neighbours=live.recommender.n_items,
                          score_bytes=3 * 4 * live.recommender.n_items * 7)  # chunks of 7 users: several chunks
    assert scorer.chunk == 7
    ids, scores = scorer.recommend(rows, liked, 50)
    assert _overlap(ids, dense_ids) >= 0.99
    assert np.allclose(scores, dense_scores, atol=1e-4)
    for r in range(len(rows)):
        assert not set(ids[r]) & set(liked[r].indices)


def test_truncated_item_knn_on_the_device_moves_the_top_k_a_little(live):
    """The default 100 neighbours per seed: most of the dense top k stays; fewer neighbours lose more of it."""
    from ranker.recommenders.candidates import DeviceScorer

    rows = _users(live)
    liked = live.user_items[rows]
    dense_ids, _ = live.recommender.recommend(rows, liked, 50)
    default = _overlap(DeviceScorer(live.recommender, device="cpu").recommend(rows, liked, 50)[0], dense_ids)
    few = _overlap(DeviceScorer(live.recommender, device="cpu", neighbours=2).recommend(rows, liked, 50)[0],
                   dense_ids)
    assert default >= 0.85 and few < default, (default, few)


def test_on_a_gpu_the_precompute_scores_large_catalogues_on_the_device(live, settings):
    import torch

    from ranker.recommenders.candidates import CandidateScorer, DeviceScorer
    from ranker.training.services import picks_scorer as _candidate_scorer_for

    settings.PICKS_DENSE_MAX_ITEMS = 10
    settings.RECSYS_DEVICE = "cpu"
    assert isinstance(_candidate_scorer_for(live.recommender), CandidateScorer)
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: the choice of the device scorer is checked on the CPU side only")
    settings.RECSYS_DEVICE = "cuda"
    assert isinstance(_candidate_scorer_for(live.recommender), DeviceScorer)
