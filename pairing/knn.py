"""Cosine top-K "taste buddies": exact (FAISS ``IndexFlatIP``, or torch on a GPU) or approximate (FAISS IVF, HNSW).

A user's taste is the L2-normalised mean of the vectors of the tracks they like
(``ranker.recommenders.vectors.taste_vectors``), so inner product on normalised rows is cosine similarity.
Exact search has two engines with the same answers: FAISS (the CPU default) and torch
(batched ``queries @ vectors.T`` and ``torch.topk``), which takes over when the device is CUDA; approximate search
is FAISS on the CPU. faiss and torch are imported inside the functions: importing this module must stay cheap for
the web process, which never searches.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from ranker.recommenders.device import resolve_device
from ranker.recommenders.vectors import normalize_rows

log = logging.getLogger(__name__)

METHODS = ("exact", "ivf", "hnsw")
DEVICES = ("cpu", "cuda")
ENGINES = ("auto", "faiss", "torch")
# Most cosine scores one torch batch holds (1 GiB of float32): rows per batch shrink as the index grows.
TORCH_SCORES_PER_BATCH = 1 << 28


@dataclass(frozen=True)
class Neighbours:
    """Top-k per query row, best first: ``ids`` (int64, -1 where fewer than k were found) and cosine ``scores``
    (float32, -inf where the id is -1). The timings let callers and the benchmark tell index building from search.
    """

    ids: np.ndarray
    scores: np.ndarray
    build_seconds: float = 0.0
    search_seconds: float = 0.0

    def row(self, i: int) -> list[tuple[int, float]]:
        """(id, score) pairs of query ``i``, without the -1 padding."""
        found = self.ids[i] >= 0
        return list(zip(self.ids[i][found].tolist(), self.scores[i][found].tolist(), strict=True))


def faiss_threads(n: int) -> None:
    """Cap FAISS's OpenMP threads (it takes every core by default, starving the web and worker processes)."""
    import faiss  # lazy: faiss takes 0.5 s to import (measured); only search needs it

    faiss.omp_set_num_threads(n)


def exact_topk(vectors: np.ndarray, k: int, *, queries: np.ndarray | None = None, exclude_self: bool = True,
               batch_size: int = 8192, device: str = "cpu", engine: str = "auto",
               show_progress: bool = False) -> Neighbours:
    """Exact cosine top-k of ``queries`` (default: every row of ``vectors``) among the rows of ``vectors``.

    ``exclude_self`` only applies when ``queries`` is None: a user is not their own buddy. Zero rows (users with no
    items, whose cosine is undefined) are never returned, and zero queries get only -1.

    ``device``: "cpu", "cuda" or "auto" (``ranker.recommenders.device.resolve_device``: ``RECSYS_DEVICE``,
    a GPU if torch sees one). ``engine``: "faiss", "torch", or "auto" = torch on CUDA (no faiss-gpu needed),
    FAISS on the CPU.
    """
    device, engine = _device_and_engine(device, engine)
    if engine == "torch":
        return _torch_exact(vectors, k, queries=queries, exclude_self=exclude_self, batch_size=batch_size,
                            device=device, show_progress=show_progress)
    import faiss  # lazy: faiss takes 0.5 s to import (measured); only search needs it

    return _run(vectors, k, "exact", lambda d, n: faiss.IndexFlatIP(d), queries=queries, exclude_self=exclude_self,
                batch_size=batch_size, device=device, show_progress=show_progress)


def _device_and_engine(device: str, engine: str) -> tuple[str, str]:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if device == "auto":
        device = resolve_device(None).type
    if device not in DEVICES:
        raise ValueError(f"device must be one of {(*DEVICES, 'auto')}, not {device!r}")
    if engine == "auto":
        engine = "torch" if device == "cuda" else "faiss"
    return device, engine


