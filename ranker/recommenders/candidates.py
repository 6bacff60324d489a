"""Track picks for many users when the catalogue is too large to score whole: candidates first, then exact scores.

The dense path scores every track for every user (users × tracks): right for the real sample, quadratic at MPD
scale (1M users × 2.26M tracks). Here, for a batch of users:

1. each factor part of the blend (ALS, BPR) proposes its ``per_part`` best tracks by inner product, from a FAISS
   index over its item vectors (exact up to ``exact_max`` tracks, IVF above), and gives its row range over the
   whole catalogue: the best score is the first hit, the worst is the first hit of the same index asked with −u;
2. item-kNN scores with each seed track's ``NEIGHBOURS`` best co-occurring tracks (the usual truncated item-item
   kNN: exact co-occurrence through every playlist grows with the number of playlists), rows computed once per
   seed track and kept by the worker, and proposes its ``per_part`` best;
3. the union, minus the user's own tracks, is scored by every part (the factor parts exactly), min-max scaled
   with that part's row range (as ``Blend`` scales a dense row), weighted and summed; the best ``k`` are kept.

The answer is the dense path's whenever the dense top ``k`` lies in the union, item-kNN's truncation changes no
rank that matters, and (above ``exact_max``) IVF finds the true extremes. ``bench/scale.py`` and
``tests/ranker/test_candidates.py`` measure how often it does.

On a GPU, :class:`DeviceScorer` needs no candidates: it scores the whole catalogue for a chunk of users as one
matrix product per factor part, which a GPU does faster than the CPU searches its index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ranker.recommenders import ALS, BPR, Blend, ItemKNN
from ranker.recommenders.ann import EXACT_MAX, inner_product_index

PER_PART = 200
NEIGHBOURS = 100  # co-occurring tracks kept per seed track for item-kNN


class Unsupported(TypeError):
    """The recommender is not a blend of parts this module knows how to score by candidates."""


def _parts(recommender: Any, neighbours: int) -> tuple[TruncatedKNN | None, list[tuple[ALS | BPR, float]]]:
    """A blend's weighted parts as what both scorers use: item-kNN truncated to ``neighbours`` per seed track, and
    the factor models; ``Unsupported`` for anything else."""
    if not isinstance(recommender, Blend):
        raise Unsupported(f"{type(recommender).__name__} is not a blend")
    knn, factors = None, []
    for model, weight in recommender.components:
        if not weight:
            continue
        if isinstance(model, ItemKNN):
            knn = TruncatedKNN(model, weight, neighbours)
        elif isinstance(model, ALS | BPR):
            factors.append((model, weight))
        else:
            raise Unsupported(f"no scoring by parts for {type(model).__name__}")
    return knn, factors


def _vectors(model: ALS | BPR) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors, item vectors) whose inner product is the model's score: BPR's u·f + b as [u, 1]·[f, b]."""
    users = np.asarray(model.user_factors, dtype=np.float32)
    items = np.asarray(model.item_factors, dtype=np.float32)
    if isinstance(model, BPR):
        users = np.hstack([users, np.ones((len(users), 1), dtype=np.float32)])
        items = np.hstack([items, np.asarray(model.item_bias, dtype=np.float32)[:, None]])
    return np.ascontiguousarray(users), np.ascontiguousarray(items)


