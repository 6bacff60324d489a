"""The learned playlist ranker (ADR 0014): playlist BPR + feature weights learned from feedback, Thompson-sampling
exploration, the daily job through a real worker, and the experiment variants that route to them.

Feedback is posted with ``event_record_many`` and the lists it answers are served through the real serve path (and
so logged in the real served log); the model and buddies are the ``live`` fixture's (400 demo playlists)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import scipy.sparse as sp

from ranker.experiments.spec import spec_errors
from ranker.recommenders.explore import follow_posteriors_fit, thompson_pick
from ranker.recommenders.playlist_ranker import FEATURES, logistic_fit
from ranker.recommenders.playlists import PlaylistSpace, PlaylistWeights

pytestmark = pytest.mark.django_db

HAND = {"playlist_ranker": "hand", "explore_slots": 0}
LEARNED = {"playlist_ranker": "learned", "explore_slots": 0}


# -- the maths, without a store --------------------------------------------------------------------------------

def test_weights_follow_the_data():
    """Which feature separates followed from opened-and-left playlists decides the weights: swap it, they swap."""
    rng = np.random.default_rng(0)

    def rows(decisive: int):
        feats = rng.random((800, len(FEATURES)))
        labels = feats[:, decisive] + 0.3 * rng.standard_normal(800) > 0.6  # followed: high on this feature only
        return {"features": feats, "labels": labels}

    novelty, familiarity = FEATURES.index("novelty"), FEATURES.index("familiarity")
    by_novelty = logistic_fit(**rows(novelty)).coef
    by_familiarity = logistic_fit(**rows(familiarity)).coef
    assert np.argmax(by_novelty) == novelty and np.argmax(by_familiarity) == familiarity
    assert by_novelty[novelty] > 3 * abs(by_novelty[familiarity])
    with pytest.raises(ValueError, match="both labels"):
        logistic_fit(features=np.zeros((4, 5)), labels=np.ones(4, dtype=bool))


def _two_clusters(n: int = 200):
    rng = np.random.default_rng(1)
    a = np.hstack([np.ones((n, 1)), 0.05 * rng.standard_normal((n, 3))])
    b = np.hstack([0.05 * rng.standard_normal((n, 3)), np.ones((n, 1))])
    return np.vstack([a, b]).astype(np.float32), np.arange(2 * n, dtype=np.int64)


def test_posteriors_shrink_towards_the_cluster_prior():
    vectors, pids = _two_clusters()
    # Cluster A's playlists are followed 30 % of the time they are shown, cluster B's 2 %.
    impressions = {int(p): 100 for p in pids[:50]} | {int(p): 100 for p in pids[200:250]}
    follows = {int(p): 30 for p in pids[:50]} | {int(p): 2 for p in pids[200:250]}
    impressions[5], follows[5] = 1000, 900  # one much-shown, much-followed playlist of A
    strength = 20.0
    post = follow_posteriors_fit(vectors=vectors, row_pids=pids, follows=follows, impressions=impressions,
                                 clusters=2, strength=strength)
    alpha, beta, cluster = post.posterior(pids=pids[[100, 300, 5, 10]], vectors=vectors[[100, 300, 5, 10]])
    assert cluster[0] == cluster[2] == cluster[3] != cluster[1]
    pooled_a = (49 * 30 + 900 + 1) / (49 * 100 + 1000 + 2)
    pooled_b = (50 * 2 + 1) / (50 * 100 + 2)
    # Never shown: the cluster's pooled rate, with the prior's strength.
    assert alpha[0] / (alpha[0] + beta[0]) == pytest.approx(pooled_a) and alpha[0] + beta[0] == pytest.approx(strength)
    assert alpha[1] / (alpha[1] + beta[1]) == pytest.approx(pooled_b)
    # Shown: (m r_c + f) / (m + n), between the cluster's rate and its own, nearer its own the more it was shown.
    assert alpha[2] / (alpha[2] + beta[2]) == pytest.approx((strength * pooled_a + 900) / (strength + 1000))
    assert alpha[3] == pytest.approx(strength * pooled_a + 30) and beta[3] == pytest.approx(strength * (1 - pooled_a)
                                                                                             + 70)
    assert 0.9 > alpha[2] / (alpha[2] + beta[2]) > 0.88 > pooled_a


def test_thompson_sampling_takes_distinct_candidates_and_favours_the_likely():
    alpha, beta = np.array([1.0, 50.0, 1.0, 2.0]), np.array([50.0, 1.0, 50.0, 2.0])
    picks = thompson_pick(alpha=alpha, beta=beta, slots=3, rng=np.random.default_rng(3))
    assert len({i for i, _ in picks}) == 3 and picks[0][0] == 1
    wins = [thompson_pick(alpha=alpha, beta=beta, slots=1, rng=np.random.default_rng(s))[0][0] for s in range(200)]
    assert wins.count(1) > 190


@pytest.mark.parametrize(("changes", "problem"), [
    ({"playlist_ranker": "neural"}, "playlist_ranker must be one of ['hand', 'learned']"),
    ({"explore_slots": -1}, "explore_slots must be an integer from 0 to 100"),
    ({"explore_slots": True}, "explore_slots must be an integer"),
    ({"explore_slots": 2.5}, "explore_slots must be an integer"),
])
def test_spec_refuses_bad_ranking_keys(changes, problem):
    problems = spec_errors("x", {"variants": {"a": {}, "b": changes}})
    assert len(problems) == 1 and problem in problems[0] and "variant 'b'" in problems[0]
    assert spec_errors("x", {"variants": {"a": {}, "b": {"playlist_ranker": "learned", "explore_slots": 3}}}) == []


def test_the_default_experiment_is_the_playlist_ranker_a_b():
    from django.conf import settings

    spec = settings.EXPERIMENTS["playlist_ranker"]
    assert spec_errors("playlist_ranker", spec) == []
    variants = spec["variants"]
    assert set(variants) == {"control", "learned", "learned_explore"}
    assert len({v["weight"] for v in variants.values()}) == 1
    assert variants["control"]["playlist_ranker"] == "hand" and variants["learned"]["playlist_ranker"] == "learned"
    assert variants["learned_explore"]["explore_slots"] > 0


# -- on the store ----------------------------------------------------------------------------------------------

def _clear_feedback():
    """Feedback and served lists of earlier tests gone, through their owners' services."""
    from ingestion.feedback.services import event_delete_before
    from ranker.experiments.served_log import SERVED_LOG, served_delete_before

    SERVED_LOG.flush()
    later = datetime.now(UTC) + timedelta(days=1)
    while event_delete_before(before=later, batch=100_000):
        pass
    while served_delete_before(before=later, batch=100_000):
        pass


