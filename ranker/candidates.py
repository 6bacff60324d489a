"""Track picks for many users when the catalogue is too large to score whole: candidates first, then exact scores.

The dense path scores every track for every user (users × tracks): right for the real sample, quadratic at MPD
scale (1M users × 2.26M tracks). Here, for a batch of users:

1. each factor part of the blend (ALS, BPR) proposes its ``per_part`` best tracks by inner product, from a FAISS
   index over its item vectors (exact up to ``exact_max`` tracks, IVF above), and gives its row range over the
   whole catalogue: the best score is the first hit, the worst is the first hit of the same index asked with −u;
2. item-kNN's scores are computed sparse (only the tracks that co-occur with the user's), and it proposes its
   ``per_part`` best;
3. the union, minus the user's own tracks, is scored exactly by every part, min-max scaled with that part's row
   range (as ``Blend`` scales a dense row), weighted and summed; the best ``k`` are kept.

The answer is the dense path's whenever the dense top ``k`` lies in the union (and, above ``exact_max``, when IVF
finds the true extremes). ``bench/scale.py`` and ``tests/ranker/test_candidates.py`` measure how often it does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .recommenders import ALS, BPR, Blend, ItemKNN

PER_PART = 200
EXACT_MAX = 200_000  # tracks: above this, the factor indexes are IVF (approximate) instead of flat (exact)
PER_LIST = 1000  # tracks per IVF list: the scan per query stays the same size however large the catalogue
NPROBE = 8


class Unsupported(TypeError):
    """The recommender is not a blend of parts this module knows how to score by candidates."""


class _FactorPart:
    """One factor model (ALS, or BPR with its item bias) as a FAISS inner-product index over its tracks."""

    def __init__(self, model: ALS | BPR, weight: float, exact_max: int) -> None:
        import faiss

        self.weight = weight
        self.users = np.asarray(model.user_factors, dtype=np.float32)
        items = np.asarray(model.item_factors, dtype=np.float32)
        self.bias = isinstance(model, BPR)
        if self.bias:  # u·f + b as one inner product: items [f, b], queries [u, 1]
            items = np.hstack([items, np.asarray(model.item_bias, dtype=np.float32)[:, None]])
        self.items = np.ascontiguousarray(items)
        dim = self.items.shape[1]
        n = len(self.items)
        if n <= exact_max:
            self.index = faiss.IndexFlatIP(dim)
        else:
            # IVF, not HNSW: every worker builds the index once per model version, and HNSW took minutes on 571k
            # tracks where IVF's k-means on a sample takes seconds (docs/SCALING.md). Lists of about PER_LIST
            # tracks, NPROBE of them scanned: a query costs the same at 500k tracks as at 2M.
            nlist = int(min(max(n // PER_LIST, 64), 16384))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.niter = 10
            sample = np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False)
            self.index.train(self.items[np.sort(sample)])
            self.index.nprobe = NPROBE
        self.index.add(self.items)

    def queries(self, rows: np.ndarray) -> np.ndarray:
        q = self.users[rows]
        if self.bias:
            q = np.hstack([q, np.ones((len(q), 1), dtype=np.float32)])
        return np.ascontiguousarray(q)

    def propose(self, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(candidate ids rows × n, the queries, each row's max, each row's min) over the whole catalogue."""
        q = self.queries(rows)
        scores, ids = self.index.search(q, min(n, len(self.items)))
        low, _ = self.index.search(np.ascontiguousarray(-q), 1)
        return ids, q, scores[:, 0], -low[:, 0]


