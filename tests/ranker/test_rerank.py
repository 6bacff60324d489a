"""The second stage of track picks: its candidates and features, its training cases, its ranking, its persistence."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.recommenders import ALS, BPR, Blend, ItemKNN
from ranker.recommenders.rerank import FEATURES, HEAD_MIN_COUNT, SecondStage, _ranks, _share, codes
from ranker.training.data import Playlists, rows_matrix
from ranker.training.second_stage import CATEGORIES, cut_cases, second_stage_data, second_stage_train


def _clustered(n=240, n_items=600, clusters=6, seed=0):
    """Playlists drawn from taste clusters (each cluster its own tracks, artists and albums), named by cluster."""
    rng = np.random.default_rng(seed)
    per = n_items // clusters
    docs = []
    for pid in range(n):
        c = pid % clusters
        size = int(rng.integers(20, 60))
        pool = np.arange(c * per, (c + 1) * per)
        weights = 1.0 / np.arange(1, per + 1)  # popular tracks first within a cluster
        tracks = rng.choice(pool, size=size, replace=False, p=weights / weights.sum())
        docs.append({"_id": pid, "name_norm": f"mood{c} mix", "owner": f"mpd:{pid}", "num_followers": 0,
                     "tracks": [{"uri": f"t{t}", "artist_key": f"a{t // 10}", "artist_name": f"Artist {t // 10}",
                                 "name": f"song {t}", "album_uri": f"al{t // 5}"} for t in tracks]})
    return Playlists.from_docs(docs)


def _first():
    return Blend(components=[(ItemKNN(), 1.0), (ALS(factors=8, iterations=3, random_state=0), 1.0),
                             (BPR(factors=8, epochs=3, random_state=0), 0.25)])


def test_ranks_say_where_each_candidate_stands_in_a_parts_top_list():
    top = np.asarray([7, 3, 9, -1])
    assert _ranks(top, np.asarray([3, 4, 7, 9]), cap=50).tolist() == [1, 50, 0, 2]
    assert _ranks(np.asarray([-1, -1]), np.asarray([1]), cap=5).tolist() == [5]


def test_artist_share_counts_the_seeds_by_each_candidates_artist():
    artist = codes(np.asarray(["x", "x", "y", "", "y", "z"]))
    seeds = np.asarray([0, 1, 2, 3])  # x, x, y, unknown
    share = _share(artist, seeds, np.asarray([4, 5, 3]))  # y, z, unknown
    assert share.tolist() == pytest.approx([1 / 4, 0.0, 0.0])


def test_candidates_never_hold_a_seed_and_their_features_are_what_they_claim():
    pl = _clustered()
    matrix = pl.matrix()
    first = _first().fit(matrix)
    stage = SecondStage(per_part=30, blend_depth=40, item_artist=codes(pl.item_artist), item_album=codes(pl.item_album))
    seeds = [pl.tracks_of(0)[:8], pl.tracks_of(1)[:1]]  # in playlist order
    got = stage.candidates(first, rows_matrix(seeds, pl.n_items), titles=[None, None], order=seeds)
    assert len(got.ids) == 2 and got.features.shape[1] == len(FEATURES)
    col = {name: i for i, name in enumerate(FEATURES)}
    for r, s in enumerate(seeds):
        ids, x = got.of(r)
        assert not np.isin(ids, s).any()
        assert len(ids) >= 40  # the blend's top 40 at least
        assert (x[:, col["n_seeds"]] == len(s)).all() and (x[:, col["has_title"]] == 0).all()
        # co-occurrence with the seeds, counted by hand from the training playlists
        for j in (0, len(ids) // 2, len(ids) - 1):
            counts = [int(matrix[:, s_][matrix[:, ids[j]].nonzero()[0]].sum()) for s_ in s]
            assert x[j, col["cooc_max"]] == max(counts)
            assert x[j, col["cooc_mean"]] == pytest.approx(np.mean(counts))
            assert x[j, col["cooc_last_max"]] == max(counts[-5:])  # the playlist's last five seeds
            assert x[j, col["cooc_last_mean"]] == pytest.approx(np.mean(counts[-5:]))
            same_artist = np.mean([pl.item_artist[t] == pl.item_artist[ids[j]] for t in s])
            assert x[j, col["artist_share"]] == pytest.approx(same_artist)
            artist_rows = matrix[:, pl.item_artist == pl.item_artist[ids[j]]].sum()
            assert x[j, col["artist_log_popularity"]] == pytest.approx(np.log1p(artist_rows), rel=1e-5)
        popularity = np.asarray(matrix.sum(axis=0)).ravel()
        assert x[:, col["seed_log_popularity"]] == pytest.approx(np.log1p(popularity[s]).mean(), rel=1e-5)
        top_artist = max(np.unique(pl.item_artist[s], return_counts=True)[1]) / len(s)
        assert x[:, col["seed_artist_top_share"]] == pytest.approx(top_artist)
        knn = first.components[0][0].score(None, rows_matrix([s], pl.n_items))[0]
        np.testing.assert_allclose(x[:, col["knn_per_seed"]], knn[ids] / len(s), rtol=1e-5)
        assert not x[:, col["text_raw"]].any()  # no title


def test_the_factor_parts_score_only_tracks_in_two_playlists_or_more():
    pl = _clustered(n_items=3000)  # a long tail: many tracks in a single playlist
    matrix = pl.matrix()
    first = _first().fit(matrix)
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    once = np.flatnonzero(counts == 1)
    assert len(once) and (counts >= HEAD_MIN_COUNT).sum() > 100  # the data has both kinds
    stage = SecondStage(per_part=len(counts), blend_depth=len(counts))  # every track a candidate
    seeds = [pl.tracks_of(3)[:6]]
    stage.warm(first)
    ids, x = stage.candidates(first, rows_matrix(seeds, pl.n_items), titles=[None], order=seeds).of(0)
    col = {name: i for i, name in enumerate(FEATURES)}
    tail = np.isin(ids, once)
    assert tail.any() and (x[tail, col["als"]] == 0).all() and (x[tail, col["bpr"]] == 0).all()
    head = ~tail
    # in the head, the part's scores scaled over the head alone, as ALS itself scores them
    als = first.components[1][0].score(None, rows_matrix(seeds, pl.n_items))[0]
    heads = np.flatnonzero(counts >= HEAD_MIN_COUNT)
    scaled = (als[ids[head]] - als[heads].min()) / (als[heads].max() - als[heads].min())
    np.testing.assert_allclose(x[head, col["als"]], scaled, atol=1e-5)
    assert (x[tail, col["knn"]] > 0).any()  # a track of one playlist is still found through its co-occurrence


def test_playlist_neighbours_vote_for_their_tracks_by_cosine_with_the_seeds(monkeypatch):
    from ranker.recommenders import rerank

    playlists = [[0, 1, 2], [0, 1, 3, 6, 7], [4, 5], [1, 8]]  # cosine with seeds {0, 1}: .82, .63, 0, .5
    matrix = rows_matrix([np.asarray(p) for p in playlists], 9)
    knn = ItemKNN().fit(matrix)
    seeds = rows_matrix([np.asarray([0, 1]), np.asarray([], dtype=np.int64)], 9)
    got = rerank._playlist_neighbours(knn, seeds)
    cos = {0: 2 / np.sqrt(3 * 2), 1: 2 / np.sqrt(5 * 2), 3: 1 / np.sqrt(2 * 2)}
    expected = np.zeros(9)
    for p, c in cos.items():
        expected[playlists[p]] += c ** rerank.PLAYLIST_POWER
    expected[[0, 1]] = 0.0  # seeds
    np.testing.assert_allclose(got[0], expected / expected.max(), rtol=1e-5)
    assert not got[1].any()  # no seeds, no neighbours
    monkeypatch.setattr(rerank, "PLAYLIST_NEIGHBOURS", 1)
    only = rerank._playlist_neighbours(knn, seeds)[0]
    assert np.flatnonzero(only).tolist() == [2]  # the nearest playlist's tracks alone


def test_a_title_alone_gets_candidates_from_the_text_and_from_the_tracks_it_points_to():
    from ranker.recommenders import rerank
    from ranker.recommenders.text import TextModel

    pl = _clustered()
    matrix = pl.matrix()
    text = TextModel().fit(pl.names, matrix, item_names=pl.item_name, item_artists=pl.item_artist_name)
    stage = SecondStage(per_part=30, blend_depth=30, item_artist=codes(pl.item_artist),
                        item_album=codes(pl.item_album))
    first = _first().fit(matrix)
    no_seeds = rows_matrix([np.zeros(0, np.int64)], pl.n_items)
    ids, x = stage.candidates(first, no_seeds, titles=["mood3 mix"], text=text).of(0)
    col = {name: i for i, name in enumerate(FEATURES)}
    cluster = np.asarray([int(pl.item_ids[i][1:]) // 100 for i in ids])  # mood3's tracks: cluster 3's
    assert np.mean(cluster[x[:, col["text_rank"]] < 30] == 3) >= 0.9  # the text's own top list
    assert (cluster[x[:, col["knn"]] > 0] == 3).all()  # co-occurring with the text's tracks: the same cluster
    assert (x[:, col["has_title"]] == 1).all() and (x[:, col["n_seeds"]] == 0).all()
    # the text's best tracks stand in for seeds: they are candidates themselves, and the other parts speak
    pseudo = np.argsort(-text.scores(["mood3 mix"], pl.n_items)[0], kind="stable")[:rerank.PSEUDO_SEEDS]
    assert np.isin(pseudo, ids).all()
    assert (x[:, col["knn"]] > 0).any() and (x[:, col["cooc_max"]] > 0).any()
    assert len(ids) > 30  # more than the text's own top list
    # without a text model there is nothing to go on: no candidates at all
    assert len(stage.candidates(first, no_seeds, titles=["mood3 mix"]).ids[0]) == 0


def test_tracks_by_the_seeds_artists_are_candidates_most_popular_first():
    pl = _clustered()
    matrix = pl.matrix()
    first = _first().fit(matrix)
    artist = codes(pl.item_artist)
    stage = SecondStage(per_part=1, blend_depth=1, item_artist=artist, item_album=codes(pl.item_album))
    seed = pl.tracks_of(0)[:1]
    ids, _ = stage.candidates(first, rows_matrix([seed], pl.n_items), titles=[None], order=[seed]).of(0)
    same = np.flatnonzero(artist == artist[seed[0]])
    same = same[same != seed[0]]
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    held = same[popularity[same] > 0]
    assert len(held) >= 2 and np.isin(held, ids).all()  # every other track of the artist (10 per artist here)
    assert seed[0] not in ids


def test_training_cases_follow_the_categories_and_never_touch_excluded_rows():
    pl = _clustered(n=300)
    rows = [pl.tracks_of(i) for i in range(len(pl))]
    excluded = np.arange(0, 300, 3)
    cases = cut_cases(rows, list(pl.names), cases=60, random_state=1, exclude_rows=excluded)
    assert len(cases) == 60 and not np.isin([c.row for c in cases], excluded).any()
    assert len({c.row for c in cases}) == 60
    seeds_seen = {len(c.seeds) for c in cases}
    assert seeds_seen == {cat.seeds for cat in CATEGORIES if cat.seeds + 5 <= 60} - {100}
    for c in cases:
        assert set(c.seeds.tolist()) | set(c.hidden.tolist()) == set(rows[c.row].tolist())
        assert not set(c.seeds.tolist()) & set(c.hidden.tolist())


@pytest.mark.parametrize("folds", [1, 2])
def test_the_second_stages_first_stage_never_sees_the_hidden_tracks(folds):
    pl = _clustered(n=200)
    seen = []

    class Spy(Blend):
        def fit(self, interactions, **kwargs):
            seen.append(interactions.copy())
            return super().fit(interactions, **kwargs)

    def factory():
        return Spy(components=_first().components)

    stage, cands, hidden, cases = second_stage_data(pl, factory, cases=40, folds=folds, per_part=20, blend_depth=20)
    assert len(seen) == folds and len(cases) == 40 * folds and len({c.row for c in cases}) == len(cases)
    assert len(hidden) == len(cands.ids) == len(cases)
    for n, case in enumerate(cases):
        fold = n // 40  # the cases come back fold by fold
        assert set(seen[fold][case.row].indices.tolist()) == set(case.seeds.tolist())
        for other in range(folds):  # the other folds' first stages learn from this playlist whole
            if other != fold:
                assert seen[other][case.row].nnz == len(set(pl.tracks_of(case.row).tolist()))
        assert np.isin(case.hidden, hidden[n]).all() and len(case.hidden) == len(hidden[n])


def test_the_booster_puts_hidden_tracks_above_the_other_candidates_and_survives_a_round_trip():
    pl = _clustered(n=300, seed=2)
    stage = second_stage_train(pl, _first, cases=150, per_part=30, blend_depth=40)
    assert stage.metrics_["rounds"] >= 1 and set(stage.metrics_["gain"]) == set(FEATURES)
    # New playlists of the same tastes, 5 tracks shown: the booster's top 10 holds more of the rest than its
    # bottom 10 of the same candidates (a booster fitted to misaligned labels would not tell them apart).
    probe = _clustered(n=60, seed=9)
    index = pl.item_index
    known = [np.asarray([index[u] for u in probe.item_ids[probe.tracks_of(i)] if u in index]) for i in range(60)]
    seeds, hidden = [k[:5] for k in known], [k[5:] for k in known]
    first = _first().fit(pl.matrix())
    cands = stage.candidates(first, rows_matrix(seeds, pl.n_items))
    predicted = stage.booster_.predict(cands.features)
    top_hits = bottom_hits = 0
    for r in range(60):
        ids = cands.ids[r]
        order = np.argsort(-predicted[cands.offsets[r]:cands.offsets[r + 1]])
        top_hits += np.isin(ids[order[:10]], hidden[r]).sum()
        bottom_hits += np.isin(ids[order[-10:]], hidden[r]).sum()
    assert top_hits > 2 * bottom_hits, (top_hits, bottom_hits)

    ids, scores = stage.rank(first, rows_matrix(seeds, pl.n_items), 20)
    assert ids.shape == (60, 20) and (np.diff(scores, axis=1) <= 0).all()
    assert not any(np.isin(ids[r], seeds[r]).any() for r in range(60))
    again = SecondStage.from_state(stage.get_state())
    ids2, _ = again.rank(first, rows_matrix(seeds, pl.n_items), 20)
    assert (ids2 == ids).all()


def test_a_state_saved_with_other_features_is_refused_by_name():
    pl = _clustered(n=200)
    stage = second_stage_train(pl, _first, cases=100, per_part=20, blend_depth=20)
    state = stage.get_state()
    import json

    meta = json.loads(str(state["meta"]))
    meta["features"] = meta["features"][:-1]
    state["meta"] = np.asarray(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"lacks \['{FEATURES[-1]}'\].*retrain"):
        SecondStage.from_state(state)


def test_too_few_useful_cases_is_a_clear_error():
    pl = _clustered(n=30)
    with pytest.raises(ValueError, match="second stage needs at least"):
        second_stage_train(pl, _first, cases=5, per_part=10, blend_depth=10)


@pytest.mark.django_db
def test_a_version_trained_with_a_second_stage_serves_continuations_through_it(demo_store, model_dir, settings):
    """The weekly training trains the second stage; the saved version loads it whole; the continuation endpoint
    answers through it (seeds, a title, or both), never with a seed, and a user's own picks keep the blend."""
    from ranker.picks.serve import recommend_tracks
    from ranker.training.artifacts import RankerModel
    from ranker.training.selectors import live_model_clear
    from ranker.training.services import model_promote, ranker_train
    from tests.conftest import FAST, app_client

    said = []
    model = ranker_train(params={**FAST, "second_stage_cases": 120, "second_stage_folds": 1}, say=said.append)
    assert model.second_stage is not None and model.meta["metrics"]["second_stage"]["cases"] == 120
    assert "fitting a first stage" in said[0] and "boosting" in said[-1]  # the phases, in order
    assert any("candidates and features" in m for m in said[1:-1])
    # Compiled as it was trained, so this machine's cache is warm before any worker loads the version (ADR 0020).
    [obj] = list((model_dir / "native").glob("*.o"))
    written = obj.stat().st_mtime_ns
    assert model.second_stage.compiled
    loaded = RankerModel.load(model.version, model_dir)
    assert loaded.second_stage is not None and loaded.second_stage.compiled
    assert list((model_dir / "native").glob("*.o")) == [obj] and obj.stat().st_mtime_ns == written  # not again
    settings.SECOND_STAGE_COMPILE = False  # the switch: LightGBM predicts
    assert not RankerModel.load(model.version, model_dir).second_stage.compiled
    settings.SECOND_STAGE_COMPILE = True
    seeds = model.item_ids[model.user_items[0].indices[:5]].tolist()
    here = recommend_tracks(seed_tracks=seeds, title="chill", k=100, model=model)
    there = recommend_tracks(seed_tracks=seeds, title="chill", k=100, model=loaded)
    assert here.source == there.source == "reranked" and here.tracks == there.tracks and len(here) == 100
    assert not set(here.tracks) & set(seeds)
    user = str(model.user_ids[0])
    assert recommend_tracks(user=user, k=20, model=model).source == "model"

    model_promote(version=model.version, force=True)
    live_model_clear()
    try:
        api = app_client("picks:read")
        for body in ({"seed_tracks": seeds, "k": 500}, {"name": model.playlist_names[0], "k": 50}):
            answer = api.post("/api/v1/recommendations/continuation", body, format="json")
            assert answer.status_code == 200, answer.json()
            got = answer.json()
            assert got["source"] == "reranked" and len(got["tracks"]) == body["k"]
            assert not {t["uri"] for t in got["tracks"]} & set(body.get("seed_tracks", []))
            assert len({t["uri"] for t in got["tracks"]}) == body["k"]
    finally:
        live_model_clear()

    # A release that computes other features still loads the version, and serves continuations with the blend
    import json

    from ranker.recommenders import rerank
    from ranker.training.artifacts import ensure_local

    path = ensure_local(model.version, model_dir) / "second_stage.npz"
    with np.load(path) as saved:
        state = {k: saved[k] for k in saved.files}
    meta = json.loads(str(state["meta"]))
    state["meta"] = np.asarray(json.dumps({**meta, "features": [*meta["features"], "tomorrows_feature"]}))
    np.savez_compressed(path, **state)
    older = RankerModel.load(model.version, model_dir)
    assert older.second_stage is None
    assert recommend_tracks(seed_tracks=seeds, title="chill", k=100, model=older).source in ("model", "model+title")
    assert tuple(meta["features"]) == rerank.FEATURES  # what the version was trained on is this code's