def _concentration(model, pid: int) -> float:
    """Share of the playlist's tracks by its most frequent artist."""
    row = model.playlist_row[pid]
    tracks = model.playlist_items.indices[model.playlist_items.indptr[row]:model.playlist_items.indptr[row + 1]]
    _, counts = np.unique(model.item_artist[tracks], return_counts=True)
    return float(counts.max() / counts.sum())


def _serve_and_follow(users, choose, k: int = 20) -> int:
    """Each user is served a page of playlist picks through the serve path (logged as served, cache off) and follows
    the playlists ``choose(page)`` names; how many follows were stored."""
    from ingestion.feedback.services import event_record_many
    from ranker.experiments.served_log import SERVED_LOG
    from ranker.picks.serve import serve_playlist_picks

    events = []
    for user in users:
        body = serve_playlist_picks(user=user, k=k)
        assert body["source"] != "most_followed"
        events += [{"user": user, "kind": "follow", "playlist": pid, "rec_id": body["rec_id"]}
                   for pid in choose(body["playlists"])]
    SERVED_LOG.flush()
    return event_record_many(events=events).stored


def _pids_where(test):
    return lambda page: [p["pid"] for p in page if test(p)]


def _top_by(key: str, n: int = 5):
    return lambda page: [p["pid"] for p in sorted(page, key=lambda p: -p["why"][key])[:n]]