class CandidateScorer:
    """``recommend(rows, user_items, k)`` for trained users of a served blend, by candidates and exact re-scoring."""

    def __init__(self, recommender: Any, *, per_part: int = PER_PART, exact_max: int = EXACT_MAX) -> None:
        if not isinstance(recommender, Blend):
            raise Unsupported(f"{type(recommender).__name__} is not a blend")
        self.per_part = per_part
        self.factor_parts: list[_FactorPart] = []
        self.knn: tuple[ItemKNN, float] | None = None
        for model, weight in recommender.components:
            if not weight:
                continue
            if isinstance(model, ItemKNN):
                self.knn = (model, weight)
            elif isinstance(model, ALS | BPR):
                self.factor_parts.append(_FactorPart(model, weight, exact_max))
            else:
                raise Unsupported(f"no candidate scoring for {type(model).__name__}")
        self.n_items = recommender.n_items

    def recommend(self, rows: np.ndarray, user_items: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` track ids and blend scores per row (ids -1 / scores -inf where fewer), liked tracks excluded."""
        rows = np.asarray(rows, dtype=np.int64)
        liked = user_items.tocsr()
        proposals = []  # per part: (weight, ids, queries, hi, lo)
        for part in self.factor_parts:
            ids, q, hi, lo = part.propose(rows, self.per_part + int(np.diff(liked.indptr).max(initial=0)))
            proposals.append((part, ids, q, hi, lo))
        knn_scores = knn_hi = knn_lo = None
        if self.knn is not None:
            knn_scores = self._knn_sparse(liked)
            counts = np.diff(knn_scores.indptr)
            knn_hi = np.zeros(len(rows), dtype=np.float32)
            has = counts > 0
            knn_hi[has] = np.maximum.reduceat(knn_scores.data, knn_scores.indptr[:-1][has]) if has.any() else 0
            knn_lo = np.zeros(len(rows), dtype=np.float32)  # a track that co-occurs with none of the user's scores 0
            for r in np.flatnonzero(counts >= self.n_items):  # every track co-occurs: the row's own minimum
                knn_lo[r] = knn_scores.data[knn_scores.indptr[r]:knn_scores.indptr[r + 1]].min()
        out_ids = np.full((len(rows), k), -1, dtype=np.int64)
        out_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
        for r in range(len(rows)):
            mine = liked.indices[liked.indptr[r]:liked.indptr[r + 1]]
            pools = [ids[r][ids[r] >= 0] for _, ids, *_ in proposals]
            if knn_scores is not None:
                start, end = knn_scores.indptr[r], knn_scores.indptr[r + 1]
                data, cols = knn_scores.data[start:end], knn_scores.indices[start:end]
                if len(cols) > self.per_part:
                    cols = cols[np.argpartition(-data, self.per_part - 1)[:self.per_part]]
                pools.append(cols)
            candidates = np.setdiff1d(np.concatenate(pools) if pools else np.zeros(0, np.int64), mine)
            if len(candidates) == 0:
                continue
            total = np.zeros(len(candidates), dtype=np.float32)
            for part, _, q, hi, lo in proposals:
                total += part.weight * _scaled(part.items[candidates] @ q[r], lo[r], hi[r])
            if knn_scores is not None:
                start, end = knn_scores.indptr[r], knn_scores.indptr[r + 1]
                cols, data = knn_scores.indices[start:end], knn_scores.data[start:end]
                where = np.searchsorted(cols, candidates)
                found = (where < len(cols)) & (cols[np.minimum(where, len(cols) - 1)] == candidates)
                raw = np.where(found, data[np.minimum(where, len(cols) - 1)], 0.0).astype(np.float32)
                total += self.knn[1] * _scaled(raw, knn_lo[r], knn_hi[r])
            top = np.argsort(-total, kind="stable")[:k]
            out_ids[r, :len(top)] = candidates[top]
            out_scores[r, :len(top)] = total[top]
        return out_ids, out_scores

    def _knn_sparse(self, liked: sp.csr_matrix) -> sp.csr_matrix:
        """Item-kNN's exact scores as a sparse matrix with sorted column indices: only co-occurring tracks."""
        knn = self.knn[0]
        seeds = sp.csr_matrix(liked, dtype=np.float32, copy=True)
        seeds.data[:] = 1.0
        through_users = (seeds @ sp.diags(knn._seed_w)) @ knn._matrix_t
        scores = (through_users @ knn.matrix_).tocsr()
        scores.sum_duplicates()
        scores.sort_indices()
        scores.data *= knn._cand_w[scores.indices]
        return scores


def _scaled(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Min-max scaling with a row's range over the whole catalogue, as ``blend.minmax_rows`` scales a dense row."""
    span = hi - lo
    if not np.isfinite(span) or span <= 0:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - lo) / span).astype(np.float32)
