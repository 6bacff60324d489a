"""The FAISS nearest-neighbour layer of pairing, on vectors whose neighbours are known or brute-forced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import scipy.sparse

from pairing.knn import Neighbours, ann_topk, exact_topk, recall_at_k, topk
from ranker.recommenders.vectors import normalize_rows, taste_vectors

REPO = Path(__file__).resolve().parents[2]
# Three tight clusters of three users each, along the x, y and z axes.
CLUSTERS = np.array([
    [1.0, 0.1, 0.0], [1.0, 0.0, 0.1], [2.0, 0.1, 0.1],
    [0.1, 1.0, 0.0], [0.0, 1.0, 0.1], [0.1, 3.0, 0.1],
    [0.1, 0.0, 1.0], [0.0, 0.1, 1.0], [0.1, 0.1, 0.5],
])
SAME_CLUSTER = [{j for j in range(3 * (i // 3), 3 * (i // 3) + 3) if j != i} for i in range(9)]
ALL_METHODS = ["exact", "ivf", "hnsw"]
ENGINES = ["faiss", "torch"]


def clustered(n: int, d: int, clusters: int, seed: int, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return centres[rng.integers(clusters, size=n)] + spread * rng.normal(size=(n, d))


def brute_cosine(x: np.ndarray) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return sims


def test_normalize_rows_copies_to_unit_float32_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    out = normalize_rows(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], rtol=1e-6)
    assert x[0, 0] == 3.0  # the input is untouched
    fortran = normalize_rows(np.asfortranarray(np.ones((4, 3), dtype=np.float32)))
    assert fortran.flags.c_contiguous


@pytest.mark.parametrize("method", ALL_METHODS)
def test_known_clusters(method):
    found, used = topk(CLUSTERS, 2, method=method)
    assert used == method
    for i in range(9):
        assert {j for j, _ in found.row(i)} == SAME_CLUSTER[i]
    assert found.ids.shape == (9, 2) and found.ids.dtype == np.int64 and found.scores.dtype == np.float32
    assert np.all(np.diff(found.scores, axis=1) <= 0)  # best first


@pytest.mark.parametrize("engine", ENGINES)
def test_exclude_self_false_returns_self_first(engine):
    found = exact_topk(CLUSTERS, 3, exclude_self=False, engine=engine)
    assert found.ids[:, 0].tolist() == list(range(9))
    np.testing.assert_allclose(found.scores[:, 0], 1.0, rtol=1e-6)
    for i in range(9):
        assert set(found.ids[i, 1:].tolist()) == SAME_CLUSTER[i]


@pytest.mark.parametrize("engine", ENGINES)
def test_explicit_queries_are_not_excluded(engine):
    queries = np.array([[5.0, 0.0, 0.0], [0.1, 3.0, 0.1]])
    found = exact_topk(CLUSTERS, 1, queries=queries, engine=engine)
    assert found.ids[:, 0].tolist() == [2, 5]  # row 5 is the second query itself, and stays


@pytest.mark.parametrize(("method", "kw"), [*((m, {}) for m in ALL_METHODS), ("exact", {"engine": "torch"})])
def test_zero_vectors_are_never_neighbours_and_get_no_neighbours(method, kw):
    vectors = clustered(300, 8, 5, seed=1)
    zero = [0, 17, 150, 299]
    vectors[zero] = 0.0
    found, _ = topk(vectors, 10, method=method, **kw)
    assert not np.isin(found.ids, zero).any()
    assert (found.ids[zero] == -1).all() and np.isneginf(found.scores[zero]).all()
    others = np.setdiff1d(np.arange(300), zero)
    assert (found.ids[others] >= 0).all()
    assert (found.ids[others] != others[:, None]).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_fewer_than_k_found_pads_with_minus_one(engine):
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 0.0]])
    found = exact_topk(vectors, 4, engine=engine)
    assert found.ids.tolist() == [[1, -1, -1, -1], [0, -1, -1, -1], [-1, -1, -1, -1]]
    assert found.row(0) == [(1, pytest.approx(0.8))]
    assert found.row(2) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_all_zero_vectors(engine):
    found = exact_topk(np.zeros((4, 3)), 2, engine=engine)
    assert (found.ids == -1).all()


# Not HNSW: its multi-threaded build may link the graph differently each time, whatever the batch size.
@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_batches_give_the_same_result_as_one(method):
    vectors = clustered(400, 16, 8, seed=2)
    one, _ = topk(vectors, 7, method=method, batch_size=10_000)
    many, _ = topk(vectors, 7, method=method, batch_size=2)
    np.testing.assert_array_equal(one.ids, many.ids)
    np.testing.assert_allclose(one.scores, many.scores, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_exact_matches_numpy_brute_force(engine):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(500, 16))
    k = 10
    found = exact_topk(vectors, k, engine=engine)
    sims = brute_cosine(vectors)
    order = np.argsort(-sims, axis=1)
    best = np.take_along_axis(sims, order, 1)
    np.testing.assert_allclose(found.scores, best[:, :k], atol=1e-5)
    # Each returned id really has the reported cosine (so ties may only swap ids of equal scores) ...
    np.testing.assert_allclose(np.take_along_axis(sims, found.ids, 1), found.scores, atol=1e-5)
    # ... and where the k-th and (k+1)-th scores differ, the id sets are the same.
    clear = best[:, k - 1] - best[:, k] > 1e-5
    assert clear.mean() > 0.9
    for i in np.flatnonzero(clear):
        assert set(found.ids[i].tolist()) == set(order[i, :k].tolist())


@pytest.mark.parametrize(("method", "params"), [("ivf", {}), ("hnsw", {}), ("ivf", {"nlist": 40, "nprobe": 4})])
def test_ann_recall_against_exact(method, params):
    vectors = clustered(2000, 32, 20, seed=4)
    exact = exact_topk(vectors, 10)
    approx = ann_topk(vectors, 10, method=method, **params)
    assert approx.ids.shape == (2000, 10)
    assert (approx.ids != np.arange(2000)[:, None]).all()
    assert recall_at_k(approx, exact) >= 0.9


def test_ivf_is_reproducible_with_random_state():
    vectors = clustered(1000, 16, 10, seed=5)
    first = ann_topk(vectors, 5, method="ivf", nprobe=1, random_state=7)
    again = ann_topk(vectors, 5, method="ivf", nprobe=1, random_state=7)
    np.testing.assert_array_equal(first.ids, again.ids)


def test_recall_at_k_by_hand():
    exact = Neighbours(np.array([[1, 2], [3, -1], [-1, -1]]), np.zeros((3, 2), np.float32))
    approx = Neighbours(np.array([[2, 7], [9, -1], [4, 5]]), np.zeros((3, 2), np.float32))
    # Row 0 finds 1 of 2, row 1 finds 0 of 1 (a shared -1 is no hit), row 2 has no exact neighbours: skipped.
    assert recall_at_k(approx, exact) == pytest.approx(0.25)
    assert recall_at_k(exact, exact) == 1.0
    with pytest.raises(ValueError):
        recall_at_k(approx, Neighbours(exact.ids[:2], exact.scores[:2]))


def test_taste_vectors_is_the_normalised_mean_of_liked_items():
    items = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 4.0], [0.0, 0.0, 1.0]])
    # User 0 likes items 0 and 2 (the 5 is a play count, ignored), user 1 item 1 (its item 3 is a stored zero),
    # user 2 nothing.
    user_items = scipy.sparse.csr_matrix(
        (np.array([5.0, 1.0, 1.0, 0.0]), (np.array([0, 0, 1, 1]), np.array([0, 2, 1, 3]))), shape=(3, 4))
    user_items.data[3] = 0.0
    taste = taste_vectors(items, user_items)
    mean = (items[0] + items[2]) / 2
    np.testing.assert_allclose(taste, [mean / np.linalg.norm(mean), [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)
    assert taste.dtype == np.float32
    with pytest.raises(ValueError):
        taste_vectors(items[:3], user_items)


def test_topk_auto_picks_exact_up_to_the_threshold_then_hnsw():
    small, used_small = topk(clustered(10, 4, 2, seed=6), 3, exact_max=10)
    big, used_big = topk(clustered(11, 4, 2, seed=6), 3, exact_max=10)
    assert (used_small, used_big) == ("exact", "hnsw")
    assert small.ids.shape == (10, 3) and big.ids.shape == (11, 3)
    with pytest.raises(ValueError):
        topk(CLUSTERS, 2, method="lsh")


def test_bad_arguments():
    with pytest.raises(ValueError):
        exact_topk(CLUSTERS, 0)
    with pytest.raises(ValueError):
        exact_topk(CLUSTERS, 2, queries=np.ones((1, 4)))
    with pytest.raises(ValueError):
        exact_topk(CLUSTERS, 2, device="tpu")
    with pytest.raises(ValueError, match="engine"):
        exact_topk(CLUSTERS, 2, engine="annoy")
    with pytest.raises(ValueError):
        exact_topk(CLUSTERS, 0, engine="torch")
    with pytest.raises(ValueError, match="dimensions"):
        exact_topk(CLUSTERS, 2, queries=np.ones((1, 4)), engine="torch")


@pytest.mark.skipif(hasattr(faiss, "StandardGpuResources"), reason="this faiss has CUDA")
def test_cuda_without_faiss_gpu_fails_clearly():
    with pytest.raises(RuntimeError, match="faiss-gpu is not installed"):
        exact_topk(CLUSTERS, 2, device="cuda", engine="faiss")


def test_cuda_without_a_gpu_fails_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        exact_topk(CLUSTERS, 2, device="cuda")  # engine auto: torch on CUDA


@pytest.mark.parametrize(("n", "d", "k", "batch_size", "queries"),
                         [(3000, 64, 50, 8192, False), (1000, 32, 10, 7, False), (800, 16, 5, 64, True)])
def test_torch_engine_finds_what_faiss_finds(n, d, k, batch_size, queries):
    """The torch path (what CUDA runs, here on CPU torch) against FAISS's exact search on random vectors."""
    rng = np.random.default_rng(n)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    vectors[rng.choice(n, 5, replace=False)] = 0.0
    q = rng.normal(size=(200, d)) if queries else None
    ours = exact_topk(vectors, k, queries=q, batch_size=batch_size, engine="torch")
    ref = exact_topk(vectors, k, queries=q, engine="faiss")
    np.testing.assert_allclose(ours.scores, ref.scores, atol=1e-5)
    # Same ids in the same order, except where two neighbours' cosines are within float32 noise of each other.
    with np.errstate(invalid="ignore"):  # -inf - -inf in the rows of zero vectors
        gaps = np.abs(np.diff(ref.scores, axis=1))
    clear = np.ones_like(ref.ids, dtype=bool)
    clear[:, 1:] &= gaps > 1e-5
    clear[:, :-1] &= gaps > 1e-5
    assert clear.mean() > 0.98
    np.testing.assert_array_equal(ours.ids[clear], ref.ids[clear])
    assert ((ours.ids == -1) == (ref.ids == -1)).all()


def test_torch_engine_on_cuda_finds_what_faiss_finds_on_the_cpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no GPU here")
    vectors = np.random.default_rng(9).normal(size=(5000, 64)).astype(np.float32)
    gpu = exact_topk(vectors, 50, device="cuda")  # engine auto: torch on CUDA
    cpu = exact_topk(vectors, 50, device="cpu")  # engine auto: FAISS
    np.testing.assert_allclose(gpu.scores, cpu.scores, atol=1e-4)
    assert (gpu.ids == cpu.ids).mean() > 0.99  # TF32 or a different summation order may swap near-ties


def test_device_auto_follows_recsys_device(settings):
    import torch

    settings.RECSYS_DEVICE = "cpu"
    found = exact_topk(CLUSTERS, 2, device="auto")
    assert {j for j, _ in found.row(0)} == SAME_CLUSTER[0]
    if not torch.cuda.is_available():
        settings.RECSYS_DEVICE = "cuda"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            topk(CLUSTERS, 2, method="exact", device="auto")


def test_importing_knn_does_not_import_faiss_or_torch():
    code = "import sys, pairing.knn; print(sorted({'faiss', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