@pytest.fixture
def feedback_settings(settings):
    settings.EXPERIMENTS = {}
    settings.PLAYLIST_RANKER_DEFAULT = "hand"
    settings.PLAYLIST_EXPLORE_SLOTS = 0
    settings.PLAYLIST_RANKER_MIN_FOLLOWS = 20
    settings.PLAYLIST_RANKER_MIN_LISTS = 10
    settings.PLAYLIST_EXPLORE_CLUSTERS = 4
    settings.SERVED_LOG_FLUSH_SECONDS = 0
    settings.PICKS_CACHE_URL = ""
    settings.PICKS_CACHE_LOCAL_SECONDS = 0
    return settings


def _ensure_ranker(live):
    from ranker.playlist_ranking.selectors import playlist_ranker_live, playlist_ranker_live_clear
    from ranker.playlist_ranking.services import playlist_ranker_train

    playlist_ranker_live_clear()
    if playlist_ranker_live() is None:
        _clear_feedback()
        _serve_and_follow([str(u) for u in live.user_ids[:300]], _pids_where(lambda p: p["pid"] % 4 == 0))
        assert playlist_ranker_train(params={"epochs": 5})["trained"]
    return playlist_ranker_live()


def test_not_enough_feedback_ends_cleanly_and_writes_nothing(live, feedback_settings):
    from ranker.playlist_ranking.selectors import playlist_ranker_list, playlist_ranker_live_version
    from ranker.playlist_ranking.services import playlist_ranker_train

    _clear_feedback()
    before, live_before = [d["_id"] for d in playlist_ranker_list()], playlist_ranker_live_version()
    follows = _serve_and_follow([str(u) for u in live.user_ids[:15]], _pids_where(lambda p: p["pid"] % 3 == 0))
    assert follows > 0
    feedback_settings.PLAYLIST_RANKER_MIN_FOLLOWS = follows + 1
    summary = playlist_ranker_train()
    assert summary["trained"] is False and summary["follows"] == follows
    assert f"{follows} follows (PLAYLIST_RANKER_MIN_FOLLOWS={follows + 1})" in summary["reason"]
    assert [d["_id"] for d in playlist_ranker_list()] == before and playlist_ranker_live_version() == live_before


@pytest.mark.slow
def test_the_learned_ranker_learns_a_preference_the_hand_set_weights_miss(live, feedback_settings):
    """Training users follow the shown playlists that are rich in one artist (the top quarter by their top artist's
    share, a property no hand-set feature holds). For other users, the learned ranking puts more of them in the
    top 10 than the hand-set ranking; its held-out figures and learned weights are recorded with it."""
    from ranker.picks.serve import recommend_playlists
    from ranker.playlist_ranking.selectors import playlist_ranker_get, playlist_ranker_live, playlist_ranker_live_clear
    from ranker.playlist_ranking.services import playlist_ranker_train

    _clear_feedback()
    conc = {int(p): _concentration(live, int(p)) for p in live.playlist_ids}
    cut = np.quantile(list(conc.values()), 0.75)
    rich = {p for p, v in conc.items() if v >= cut}
    users = [str(u) for u in live.user_ids]
    train_users, test_users = users[:300], users[300:]
    follows = _serve_and_follow(train_users, _pids_where(lambda p: p["pid"] in rich))
    assert follows >= 20

    summary = playlist_ranker_train(params={"epochs": 30})
    assert summary["trained"], summary
    playlist_ranker_live_clear()
    ranker = playlist_ranker_live()
    assert ranker.version == summary["version"] == summary["live"]
    assert summary["follows"] == follows and summary["positives"] >= follows
    doc = playlist_ranker_get(version=summary["version"])
    assert doc["status"] == "live" and doc["weights"] == summary["weights"] and set(doc["weights"]) == set(FEATURES)
    evaluation = summary["evaluation"]
    assert evaluation["lists"] > 0 and 0 <= evaluation["hand"]["auc"] <= 1
    # On held-out lists the learned ranking orders the pairs better than the hand-set weights.
    assert evaluation["learned"]["auc"] > evaluation["hand"]["auc"], evaluation

    def rich_share(changes):
        picks = [p for u in test_users for p in recommend_playlists(user=u, k=10, changes=changes).playlists]
        return sum(p["pid"] in rich for p in picks) / len(picks)

    learned, hand = rich_share(LEARNED), rich_share(HAND)
    assert learned > hand + 0.1, (learned, hand)
    sample = recommend_playlists(user=test_users[0], k=10, changes=LEARNED)
    assert sample.ranker == f"learned:{summary['version']}"
    assert all("playlist_bpr" in p["why"] for p in sample.playlists)
    assert all("playlist_bpr" not in p["why"]
               for p in recommend_playlists(user=test_users[0], k=10, changes=HAND).playlists)


