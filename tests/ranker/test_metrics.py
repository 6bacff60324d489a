"""Hand-computed checks of the RecSys Challenge 2018 metrics in ranker.evaluation.metrics (no database used)."""

from __future__ import annotations

import math

import pytest

from ranker.evaluation.metrics import (
    MAX_PICKS,
    clicks,
    mean_metrics,
    ndcg,
    ndcg_g,
    playlist_metrics,
    r_precision,
    r_precision_artist,
    track_metrics,
)


def filler(n: int, prefix: str = "x") -> list[str]:
    """n distinct tracks that are never hidden."""
    return [f"{prefix}{i}" for i in range(n)]


# --- r_precision ---------------------------------------------------------------------------------


def test_r_precision_counts_hits_in_first_g_picks():
    # |G| = 4, R[:4] = a x0 c x1 -> hits {a, c}; d at rank 5 is past |G| -> 2/4
    assert r_precision(["a", "x0", "c", "x1", "d"], {"a", "b", "c", "d"}) == pytest.approx(2 / 4)


def test_r_precision_duplicates_count_once():
    # raw [a, a, a, b] dedups to R = [a, b]; |G| = 3, R[:3] = a b -> 2/3 (not 4/3, not 1/3)
    assert r_precision(["a", "a", "a", "b"], ["a", "b", "c"]) == pytest.approx(2 / 3)


def test_r_precision_hidden_duplicates_form_a_set():
    # G = set([a, a]) = {a}; R[:1] = a -> 1/1
    assert r_precision(["a", "b"], ["a", "a"]) == pytest.approx(1.0)


# --- r_precision_artist --------------------------------------------------------------------------

ARTIST = {"g1": "A1", "g2": "A1", "g3": "A2", "g4": "A3", "n1": "A1", "n2": "A1", "n3": "A2", "n4": "A9"}


def test_r_precision_artist_credits_distinct_artists_of_misses_only():
    # G = g1..g4 (artists A1, A1, A2, A3), R[:4] = g1 n1 n2 n4:
    # hits {g1} = 1; misses n1, n2 (A1) and n4 (A9, not a G artist) -> A = {A1} (n1, n2 share it)
    # g1 is itself A1 but is a hit, so it earns no artist credit -> (1 + 0.25 * 1) / 4
    ranked = ["g1", "n1", "n2", "n4", "n3"]
    assert r_precision_artist(ranked, ["g1", "g2", "g3", "g4"], ARTIST) == pytest.approx((1 + 0.25 * 1) / 4)


def test_r_precision_artist_two_distinct_artists():
    # R[:4] = n1 n3 g4 x0 -> hits {g4} = 1; A = {A1 (n1), A2 (n3)}; x0 unknown -> (1 + 0.25 * 2) / 4
    ranked = ["n1", "n3", "g4", "x0"]
    assert r_precision_artist(ranked, ["g1", "g2", "g3", "g4"], ARTIST) == pytest.approx((1 + 0.25 * 2) / 4)


def test_r_precision_artist_unknown_artist_earns_nothing():
    # G = {g1} (A1); R[:1] = u, absent from artist_of -> no hit, no credit -> 0
    assert r_precision_artist(["u", "n1"], ["g1"], ARTIST) == 0.0
    # and an unknown G track makes no artist: G = {u1, g3}, R[:2] = n1 n4 -> A1, A9 not in {A2} -> 0
    assert r_precision_artist(["n1", "n4"], ["u1", "g3"], ARTIST) == 0.0


def test_r_precision_artist_stays_within_one():
    # all hits -> |G|/|G| = 1, with no room left in R[:|G|] for artist credit
    assert r_precision_artist(["g1", "g2"], ["g1", "g2"], ARTIST) == pytest.approx(1.0)
    # a miss earns 0.25, never a full hit: G = {g3}, R[:1] = n3 (A2) -> 0.25 / 1
    assert r_precision_artist(["n3"], ["g3"], ARTIST) == pytest.approx(0.25)


# --- ndcg / ndcg_g -------------------------------------------------------------------------------


def test_ndcg_hits_at_top_score_one():
    # 2 of 5 hidden found at ranks 1, 2: DCG = 1 + 1/log2(2) = IDCG over |G ∩ R| = 2 -> 1
    ranked = ["a", "b", *filler(20)]
    assert ndcg(ranked, ["a", "b", "c", "d", "e"]) == pytest.approx(1.0)


