"""The evaluation harness: the split (categories, no leaks, determinism) and ``manage.py evaluate`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command

from ranker.evaluation.harness import (
    CATEGORIES,
    CATEGORY_NAMES,
    MIN_HIDDEN,
    complete,
    content_peer_picks,
    evaluate_playlists,
    split,
)
from ranker.evaluation.metrics import mean_metrics, playlist_metrics
from ranker.training.data import Playlists


def _playlists(n=300, length=130, n_items=2000, seed=0):
    rng = np.random.default_rng(seed)
    docs = []
    for pid in range(n):
        size = int(rng.integers(5, length))
        tracks = rng.choice(n_items, size=size, replace=False)
        docs.append({"_id": pid, "name_norm": f"mix {pid % 7}", "owner": f"mpd:{pid}", "num_followers": pid,
                     "tracks": [{"uri": f"t{t}", "artist_key": f"a{t % 50}", "artist_name": f"A{t % 50}"}
                                for t in tracks]})
    return Playlists.from_docs(docs)


def test_split_follows_the_challenge_categories():
    pl = _playlists()
    s = split(pl, test_size=100, random_state=1)
    by_cat = {c.name: [case for case in s.cases if case.category == c.name] for c in CATEGORIES}
    for cat in CATEGORIES:
        cases = by_cat[cat.name]
        assert len(cases) == 10, cat.name
        for case in cases:
            assert len(case.seeds) == cat.seeds and len(case.hidden) >= MIN_HIDDEN
            assert (case.title is not None) == cat.title
            unique = list(dict.fromkeys(pl.tracks_of(case.row).tolist()))
            if not cat.random:
                assert case.seeds.tolist() == unique[: cat.seeds]
            assert set(case.seeds.tolist()) | set(case.hidden.tolist()) == set(unique)
    assert len({c.row for c in s.cases}) == len(s.cases)  # a playlist tests one category only


def test_hidden_tracks_never_reach_training():
    pl = _playlists()
    s = split(pl, test_size=50)
    for case in s.cases:
        assert set(s.train[case.row].indices.tolist()) == set(case.seeds.tolist())
    # A test playlist's title is not in the title index either (it would point at its hidden tracks).
    assert s.train.nnz == len(pl.tracks) - sum(len(c.hidden) for c in s.cases)


def test_split_is_deterministic_for_a_seed():
    pl = _playlists()
    a, b, c = split(pl, test_size=50, random_state=3), split(pl, test_size=50, random_state=3), split(pl, test_size=50)
    assert [(x.row, x.seeds.tolist()) for x in a.cases] == [(x.row, x.seeds.tolist()) for x in b.cases]
    assert [x.row for x in a.cases] != [x.row for x in c.cases]


def test_split_rejects_unknown_categories_and_tiny_sizes():
    with pytest.raises(ValueError, match="unknown categories"):
        split(_playlists(), categories=["title_first7"])
    with pytest.raises(ValueError, match="too small"):
        split(_playlists(), test_size=3)


def test_complete_tops_up_without_repeats():
    out = complete(np.array([5, 3, -1, -1]), np.array([3, 9, 5, 1, 2]), k=4)
    assert out.tolist() == [5, 3, 9, 1]


def _content_by_hand(s, case, candidates, fallback, k=10):
    """The content peer written out: cosine of track sets, one candidate at a time, ties to the lower row."""
    seeds = set(case.seeds.tolist())
    scored = []
    for row in candidates.tolist():
        tracks = set(s.train[row].indices.tolist())
        shared = len(seeds & tracks)
        if shared:
            scored.append((-shared / np.sqrt(len(seeds) * len(tracks)), row))
    picked = [row for _, row in sorted(scored)[:k]]
    return picked + [r for r in fallback.tolist() if r not in picked and r != case.row][:k - len(picked)]


def test_the_content_peer_picks_the_nearest_playlists_by_track_set_cosine():
    pl = _playlists()
    s = split(pl, test_size=40, random_state=2)
    candidates = np.setdiff1d(np.arange(len(pl)), s.test_rows())
    fallback = candidates[np.argsort(-pl.followers[candidates], kind="stable")][:20]
    cases = [c for c in s.cases if len(c.seeds)]
    picks = content_peer_picks(s, cases, candidates=candidates, fallback=fallback, k=10)
    assert len(picks) == len(cases)
    for case, rows in zip(cases, picks, strict=True):
        assert rows.tolist() == _content_by_hand(s, case, candidates, fallback)
        assert not set(rows.tolist()) & set(s.test_rows().tolist())  # never a test playlist


def test_the_content_peer_on_a_hand_built_case():
    """Four training playlists and a test playlist (row 4) whose seeds are t0, t1: cosine |S∩P| / sqrt(|S||P|) ranks
    {t0, t1} (1.0) over {t0, t1, t2, t3} (2/sqrt(8)) over {t0, t5} (1/2); {t6, t7} shares nothing and only tops up."""
    from ranker.evaluation.harness import Case, Split
    from ranker.training.data import rows_matrix

    docs = [{"_id": pid, "name_norm": "", "owner": f"mpd:{pid}", "num_followers": 0,
             "tracks": [{"uri": t, "artist_key": "a", "artist_name": "A"} for t in tracks]}
            for pid, tracks in ((0, ["t0", "t5"]), (1, ["t6", "t7"]), (2, ["t0", "t1", "t2", "t3"]),
                                (3, ["t0", "t1"]), (4, ["t0", "t1", "t9"]))]
    pl = Playlists.from_docs(docs)
    item = {uri: n for n, uri in enumerate(pl.item_ids)}
    seeds, hidden = np.array([item["t0"], item["t1"]]), np.array([item["t9"]])
    rows = [pl.tracks_of(r) for r in range(4)] + [seeds]
    s = Split(playlists=pl, cases=[Case(row=4, category="first5_no_title", title=None, seeds=seeds, hidden=hidden)],
              train=rows_matrix(rows, pl.n_items), titles=None, popularity=np.zeros(pl.n_items, np.float32))
    candidates = np.arange(4)
    assert content_peer_picks(s, s.cases, candidates=candidates, fallback=np.array([1, 0, 4]), k=4)[0].tolist() \
        == [3, 2, 0, 1]
    assert content_peer_picks(s, s.cases, candidates=candidates, fallback=np.array([1]), k=2)[0].tolist() == [3, 2]


def test_every_playlist_method_is_scored_on_the_same_test_playlists():
    """evaluate_playlists' content peer and most-followed rows are the means over the test playlists with seeds of
    playlist_metrics (precision included) of the picks computed here by hand."""
    pl = _playlists()
    s = split(pl, test_size=40, random_state=5)
    rng = np.random.default_rng(0)
    bpr = type("Fitted", (), {"item_factors": rng.normal(size=(pl.n_items, 8)).astype(np.float32),
                              "item_bias": np.zeros(pl.n_items, dtype=np.float32)})()
    results = evaluate_playlists(s, bpr)
    assert list(results) == ["buddies", "content", "most_followed"]
    candidates = np.setdiff1d(np.arange(len(pl)), s.test_rows())
    ranked = candidates[np.argsort(-pl.followers[candidates], kind="stable")]
    cases = [c for c in s.cases if len(c.seeds)]
    assert 0 < len(cases) < len(s.cases)  # title-only cases have no seeds and are left out of every method

    def tracks(row):
        return set(s.train[row].indices.tolist())

    def scored(rows_of):
        return mean_metrics(playlist_metrics([tracks(r) for r in rows_of(c)], c.seeds.tolist(), c.hidden.tolist())
                            for c in cases)

    content = scored(lambda c: _content_by_hand(s, c, candidates, ranked[:20]))
    followed = scored(lambda c: ranked[:10].tolist())
    assert results["content"] == pytest.approx(content)
    assert results["most_followed"] == pytest.approx(followed)
    assert set(results["buddies"]) == set(content) and 0 <= results["buddies"]["precision_10"] <= 1


@pytest.mark.slow
def test_evaluate_command_writes_the_documented_json(demo_store, model_dir, tmp_path):
    out = tmp_path / "eval.json"
    call_command("evaluate", "--test-size", "40", "--epochs", "10", "--second-stage-cases", "60", "--json", str(out),
                 "--no-progress", "--categories", "title_first5,title_first10,title_random25,title_only")
    report = json.loads(out.read_text())
    assert report["served"] in report["methods"]
    for name, method in report["methods"].items():
        assert set(method["overall"]) == {"r_precision", "r_precision_artist", "ndcg_g", "ndcg", "clicks"}, name
        assert set(method["per_category"]) <= set(CATEGORY_NAMES)
    # The served recipe is the blend re-ranked by the second stage, compared with the blend on the same cases.
    assert report["served"] == "reranked" and "blend" in report["methods"]
    comparison = report["second_stage_comparison"]
    assert comparison["baseline"] == "blend" and set(comparison["metrics"]) == {"r_precision", "ndcg", "clicks"}
    for metric, d in comparison["metrics"].items():
        assert d["b"] == pytest.approx(report["methods"]["reranked"]["overall"][metric]), metric
        assert d["a"] == pytest.approx(report["methods"]["blend"]["overall"][metric]), metric
        assert d["low"] <= d["diff"] <= d["high"] and d["cases"] == report["split"]["test_size"]
    served = report["methods"][report["served"]]["overall"]
    popularity = report["methods"]["popularity"]["overall"]
    assert served["r_precision"] > popularity["r_precision"]
    assert served["clicks"] < popularity["clicks"]
    assert set(report["playlists"]) == {"buddies", "content", "most_followed"}
    for values in report["playlists"].values():
        assert set(values) == {"hit_rate_10", "coverage_10", "novelty_10", "diversity_10", "precision_10"}
    from ranker.evaluation.selectors import evaluation_latest

    assert evaluation_latest()["methods"] == report["methods"]


def _ranker_on_affinity(coef_affinity: float):
    """A learned playlist ranker whose combined score is ``coef_affinity`` × the track-BPR affinity alone (no BPR
    term, no follow rates)."""
    from ranker.recommenders.playlist_ranker import FEATURES, LearnedWeights, PlaylistBPR, PlaylistRanker

    width = len(FEATURES)
    coef = np.zeros(width)
    coef[FEATURES.index("affinity")] = coef_affinity
    bpr = PlaylistBPR(user_ids=np.asarray([], dtype=str), pids=np.asarray([], dtype=np.int64),
                      user_factors=np.zeros((1, 4)), playlist_factors=np.zeros((1, 4)), playlist_bias=np.zeros(1),
                      taste_map=np.zeros((8, 8)), track_version="elsewhere")
    return PlaylistRanker(version="v-test", bpr=bpr, weights=LearnedWeights(mean=np.zeros(width), std=np.ones(width),
                                                                          coef=coef), explore=None)


def test_the_learned_ranker_row_ranks_the_same_candidates_by_its_weights():
    """With weights that score affinity alone, the learned row picks what the hand-set ranking picks with only its
    affinity weight (same candidates, same order, no diversity): equal metrics, and a paired difference of 0 with a
    zero-width interval. Reversed weights pick otherwise, and the paired difference says so."""
    from ranker.recommenders.playlists import PlaylistWeights

    pl = _playlists()
    s = split(pl, test_size=40, random_state=5)
    rng = np.random.default_rng(0)
    bpr = type("Fitted", (), {"item_factors": rng.normal(size=(pl.n_items, 8)).astype(np.float32),
                              "item_bias": np.zeros(pl.n_items, dtype=np.float32)})()
    affinity_only = PlaylistWeights(familiarity=0.0, discovery=0.0, diversity=0.0)
    same = evaluate_playlists(s, bpr, weights=affinity_only, learned=_ranker_on_affinity(1.0))
    assert list(same) == ["buddies", "content", "most_followed", "learned"]
    means = lambda row: {m: v for m, v in row.items() if m != "vs_hand"}  # noqa: E731
    assert means(same["learned"]) == pytest.approx(same["buddies"])
    assert set(same["learned"]["vs_hand"]) == {"hit_rate_10", "precision_10"}
    for d in same["learned"]["vs_hand"].values():
        assert d["diff"] == d["low"] == d["high"] == 0 and d["cases"] == len([c for c in s.cases if len(c.seeds)])
    reversed_ = evaluate_playlists(s, bpr, weights=affinity_only, learned=_ranker_on_affinity(-1.0))
    assert means(reversed_["learned"]) != pytest.approx(reversed_["buddies"])
    precision = reversed_["learned"]["vs_hand"]["precision_10"]
    gap = reversed_["learned"]["precision_10"] - reversed_["buddies"]["precision_10"]
    assert precision["diff"] == pytest.approx(gap)
    assert precision["diff"] != 0 and precision["low"] <= precision["diff"] <= precision["high"]