@pytest.mark.slow
def test_weights_are_learned_from_the_feedback(live, feedback_settings):
    """Users follow the five newest of their shown playlists, then (from scratch) the five most familiar: the novelty
    weight is larger in the first ranker than in the second, and the familiarity weight smaller."""
    from ranker.playlist_ranking.services import playlist_ranker_train

    users = [str(u) for u in live.user_ids[:300]]
    weights = {}
    for key in ("new_share", "known_artist_share"):
        _clear_feedback()
        assert _serve_and_follow(users, _top_by(key)) >= 20
        summary = playlist_ranker_train(params={"epochs": 10})
        assert summary["trained"], summary
        weights[key] = summary["weights"]
    assert weights["new_share"]["novelty"] > weights["known_artist_share"]["novelty"]
    assert weights["known_artist_share"]["familiarity"] > weights["new_share"]["familiarity"]


def _serve_open_and_follow(users, *, opened: int, with_plays: bool, k: int = 20) -> int:
    """Each user is served a page and opens its first ``opened`` playlists (position bias: nothing lower is looked
    at), plays the first track of each (naming the playlist it came from) when ``with_plays``, and follows the
    opened playlist of *lowest* affinity. How many follows were stored."""
    from ingestion.feedback.services import event_record_many
    from ranker.experiments.served_log import SERVED_LOG
    from ranker.picks.serve import serve_playlist_picks
    from ranker.training.selectors import live_model

    model = live_model()
    events = []
    for user in users:
        body = serve_playlist_picks(user=user, k=k)
        top = body["playlists"][:opened]
        if with_plays:
            for p in top:
                row = model.playlist_row[p["pid"]]
                first = model.item_ids[model.playlist_items.indices[model.playlist_items.indptr[row]]]
                events.append({"user": user, "kind": "play", "track": str(first), "ms_played": 40_000,
                               "playlist": p["pid"], "rec_id": body["rec_id"]})
        least = min(top, key=lambda p: p["why"]["affinity"])
        events.append({"user": user, "kind": "follow", "playlist": least["pid"], "rec_id": body["rec_id"]})
    SERVED_LOG.flush()
    return sum(e["kind"] == "follow" for e in event_record_many(events=events).docs)


@pytest.mark.slow
def test_weights_learn_from_the_playlists_opened_not_from_their_place_on_the_page(live, feedback_settings):
    """Users look at the top 3 of a hand-ranked page only and follow the one of lowest affinity among them. Told
    what was opened (plays naming their playlist), the ranker learns that low affinity is followed: a negative
    affinity weight. Told only the follows, it sees followed playlists high on the page and learns the page's own
    order (positive), which is the position bias the opened playlists remove."""
    from ranker.playlist_ranking.services import playlist_ranker_train

    users = [str(u) for u in live.user_ids[:300]]
    weights = {}
    for with_plays in (True, False):
        _clear_feedback()
        assert _serve_open_and_follow(users, opened=3, with_plays=with_plays) >= 20
        summary = playlist_ranker_train(params={"epochs": 5})
        assert summary["trained"], summary
        assert summary["opened_lists"] == (summary["informative_lists"] if with_plays else 0)
        weights[with_plays] = summary["weights"]
    assert weights[True]["affinity"] < 0 < weights[False]["affinity"], weights