def test_ndcg_hand_computed():
    # R = x0 a x1 b, G = {a, b, c}: DCG = 1/log2(2) + 1/log2(4); IDCG (2 found) = 1 + 1/log2(2)
    ranked = ["x0", "a", "x1", "b"]
    expected = (1 / math.log2(2) + 1 / math.log2(4)) / (1 + 1 / math.log2(2))
    assert ndcg(ranked, {"a", "b", "c"}) == pytest.approx(expected)


def test_ndcg_g_hand_computed_and_below_ndcg_when_tracks_missed():
    # same case: IDCG over min(|G|, |R|) = 3 -> 1 + 1/log2(2) + 1/log2(3)
    ranked = ["x0", "a", "x1", "b"]
    expected = (1 / math.log2(2) + 1 / math.log2(4)) / (1 + 1 / math.log2(2) + 1 / math.log2(3))
    assert ndcg_g(ranked, {"a", "b", "c"}) == pytest.approx(expected)
    assert ndcg_g(ranked, {"a", "b", "c"}) < ndcg(ranked, {"a", "b", "c"})


def test_ndcg_g_ideal_limited_by_number_of_picks():
    # |R| = 1 < |G| = 3: IDCG = 1 (min(3, 1) = 1), DCG = 1 -> 1
    assert ndcg_g(["a"], {"a", "b", "c"}) == pytest.approx(1.0)


def test_ndcg_no_hit_is_zero_and_empty_inputs():
    assert ndcg(filler(10), {"a"}) == 0.0
    assert ndcg_g(filler(10), {"a"}) == 0.0
    assert ndcg_g([], {"a"}) == 0.0
    assert ndcg_g(["a"], set()) == 0.0


def test_ndcg_duplicates_count_once():
    # [x0, x0, a] dedups to x0 a: DCG = 1/log2(2); IDCG (1 found) = 1 -> 1.0 (rank 3 would give 1/log2(3))
    assert ndcg(["x0", "x0", "a"], {"a"}) == pytest.approx(1 / math.log2(2))


