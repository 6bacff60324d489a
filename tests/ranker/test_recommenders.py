"""The one contract every track recommender passes, on a tiny matrix whose right answer is known.

Users 0–4 like the "rock" items 0, 1, 2 (user 0 misses item 2); users 5–7 like the "jazz" items 3, 4, 5.
Item 2 is the answer for user 0 by taste (it is what user 0's peers hold) and by popularity (4 holders
against 3 for every jazz item), so every recommender, even the baseline, must put it first.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ranker.recommenders import ALS, BPR, REGISTRY, Blend, ItemKNN, Popularity, Recommender
from ranker.recommenders.base import NotFittedError, topk
from ranker.training.served import make_served

LIKES = {0: [0, 1], 1: [0, 1, 2], 2: [0, 1, 2], 3: [0, 1, 2], 4: [0, 1, 2], 5: [3, 4, 5], 6: [3, 4, 5],
         7: [3, 4, 5]}
ANSWER = 2


def tiny() -> sp.csr_matrix:
    rows = [u for u, items in LIKES.items() for _ in items]
    cols = [i for items in LIKES.values() for i in items]
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(8, 6))


def _bpr(**kw) -> BPR:
    return BPR(factors=8, epochs=150, learning_rate=0.1, batch_size=8, validation_users=0, device="cpu",
               random_state=7, **kw)


FACTORIES = {
    "popularity": Popularity,
    "itemknn": ItemKNN,
    "bpr": _bpr,
    "als": lambda: ALS(factors=2, regularization=0.1, iterations=15, threads=1),  # 2 groups, 2 factors
    "blend": lambda: Blend(components=[(ItemKNN(), 1.0), (_bpr(), 0.5)]),
}


@pytest.fixture(params=sorted(FACTORIES))
def fitted(request) -> Recommender:
    return FACTORIES[request.param]().fit(tiny())


def test_every_registered_recommender_is_under_contract():
    assert set(FACTORIES) == set(REGISTRY)


def test_recommends_the_known_answer_first(fitted):
    ids, scores = fitted.recommend(0, tiny(), k=3)
    assert ids[0] == ANSWER
    assert list(scores) == sorted(scores, reverse=True)


def test_never_recommends_what_the_user_has(fitted):
    ids, _ = fitted.recommend(0, tiny(), k=6)
    assert not {0, 1} & set(ids.tolist())
    assert len(ids) == 4  # six items, two liked


def test_liked_items_come_back_when_not_filtered(fitted):
    ids, _ = fitted.recommend(0, tiny(), k=6, filter_already_liked_items=False)
    assert sorted(ids.tolist()) == list(range(6))


def test_batch_equals_one_at_a_time(fitted):
    m = tiny()
    users = np.arange(8)
    batch_ids, batch_scores = fitted.recommend(users, m, k=2)
    assert batch_ids.shape == (8, 2)
    for u in users:
        ids, scores = fitted.recommend(int(u), m, k=2)
        np.testing.assert_array_equal(batch_ids[u][: len(ids)], ids)
        np.testing.assert_allclose(batch_scores[u][: len(ids)], scores, rtol=1e-4, atol=1e-6)


def test_scores_of_some_items_are_those_columns_of_every_score(fitted):
    m = tiny()
    items = np.asarray([5, 0, 3])
    for users in (np.arange(8), None):  # trained rows, and the same rows folded in
        full = fitted.score(users, m)
        np.testing.assert_allclose(fitted.score_items(users, m, items), full[:, items], rtol=1e-5, atol=1e-6)
    # a second call with another array of items is not answered from the first one's slice
    np.testing.assert_allclose(fitted.score_items(None, m, np.asarray([1, 2])), fitted.score(None, m)[:, [1, 2]],
                               rtol=1e-5, atol=1e-6)


def test_folds_in_an_unseen_seed_playlist(fitted):
    seeds = sp.csr_matrix((np.ones(2, dtype=np.float32), ([0, 0], [0, 1])), shape=(1, 6))
    ids, _ = fitted.recommend(None, seeds, k=2, recalculate_user=True)
    assert ids[0][0] == ANSWER


def test_save_and_load_give_the_same_recommendations(fitted, tmp_path):
    fitted.save(tmp_path / "model")
    loader = Blend if isinstance(fitted, Blend) else Recommender
    loaded = loader.load(tmp_path / "model")
    assert type(loaded) is type(fitted)
    for u in range(8):
        a, sa = fitted.recommend(u, tiny(), k=3)
        b, sb = loaded.recommend(u, tiny(), k=3)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb, rtol=1e-6)


def test_unfitted_model_says_so():
    for name, factory in FACTORIES.items():
        if name == "blend":
            continue
        with pytest.raises(NotFittedError, match="not fitted"):
            factory().score(None, tiny())


@pytest.mark.parametrize("name", ["itemknn", "bpr", "als", "blend"])
def test_personalised_models_know_the_jazz_user_wants_jazz(name):
    """Popularity would answer item 2 here; a personalised model must not."""
    m = tiny().tolil()
    m[5, 5] = 0  # user 5 now misses jazz item 5
    m = m.tocsr()
    m.eliminate_zeros()
    model = FACTORIES[name]().fit(m)
    ids, _ = model.recommend(5, m, k=1)
    assert ids[0] == 5


@pytest.mark.parametrize("name", ["itemknn", "bpr", "als"])
def test_similar_items_stay_in_their_group(name):
    model = FACTORIES[name]().fit(tiny())
    ids, _ = model.similar_items(3, k=2)
    assert set(ids.tolist()) == {4, 5}
    users, _ = model.similar_users(6, k=2)
    assert set(users.tolist()) == {5, 7}


def test_bpr_is_deterministic_for_a_seed():
    a = _bpr().fit(tiny())
    b = _bpr().fit(tiny())
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


def test_bpr_reports_progress_and_stops_early_on_validation():
    rng = np.random.default_rng(0)
    dense = (rng.random((60, 40)) < 0.2).astype(np.float32)
    seen = []
    model = BPR(factors=4, epochs=200, eval_every=1, patience=2, validation_users=20, random_state=0,
                learning_rate=0.01)
    model.fit(sp.csr_matrix(dense), callback=lambda epoch, elapsed, metrics: seen.append((epoch, metrics)))
    assert seen and seen[0][0] == 1 and "loss" in seen[0][1]
    assert model.metrics_["epochs"] == len(seen) < 200  # random data stops improving long before 200 epochs
    assert "val_hit_rate_50" in seen[-1][1]


def test_bpr_uses_hard_negatives():
    """With every user's skips on item 2, BPR must rank item 2 below what uniform sampling would."""
    m = tiny()
    skips = sp.csr_matrix((np.ones(3, dtype=np.float32), ([5, 6, 7], [2, 2, 2])), shape=m.shape)
    plain = _bpr().fit(m)
    hard = _bpr(hard_negative_share=0.9).fit(m, negatives=skips)
    jazz = np.arange(5, 8)
    assert hard.score(jazz, m[jazz])[:, 2].mean() < plain.score(jazz, m[jazz])[:, 2].mean()