def test_exploration_slots_say_why_with_their_posterior(live, feedback_settings):
    """With a trained ranker, a page with exploration slots ends with that many picks whose ``why`` holds the Beta
    posterior of the playlist's follow rate (its cluster's prior plus its own follows and impressions) and the
    sample that won; the other places are the learned ranking's."""
    from ranker.picks.serve import recommend_playlists

    ranker = _ensure_ranker(live)
    post = ranker.explore
    assert post is not None and len(post.pids) > 0 and post.impressions.sum() > 0
    user = str(live.user_ids[-1])
    page = recommend_playlists(user=user, k=10, changes={"playlist_ranker": "learned", "explore_slots": 3})
    assert page.ranker == f"learned:{ranker.version}+explore3"
    explored = [p for p in page.playlists if "explore" in p["why"]]
    assert len(explored) == 3 and explored == page.playlists[-3:]
    space = live.playlist_space()
    for p in explored:
        why = p["why"]["explore"]
        assert set(why) == {"alpha", "beta", "sample", "cluster"} and 0 < why["sample"] < 1
        cluster = int(np.argmax(space.vectors[live.playlist_row[p["pid"]]] @ post.centroids.T))
        at = np.flatnonzero(post.pids == p["pid"])
        follows = float(post.follows[at[0]]) if len(at) else 0.0
        shown = float(post.impressions[at[0]]) if len(at) else 0.0
        assert why["cluster"] == cluster
        assert why["alpha"] == pytest.approx(post.prior_alpha[cluster] + follows, abs=1e-3)
        assert why["beta"] == pytest.approx(post.prior_beta[cluster] + max(shown - follows, 0), abs=1e-3)
    plain = recommend_playlists(user=user, k=10, changes=LEARNED)
    assert [p["pid"] for p in plain.playlists[:7]] == [p["pid"] for p in page.playlists[:7]]
    assert not any("explore" in p["why"] for p in plain.playlists)
    assert not {p["pid"] for p in explored} & {p["pid"] for p in page.playlists[:7]}


SPEC = {"playlist_ranker": {"applies_to": ["playlists"], "variants": {
    "control": {"weight": 1, **HAND}, "learned": {"weight": 1, **LEARNED},
    "learned_explore": {"weight": 1, "playlist_ranker": "learned", "explore_slots": 2}}}}


@pytest.mark.slow
def test_variants_route_to_their_ranking_and_bypass_the_precomputed_picks(live, feedback_settings):
    """control ranks by hand, learned by the learned ranker, learned_explore adds its slots. Precomputed picks
    (ranked the default way: learned, no slots) are served only to the variant that ranks that way, and only while
    the ranker they were ranked with is live."""
    from ranker.experiments.assign import assign, experiments_clear
    from ranker.picks.precompute import picks_precompute
    from ranker.picks.serve import serve_playlist_picks
    from ranker.playlist_ranking.services import playlist_ranker_train

    ranker = _ensure_ranker(live)
    feedback_settings.PLAYLIST_RANKER_DEFAULT = "learned"
    picks_precompute()
    feedback_settings.EXPERIMENTS = SPEC
    experiments_clear()
    users = [str(u) for u in live.user_ids[:60]]
    one = {v: next(u for u in users if assign(user=u, experiment="playlist_ranker") == v) for v in SPEC[
        "playlist_ranker"]["variants"]}
    served = {v: serve_playlist_picks(user=u, k=10, record=False) for v, u in one.items()}
    assert {v: b["variant"] for v, b in served.items()} == {v: v for v in one}
    assert served["learned"]["source"] == "precomputed"
    assert served["control"]["source"] == served["learned_explore"]["source"] == "model"
    assert all("playlist_bpr" in p["why"] for p in served["learned"]["playlists"])
    assert not any("playlist_bpr" in p["why"] or "explore" in p["why"] for p in served["control"]["playlists"])
    explore = served["learned_explore"]["playlists"]
    assert [("explore" in p["why"]) for p in explore] == [False] * 8 + [True] * 2
    # A new ranker goes live: picks precomputed with the old one are no longer served.
    playlist_ranker_train(params={"epochs": 3})
    again = serve_playlist_picks(user=one["learned"], k=10, record=False)
    assert again["source"] == "model" and again["playlists"] != [] and ranker is not None
    experiments_clear()


def test_unknown_training_params_are_refused_by_name(live, feedback_settings):
    from ranker.playlist_ranking.services import playlist_ranker_train

    with pytest.raises(ValueError, match=r"unknown playlist ranker params \['epoch'\]"):
        playlist_ranker_train(params={"epoch": 3})