# --- clicks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rank", "expected"),
    [(1, 0), (10, 0), (11, 1), (20, 1), (21, 2), (MAX_PICKS, (MAX_PICKS - 1) // 10)],
)
def test_clicks_by_rank_of_first_hit(rank, expected):
    # floor((rank - 1) / 10): the hit sits after rank - 1 misses
    assert clicks([*filler(rank - 1), "a", "b"], {"a", "b"}) == expected


def test_clicks_no_hit_is_51():
    assert clicks(filler(30), {"a"}) == 51
    assert clicks(filler(30), {"a"}, max_clicks=7) == 7


def test_clicks_duplicates_count_once():
    # 12 entries but only 2 distinct misses before a -> rank 3 -> 0 clicks
    assert clicks(["x0", "x1"] * 6 + ["a"], {"a"}) == 0


def test_hit_beyond_500_does_not_count():
    ranked = [*filler(MAX_PICKS), "a"]  # a at rank 501
    assert clicks(ranked, {"a"}) == 51
    assert ndcg(ranked, {"a"}) == 0.0
    assert ndcg_g(ranked, {"a"}) == 0.0
    assert r_precision_artist(ranked, {"a"}, {}) == 0.0
    # ... while rank 500 still counts: floor(499 / 10) = 49, DCG = 1/log2(500), IDCG = 1
    ranked = [*filler(MAX_PICKS - 1), "a"]
    assert clicks(ranked, {"a"}) == 49
    assert ndcg(ranked, {"a"}) == pytest.approx(1 / math.log2(500))


def test_duplicates_before_500_keep_a_late_hit_inside():
    # 500 distinct misses padded with repeats: a is the 501st distinct pick -> out
    assert clicks([*filler(MAX_PICKS), "x0", "a"], {"a"}) == 51
    # 499 distinct misses + repeats: a is the 500th distinct pick -> in
    assert clicks([*filler(MAX_PICKS - 1), "x0", "x1", "a"], {"a"}) == 49


# --- track_metrics / mean_metrics ----------------------------------------------------------------


def test_track_metrics_keys_and_values():
    # R = a n3 x0, G = {a, g3} (A?, A2); artist_of gives n3 -> A2, g3 -> A2
    artist_of = {"g3": "A2", "n3": "A2"}
    out = track_metrics(["a", "n3", "x0"], ["a", "g3"], artist_of)
    assert list(out) == ["r_precision", "r_precision_artist", "ndcg_g", "ndcg", "clicks"]
    assert out["r_precision"] == pytest.approx(1 / 2)  # R[:2] = a n3 -> 1 hit
    assert out["r_precision_artist"] == pytest.approx((1 + 0.25 * 1) / 2)  # n3 shares A2 with g3
    assert out["ndcg"] == pytest.approx(1.0)  # one hit, at rank 1
    assert out["ndcg_g"] == pytest.approx(1 / (1 + 1 / math.log2(2)))  # IDCG over min(2, 3) = 2
    assert out["clicks"] == 0


def test_mean_metrics():
    rows = [{"ndcg": 1.0, "clicks": 0.0}, {"ndcg": 0.5, "clicks": 51.0}, {"ndcg": 0.0, "clicks": 3.0}]
    assert mean_metrics(rows) == pytest.approx({"ndcg": 1.5 / 3, "clicks": 54.0 / 3})
    assert mean_metrics(iter(rows)) == pytest.approx({"ndcg": 0.5, "clicks": 18.0})  # any iterable
    assert mean_metrics([]) == {}


# --- playlist_metrics ----------------------------------------------------------------------------

SEEDS = {"s1", "s2"}
HIDDEN = {"h1", "h2", "h3", "h4"}
PICKS = [
    {"s1", "h1", "x1", "x2"},  # novelty 3/4
    {"s1", "s2", "h1", "h2"},  # novelty 2/4
    {"y1", "y2"},  # novelty 2/2
]


def test_playlist_metrics_three_picks():
    out = playlist_metrics(PICKS, SEEDS, HIDDEN)
    assert list(out) == ["hit_rate_10", "coverage_10", "novelty_10", "diversity_10", "precision_10"]
    assert out["hit_rate_10"] == 1.0
    assert out["coverage_10"] == pytest.approx(2 / 4)  # union holds h1, h2 of 4 hidden
    assert out["novelty_10"] == pytest.approx((3 / 4 + 2 / 4 + 2 / 2) / 3)
    # Jaccard: p1-p2 = {s1, h1} / 6 tracks = 2/6; p1-p3 = 0/6; p2-p3 = 0/6
    assert out["diversity_10"] == pytest.approx(1 - (2 / 6 + 0 + 0) / 3)
    # Precision: hidden tracks per picked track: p1 holds h1 of 4, p2 h1 and h2 of 4, p3 none of 2.
    assert out["precision_10"] == pytest.approx((1 / 4 + 2 / 4 + 0 / 2) / 3)


def test_playlist_metrics_only_first_k_count():
    # k = 1 keeps only p1: h1 found; one pick -> diversity 0.0; keys keep the _10 suffix
    out = playlist_metrics(PICKS, SEEDS, HIDDEN, k=1)
    assert out == pytest.approx({"hit_rate_10": 1.0, "coverage_10": 1 / 4, "novelty_10": 3 / 4, "diversity_10": 0.0,
                                 "precision_10": 1 / 4})
    # the hit-free pick alone
    out = playlist_metrics(PICKS[2:], SEEDS, HIDDEN)
    assert out["hit_rate_10"] == 0.0
    assert out["coverage_10"] == 0.0
    assert out["precision_10"] == 0.0


def test_playlist_metrics_no_picks():
    out = playlist_metrics([], SEEDS, HIDDEN)
    assert out == {"hit_rate_10": 0.0, "coverage_10": 0.0, "novelty_10": 0.0, "diversity_10": 0.0, "precision_10": 0.0}


def test_playlist_precision_counts_an_empty_pick_as_zero():
    out = playlist_metrics([{"h1", "h2"}, set()], SEEDS, HIDDEN)
    assert out["precision_10"] == pytest.approx((2 / 2 + 0.0) / 2)


# --- empty hidden --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: r_precision(["a"], []),
        lambda: r_precision_artist(["a"], set(), {}),
        lambda: track_metrics(["a"], [], {}),
        lambda: playlist_metrics([{"a"}], {"s"}, []),
    ],
    ids=["r_precision", "r_precision_artist", "track_metrics", "playlist_metrics"],
)
def test_empty_hidden_raises(call):
    with pytest.raises(ValueError, match="hidden is empty"):
        call()