class _FactorPart:
    """One factor model (ALS, or BPR with its item bias) as a FAISS inner-product index over its tracks."""

    def __init__(self, model: ALS | BPR, weight: float, exact_max: int) -> None:
        self.weight = weight
        self.users, self.items = _vectors(model)
        self.index = inner_product_index(self.items, exact_max=exact_max)

    def queries(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.users[rows])

    def propose(self, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(candidate ids rows × n, the queries, each row's max, each row's min) over the whole catalogue."""
        q = self.queries(rows)
        scores, ids = self.index.search(q, min(n, len(self.items)))
        low, _ = self.index.search(np.ascontiguousarray(-q), 1)
        return ids, q, scores[:, 0], -low[:, 0]


class CandidateScorer:
    """``recommend(rows, user_items, k)`` for trained users of a served blend, by candidates and exact re-scoring."""

    def __init__(self, recommender: Any, *, per_part: int = PER_PART, exact_max: int = EXACT_MAX,
                 neighbours: int = NEIGHBOURS) -> None:
        self.per_part = per_part
        self.knn, factors = _parts(recommender, neighbours)
        self.factor_parts = [_FactorPart(model, weight, exact_max) for model, weight in factors]
        self.n_items = recommender.n_items

    def recommend(self, rows: np.ndarray, user_items: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` track ids and blend scores per row (ids -1 / scores -inf where fewer), liked tracks excluded."""
        rows = np.asarray(rows, dtype=np.int64)
        liked = user_items.tocsr()
        proposals = []  # per part: (weight, ids, queries, hi, lo)
        for part in self.factor_parts:
            ids, q, hi, lo = part.propose(rows, self.per_part + int(np.diff(liked.indptr).max(initial=0)))
            proposals.append((part, ids, q, hi, lo))
        knn_scores = knn_hi = None
        if self.knn is not None:
            knn_scores = self.knn.sparse(liked)
            counts = np.diff(knn_scores.indptr)
            knn_hi = np.zeros(len(rows), dtype=np.float32)
            has = counts > 0
            if has.any():
                knn_hi[has] = np.maximum.reduceat(knn_scores.data, knn_scores.indptr[:-1][has])
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
                total += self.knn.weight * _scaled(raw, 0.0, knn_hi[r])  # an unrelated track scores 0
            top = np.argsort(-total, kind="stable")[:k]
            out_ids[r, :len(top)] = candidates[top]
            out_scores[r, :len(top)] = total[top]
        return out_ids, out_scores


class DeviceScorer:
    """Exact blend scores on a torch device (a GPU), for catalogues too large to score whole on the CPU.

    For a chunk of users, each factor part's scores over the whole catalogue are one matrix product on the device,
    min-max scaled by the row's own range (as ``Blend`` scales a dense row); item-kNN's truncated rows
    (:class:`TruncatedKNN`, computed on the CPU) are scattered into a dense block and scaled the same way; the
    weighted sum, with the user's own tracks masked, gives the top ``k`` by ``torch.topk``. No candidates, no
    index: the answer is the dense path's wherever item-kNN's truncation changes nothing. Chunks are sized so that
    three score blocks fit in ``score_bytes`` (on CUDA, a quarter of the free memory, at most 8 GiB).
    """

    def __init__(self, recommender: Any, *, device: Any, neighbours: int = NEIGHBOURS,
                 score_bytes: int | None = None) -> None:
        import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

        self.device = torch.device(device)
        self.knn, factors = _parts(recommender, neighbours)
        self.parts = [(weight, *(torch.as_tensor(v, device=self.device) for v in _vectors(model)))
                      for model, weight in factors]  # (weight, user vectors, item vectors) on the device
        self.n_items = recommender.n_items
        if score_bytes is None:
            score_bytes = 512 * 2**20
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                score_bytes = min(8 * 2**30, free // 4)
        self.chunk = int(max(1, score_bytes // (3 * 4 * max(1, self.n_items))))

    def recommend(self, rows: np.ndarray, user_items: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` track ids and blend scores per row (ids -1 / scores -inf where fewer), liked tracks excluded."""
        import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

        rows = np.asarray(rows, dtype=np.int64)
        liked = user_items.tocsr()
        knn = self.knn.sparse(liked) if self.knn is not None else None
        out_ids = np.full((len(rows), k), -1, dtype=np.int64)
        out_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
        top_k = min(k, self.n_items)
        with torch.no_grad():
            for start in range(0, len(rows), self.chunk):
                stop = min(start + self.chunk, len(rows))
                index = torch.as_tensor(rows[start:stop], device=self.device)
                total = torch.zeros((stop - start, self.n_items), device=self.device)
                for weight, users, items in self.parts:
                    total.add_(_minmax_(users[index] @ items.T), alpha=weight)
                if knn is not None:
                    block = knn[start:stop].tocoo()
                    dense = torch.zeros_like(total)
                    dense[self._tensor(block.row), self._tensor(block.col)] = torch.as_tensor(
                        block.data, dtype=torch.float32, device=self.device)
                    total.add_(_minmax_(dense), alpha=self.knn.weight)
                mine = liked[start:stop].tocoo()
                total[self._tensor(mine.row), self._tensor(mine.col)] = -torch.inf
                scores, ids = torch.topk(total, top_k, dim=1)
                scores, ids = scores.cpu().numpy(), ids.cpu().numpy()
                ids[~np.isfinite(scores)] = -1
                out_ids[start:stop, :top_k], out_scores[start:stop, :top_k] = ids, scores
        return out_ids, out_scores

    def _tensor(self, values: np.ndarray) -> Any:
        import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

        return torch.as_tensor(values.astype(np.int64), device=self.device)


def _minmax_(scores: Any) -> Any:
    """``blend.minmax_rows`` in place on a torch block: each row scaled to [0, 1] by its range, a flat row to 0."""
    lo = scores.min(dim=1, keepdim=True).values
    span = scores.max(dim=1, keepdim=True).values - lo
    span[span <= 0] = 1.0
    return scores.sub_(lo).div_(span)


class TruncatedKNN:
    """Item-kNN scores from each seed track's ``neighbours`` best co-occurring tracks, rows kept once computed."""

    def __init__(self, model: ItemKNN, weight: float, neighbours: int) -> None:
        self.model, self.weight, self.n_neighbours = model, weight, neighbours
        self.rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # seed track → (tracks, score parts)

    def sparse(self, liked: sp.csr_matrix) -> sp.csr_matrix:
        """The scores as a sparse matrix with sorted column indices (the sum of each row's seeds' neighbour
        rows); the rows of seeds not seen before are computed in one product and kept."""
        missing = np.asarray([s for s in np.unique(liked.indices).tolist() if s not in self.rows], dtype=np.int64)
        for start in range(0, len(missing), 2048):
            part = missing[start:start + 2048]
            self.rows.update(zip(part.tolist(), self.model.top_neighbours(part, self.n_neighbours), strict=True))
        indptr, cols, vals = [0], [], []
        for r in range(liked.shape[0]):
            seeds = liked.indices[liked.indptr[r]:liked.indptr[r + 1]]
            parts = [self.rows[int(s)] for s in seeds]
            c = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
            v = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.float32)
            unique, inverse = np.unique(c, return_inverse=True)
            cols.append(unique)
            vals.append(np.bincount(inverse, weights=v, minlength=len(unique)).astype(np.float32))
            indptr.append(indptr[-1] + len(unique))
        data = np.concatenate(vals) if vals else np.zeros(0, dtype=np.float32)
        indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        return sp.csr_matrix((data, indices, np.asarray(indptr)), shape=(liked.shape[0], self.model.n_items))


def _scaled(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Min-max scaling with a row's range over the whole catalogue, as ``blend.minmax_rows`` scales a dense row."""
    span = hi - lo
    if not np.isfinite(span) or span <= 0:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - lo) / span).astype(np.float32)
