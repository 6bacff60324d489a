"""The evaluation harness: the split (categories, no leaks, determinism) and ``manage.py evaluate`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command

from ranker.evaluation.harness import CATEGORIES, CATEGORY_NAMES, MIN_HIDDEN, complete, split
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


@pytest.mark.slow
def test_evaluate_command_writes_the_documented_json(demo_store, model_dir, tmp_path):
    out = tmp_path / "eval.json"
    call_command("evaluate", "--test-size", "40", "--epochs", "10", "--json", str(out), "--no-progress",
                 "--categories", "title_first5,title_first10,title_random25,title_only")
    report = json.loads(out.read_text())
    assert report["served"] in report["methods"]
    for name, method in report["methods"].items():
        assert set(method["overall"]) == {"r_precision", "r_precision_artist", "ndcg_g", "ndcg", "clicks"}, name
        assert set(method["per_category"]) <= set(CATEGORY_NAMES)
    served = report["methods"][report["served"]]["overall"]
    popularity = report["methods"]["popularity"]["overall"]
    assert served["r_precision"] > popularity["r_precision"]
    assert served["clicks"] < popularity["clicks"]
    assert set(report["playlists"]) == {"buddies", "most_followed"}
    for values in report["playlists"].values():
        assert set(values) == {"hit_rate_10", "coverage_10", "novelty_10", "diversity_10"}
    from ranker.evaluation.selectors import evaluation_latest

    assert evaluation_latest()["methods"] == report["methods"]