def ann_topk(vectors: np.ndarray, k: int, *, method: str, exclude_self: bool = True, nlist: int | None = None,
             nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, batch_size: int = 8192, random_state: int = 0,
             device: str = "cpu", show_progress: bool = False) -> Neighbours:
    """Approximate cosine top-k of every row among the others, for when exact search is too slow (it is O(n²)).

    ``method="ivf"``: ``IndexIVFFlat`` with ``nlist`` inner-product clusters (default about 4·sqrt(n), capped so
    each centroid has 39 training points), k-means seeded with ``random_state``, ``nprobe`` of them searched.
    ``method="hnsw"``: ``IndexHNSWFlat`` graph with ``hnsw_m`` links per node searched with ``ef_search``
    candidates (FAISS has no seed for its level draws; a multi-threaded build may differ from run to run).
    Zero rows and self are handled as in :func:`exact_topk`.
    """
    import faiss  # lazy: faiss takes 0.5 s to import (measured); only search needs it

    if method == "ivf":
        def build(d: int, n: int) -> Any:
            lists = nlist if nlist is not None else min(int(4 * math.sqrt(n)), n // 39)
            lists = max(1, min(lists, n))  # k-means needs at least one point per centroid
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = random_state
            index.nprobe = min(nprobe, lists)
            return index
    elif method == "hnsw":
        if device != "cpu":
            raise ValueError("FAISS has no GPU HNSW index; use method='ivf' or 'exact' on cuda, or device='cpu'")

        def build(d: int, n: int) -> Any:
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = max(ef_search, k + 1)  # fewer candidates than k would cut the result short
            return index
    else:
        raise ValueError(f"method must be 'ivf' or 'hnsw', not {method!r}")
    return _run(vectors, k, method, build, exclude_self=exclude_self, batch_size=batch_size, device=device,
                show_progress=show_progress)


def topk(vectors: np.ndarray, k: int, *, method: str = "auto", exact_max: int = 200_000, device: str = "cpu",
         **kw: Any) -> tuple[Neighbours, str]:
    """Top-k with ``method`` "exact", "ivf", "hnsw" or "auto" (exact up to ``exact_max`` rows, where it still takes
    minutes at most, else HNSW); returns the neighbours and the method used. ``kw`` goes to the chosen function.

    ``device`` is for exact search (:func:`exact_topk`: "auto" puts it on a GPU with torch where there is one);
    approximate search stays FAISS on the CPU.
    """
    if method == "auto":
        method = "exact" if len(vectors) <= exact_max else "hnsw"
    if method == "exact":
        return exact_topk(vectors, k, device=device, **kw), method
    if method in METHODS:
        return ann_topk(vectors, k, method=method, **kw), method
    raise ValueError(f"method must be one of {('auto', *METHODS)}, not {method!r}")


def recall_at_k(approx: Neighbours, exact: Neighbours) -> float:
    """Mean over queries with at least one exact neighbour of the share of exact neighbours that ``approx`` found."""
    if len(approx.ids) != len(exact.ids):
        raise ValueError(f"{len(approx.ids)} approximate rows against {len(exact.ids)} exact rows")
    hits, wanted = [], []
    for start in range(0, len(exact.ids), 4096):  # chunks keep the n×k×k comparison small
        a, e = approx.ids[start : start + 4096], exact.ids[start : start + 4096]
        found = ((a[:, :, None] == e[:, None, :]) & (e[:, None, :] >= 0)).any(axis=1)
        hits.append(found.sum(axis=1))
        wanted.append((e >= 0).sum(axis=1))
    hit, want = np.concatenate(hits), np.concatenate(wanted)
    rows = want > 0
    return float(np.mean(hit[rows] / want[rows])) if rows.any() else float("nan")


def _run(vectors: np.ndarray, k: int, method: str, build: Any, *, queries: np.ndarray | None = None,
         exclude_self: bool, batch_size: int, device: str, show_progress: bool) -> Neighbours:
    """Index the non-zero rows with ``build(d, n)``, then search the non-zero queries in batches."""
    import faiss  # lazy: faiss takes 0.5 s to import (measured); only search needs it

    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be positive, got k={k}, batch_size={batch_size}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if device == "cuda" and not hasattr(faiss, "StandardGpuResources"):
        raise RuntimeError("faiss-gpu is not installed; this faiss build has no CUDA support (use device='cpu')")
    started = time.perf_counter()
    base, query, drop_self, indexed, active, ids, scores = _search_setup(vectors, queries, k, exclude_self)
    build_seconds = search_seconds = 0.0
    if len(indexed) and len(active):
        # Built on the CPU, where k-means is seeded, then copied to the device for the expensive part: the search.
        index = build(base.shape[1], len(indexed))
        if not index.is_trained:
            index.train(base[indexed])  # FAISS samples 256 points per centroid itself, with index.cp.seed
        index.add(base[indexed])
        resources, index = _to_device(index, device)
        build_seconds = time.perf_counter() - started
        want = k + 1 if drop_self else k
        with tqdm(total=len(active), desc=f"knn {method}", unit="users", disable=not show_progress) as bar:
            for start in range(0, len(active), batch_size):
                rows = active[start : start + batch_size]
                got_scores, got = index.search(query[rows], want)
                got = np.where(got >= 0, indexed[np.maximum(got, 0)], -1)
                if drop_self:
                    # Stable sort moves self (if found) to the end; if it was not found the k+1-th goes instead.
                    keep = np.argsort(got == rows[:, None], axis=1, kind="stable")[:, :k]
                    got, got_scores = np.take_along_axis(got, keep, 1), np.take_along_axis(got_scores, keep, 1)
                ids[rows], scores[rows] = got, got_scores
                bar.update(len(rows))
        search_seconds = time.perf_counter() - started - build_seconds
        del index, resources  # a GPU index must go before its resources
    scores[ids < 0] = -np.inf
    log.info("knn %s on %s: n=%d d=%d k=%d queries=%d build %.2fs search %.2fs", method, device, len(base),
             base.shape[1], k, len(active), build_seconds, search_seconds)
    return Neighbours(ids, scores, build_seconds, search_seconds)


def _search_setup(vectors: np.ndarray, queries: np.ndarray | None, k: int, exclude_self: bool) -> tuple:
    """What every exact or approximate search starts from: unit rows, whether self is dropped, the non-zero rows
    to index and to query, and the (queries × k) answers, empty. Zero rows are kept out of the index rather than
    filtered afterwards, so they can never use up a place in k."""
    base = normalize_rows(vectors)
    self_search = queries is None
    query = base if self_search else normalize_rows(queries)
    if query.shape[1] != base.shape[1]:
        raise ValueError(f"queries have {query.shape[1]} dimensions, vectors {base.shape[1]}")
    ids = np.full((len(query), k), -1, dtype=np.int64)
    scores = np.full((len(query), k), -np.inf, dtype=np.float32)
    return (base, query, self_search and exclude_self, np.flatnonzero(base.any(axis=1)),
            np.flatnonzero(query.any(axis=1)), ids, scores)


def _torch_exact(vectors: np.ndarray, k: int, *, queries: np.ndarray | None, exclude_self: bool, batch_size: int,
                 device: str, show_progress: bool) -> Neighbours:
    """:func:`exact_topk` in torch: the non-zero rows on ``device``, then batched ``Q @ X.T`` and ``torch.topk``."""
    import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be positive, got k={k}, batch_size={batch_size}")
    dev = resolve_device(device)  # a clear error for cuda without a GPU
    started = time.perf_counter()
    base, query, drop_self, indexed, active, ids, scores = _search_setup(vectors, queries, k, exclude_self)
    build_seconds = search_seconds = 0.0
    if len(indexed) and len(active):
        with torch.no_grad():
            index = torch.from_numpy(base[indexed]).to(dev)
            n = len(indexed)
            want = min(k, n)
            step = max(1, min(batch_size, TORCH_SCORES_PER_BATCH // n))
            build_seconds = time.perf_counter() - started
            with tqdm(total=len(active), desc="knn exact (torch)", unit="users", disable=not show_progress) as bar:
                for start in range(0, len(active), step):
                    rows = active[start:start + step]
                    sims = torch.from_numpy(query[rows]).to(dev) @ index.T
                    if drop_self:  # a query's own row, where it is indexed, can never be its neighbour
                        at = np.minimum(np.searchsorted(indexed, rows), n - 1)
                        own = np.flatnonzero(indexed[at] == rows)
                        sims[torch.from_numpy(own).to(dev), torch.from_numpy(at[own]).to(dev)] = -torch.inf
                    top_scores, top = torch.topk(sims, want, dim=1)
                    top_scores, top = top_scores.cpu().numpy(), top.cpu().numpy()
                    ids[rows, :want] = np.where(np.isneginf(top_scores), -1, indexed[top])
                    scores[rows, :want] = top_scores
                    bar.update(len(rows))
            del index
        search_seconds = time.perf_counter() - started - build_seconds
    scores[ids < 0] = -np.inf
    log.info("knn exact (torch) on %s: n=%d d=%d k=%d queries=%d search %.2fs", dev, len(base), base.shape[1], k,
             len(active), search_seconds)
    return Neighbours(ids, scores, build_seconds, search_seconds)


def _to_device(index: Any, device: str) -> tuple[Any, Any]:
    """(GPU resources or None, the index on ``device``); the resources must outlive the index."""
    import faiss  # lazy: faiss takes 0.5 s to import (measured); only search needs it

    if device == "cpu":
        return None, index
    resources = faiss.StandardGpuResources()
    return resources, faiss.index_cpu_to_gpu(resources, 0, index)