def test_the_follow_rate_feature_is_each_playlists_posterior_mean():
    """PlaylistRanker.score fills the follow_rate column from its posteriors (alpha / (alpha + beta), shrunk to the
    cluster's rate): with weight on that column alone, the playlist followed most per impression ranks first, and a
    playlist nobody saw scores its cluster's prior rate."""
    from ranker.recommenders.playlist_ranker import LearnedWeights, PlaylistBPR, PlaylistRanker

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    pids = np.arange(100, 160)
    posteriors = follow_posteriors_fit(vectors=vectors, row_pids=pids, follows={100: 9, 101: 1},
                                       impressions={100: 10, 101: 10, 102: 10}, clusters=1, strength=20.0)
    width = len(FEATURES)
    coef = np.zeros(width)
    coef[FEATURES.index("follow_rate")] = 1.0
    bpr = PlaylistBPR(user_ids=np.asarray([], dtype=str), pids=np.asarray([], dtype=np.int64),
                      user_factors=np.zeros((1, 2)), playlist_factors=np.zeros((1, 2)), playlist_bias=np.zeros(1),
                      taste_map=np.zeros((8, 8)), track_version="v")
    ranker = PlaylistRanker(version="t", bpr=bpr, weights=LearnedWeights(np.zeros(width), np.ones(width), coef),
                            explore=posteriors)
    rows = np.asarray([2, 1, 0, 59])  # pids 102 (0 of 10), 101 (1 of 10), 100 (9 of 10), 159 (never shown)
    score, _ = ranker.score(user="u", taste=np.zeros(8), pids=pids[rows], vectors=vectors[rows],
                            features=np.zeros((len(rows), width)), track_version="v")
    prior = (10 + 1) / (30 + 2)  # the one cluster's pooled, smoothed rate
    expected = [(20 * prior + f) / (20 + n) for f, n in ((0, 10), (1, 10), (9, 10), (0, 0))]
    assert score == pytest.approx(expected)
    assert list(np.argsort(-score)) == [2, 3, 1, 0]


def test_playlist_picks_trade_relevance_for_diversity_as_the_greedy_rule_says():
    """``PlaylistSpace.rank`` against the rule written out with sets: each step takes the candidate with the best
    base score minus ``diversity`` × its largest Jaccard with the picks so far; shares are counted per track."""
    rng = np.random.default_rng(4)
    n_playlists, n_items = 60, 80
    tracks = [np.sort(rng.choice(n_items, size=int(rng.integers(3, 15)), replace=False)) for _ in range(n_playlists)]
    items = sp.csr_matrix((np.ones(sum(map(len, tracks)), dtype=np.float32), np.concatenate(tracks),
                           np.concatenate([[0], np.cumsum([len(t) for t in tracks])])), shape=(n_playlists, n_items))
    artist = np.asarray([f"a{i % 9}" for i in range(n_items)])
    space = PlaylistSpace(playlist_items=items, item_factors=rng.normal(size=(n_items, 4)).astype(np.float32),
                          item_bias=np.zeros(n_items, dtype=np.float32), item_artist=artist,
                          item_artist_name=artist, owners=np.asarray([f"u{i}" for i in range(n_playlists)]))
    mine = rng.choice(n_items, size=12, replace=False)
    weights = PlaylistWeights(diversity=2.0)  # strong enough to reorder
    base = {r: float(rng.normal()) for r in range(n_playlists)}
    picks = space.rank(user_vector=np.zeros(4, dtype=np.float32), user_tracks=mine, candidates=np.arange(n_playlists),
                       exclude={0}, buddy_of={}, weights=weights, k=8,
                       scorer=lambda rows, feats: np.asarray([base[int(r)] for r in rows]))

    sets = {r: set(tracks[r].tolist()) for r in range(n_playlists)}
    chosen: list[int] = []
    left = set(range(1, n_playlists))
    while len(chosen) < 8:
        def gain(r):
            closest = max((len(sets[r] & sets[p]) / len(sets[r] | sets[p]) for p in chosen), default=0.0)
            return base[r] - weights.diversity * closest
        best = max(sorted(left), key=gain)
        chosen.append(best)
        left.remove(best)
    assert [p.row for p in picks] == chosen
    assert chosen != sorted(left | set(chosen), key=lambda r: -base[r])[:8]  # diversity did reorder them
    for p in picks:
        assert p.new_share == pytest.approx(1 - len(sets[p.row] & set(mine.tolist())) / len(sets[p.row]), abs=1e-4)