def test_cuda_requested_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path cannot happen here")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        BPR(factors=2, epochs=1, device="cuda").fit(tiny())


def test_the_served_recommender_passes_the_contract():
    model = make_served({"bpr": {"factors": 8, "epochs": 100, "batch_size": 8, "validation_users": 0},
                         "als": {"factors": 2, "regularization": 0.1}}, threads=1)
    model.fit(tiny())
    ids, _ = model.recommend(0, tiny(), k=1)
    assert ids[0] == ANSWER


def test_topk_pads_and_marks_missing():
    ids, scores = topk(np.array([[0.5, -np.inf, 0.9]], dtype=np.float32), 4)
    assert ids.tolist() == [[2, 0, -1, -1]]
    assert scores[0][0] == pytest.approx(0.9)


def test_als_fold_in_matches_its_trained_users():
    """The exact fold-in of a row ALS trained on must point where ALS's own user vector points."""
    rng = np.random.default_rng(0)
    m = sp.csr_matrix((rng.random((200, 300)) < 0.05).astype(np.float32))
    model = ALS(factors=8, iterations=30, threads=1).fit(m)
    folded, trained = model.fold_in(m[:20]), model.user_factors[:20]
    cosine = (folded * trained).sum(1) / np.linalg.norm(folded, axis=1) / np.linalg.norm(trained, axis=1)
    assert cosine.min() > 0.99


@pytest.mark.parametrize("make", [lambda: BPR(epochs=0), lambda: BPR(learning_rate=-1), lambda: ALS(factors=0),
                                  lambda: BPR(hard_negative_share=2), lambda: BPR(kernel="numba")])
def test_bad_parameters_are_refused_by_name(make):
    with pytest.raises(ValueError, match="invalid parameters"):
        make()


# --- BPR's two epoch kernels (ADR 0009) ------------------------------------------------------------------------


def groups(n_users: int = 1200, n_items: int = 400, n_groups: int = 4, per_user: int = 40, seed: int = 0):
    """Users of group g like ``per_user`` random items of group g's block of items: a structure BPR must find."""
    rng = np.random.default_rng(seed)
    block = n_items // n_groups
    rows, cols = [], []
    for u in range(n_users):
        g = u % n_groups
        rows += [u] * per_user
        cols += (g * block + rng.choice(block, per_user, replace=False)).tolist()
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))


@pytest.mark.parametrize("kernel", ["fused", "torch"])
def test_both_bpr_kernels_find_the_answer(kernel):
    model = _bpr(kernel=kernel).fit(tiny())
    assert model.metrics_["kernel"] == kernel
    ids, _ = model.recommend(0, tiny(), k=1)
    assert ids[0] == ANSWER


def test_auto_takes_the_fused_kernel_on_the_cpu():
    assert _bpr().fit(tiny()).metrics_["kernel"] == "fused"


@pytest.mark.parametrize(("kernel", "threads"), [("fused", 1), ("fused", 2), ("torch", 1)])
def test_bpr_learns_planted_groups_with_each_kernel(kernel, threads):
    """48,000 positives: enough for the fused kernel to really run 2 Hogwild threads (racing updates). The torch
    path runs 1 thread: its many short parallel regions crawl on 2 shared cores (docs/BENCHMARKS.md)."""
    m = groups()
    model = BPR(factors=16, epochs=15, learning_rate=0.05, regularization=0.01, validation_users=200, eval_every=5,
                threads=threads, kernel=kernel, random_state=0).fit(m)
    assert model.metrics_["kernel"] == kernel
    # Held-out positives are in the user's 100-item block; the top 20 of 400 (val_k) by chance hits 20/360 ≈ 6 %.
    assert model.metrics_["val_hit_rate_50"] > 0.3
    # Every user's top 10 unseen items come from their own group's block.
    ids, _ = model.recommend(np.arange(40), m[:40], k=10)
    assert ((ids // 100) == (np.arange(40) % 4)[:, None]).mean() > 0.95


def test_fused_kernel_is_reproducible_on_one_thread():
    m = groups(n_users=400)
    a = BPR(factors=8, epochs=3, threads=1, kernel="fused", validation_users=0, random_state=3).fit(m)
    b = BPR(factors=8, epochs=3, threads=1, kernel="fused", validation_users=0, random_state=3).fit(m)
    c = BPR(factors=8, epochs=3, threads=1, kernel="fused", validation_users=0, random_state=4).fit(m)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    assert not np.array_equal(a.item_factors, c.item_factors)


@pytest.mark.parametrize("kernel", ["fused", "torch"])
def test_a_sampled_negative_that_is_a_positive_is_skipped(kernel):
    """Each user likes 9 of 10 items, so 9 in 10 uniform negatives are positives and must be skipped."""
    n_users, n_items = 3000, 10
    dense = np.ones((n_users, n_items), dtype=np.float32)
    dense[np.arange(n_users), np.arange(n_users) % n_items] = 0
    model = BPR(factors=4, epochs=2, validation_users=0, kernel=kernel, random_state=0).fit(sp.csr_matrix(dense))
    assert model.metrics_["skipped_share"] == pytest.approx(0.9, abs=0.01)


def test_without_a_compiler_bpr_falls_back_to_torch(monkeypatch, tmp_path, caplog):
    from ranker.recommenders import bpr_kernel

    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("BUDDIES_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(bpr_kernel, "_cache", {})
    with caplog.at_level("WARNING", logger="ranker.recommenders.bpr_kernel"):
        model = _bpr().fit(tiny())
    assert model.metrics_["kernel"] == "torch"
    assert "no-such-cc" in caplog.text and "torch ops" in caplog.text
    with pytest.raises(RuntimeError, match="could not be built"):
        _bpr(kernel="fused").fit(tiny())


def test_fused_kernel_on_cuda_is_refused_by_name():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no GPU here: the device check fails first (see the test above)")
    with pytest.raises(ValueError, match="CPU only"):
        _bpr(kernel="fused", device="cuda").fit(tiny())


def test_bpr_trains_on_cuda_where_there_is_one():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no GPU here")
    model = _bpr(device="cuda").fit(tiny())
    assert model.metrics_["device"].startswith("cuda") and model.metrics_["kernel"] == "torch"
    ids, _ = model.recommend(0, tiny(), k=1)
    assert ids[0] == ANSWER


def test_bpr_refuses_negatives_of_another_shape():
    with pytest.raises(ValueError, match="negatives have shape"):
        _bpr().fit(tiny(), negatives=sp.csr_matrix((np.ones(1), ([0], [0])), shape=(3, 3)))
