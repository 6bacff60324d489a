"""Baselines that need no training loop: most popular tracks, and item co-occurrence kNN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .base import Callback, Recommender, check_fitted, topk


class Popularity(Recommender):
    """The same list for everyone: tracks by how many users hold them."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts_: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        check_fitted(self, "counts_")
        return len(self.counts_)

    def fit(self, interactions: sp.csr_matrix, *, negatives: sp.csr_matrix | None = None,
            show_progress: bool = False, callback: Callback | None = None) -> Popularity:
        self.counts_ = np.asarray((interactions > 0).sum(axis=0)).ravel().astype(np.float32)
        if callback:
            callback(1, 0.0, {})
        return self

    def score(self, userids: np.ndarray | None, user_items: sp.csr_matrix) -> np.ndarray:
        check_fitted(self, "counts_")
        return np.broadcast_to(self.counts_, (user_items.shape[0], len(self.counts_))).copy()

    def get_params(self) -> dict[str, Any]:
        return {}

    def get_state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts_}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.counts_ = state["counts"]


class ItemKNN(Recommender):
    """Item co-occurrence kNN: score(t) = Σ_{s ∈ seeds} cooc(s, t) / (f(s)^alpha · f(t)^beta).

    ``f`` is an item's number of users (playlists). ``alpha`` damps popular seeds, ``beta`` popular candidates.
    The co-occurrence matrix is never built: scores are two sparse products through the users, so memory
    stays at the size of the interactions.

    Its state *is* the training matrix. Saved alone it writes it; saved inside a model version, which stores that
    matrix once already (``ranker.training.artifacts``), it writes only its parameters and gets the matrix back at load.
    """

    name = "itemknn"
    shares_training_matrix = True  # ``save``/``load`` take the ``training_matrix`` their caller stores

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.3) -> None:
        self.alpha, self.beta = alpha, beta
        self.matrix_: sp.csr_matrix | None = None
        self.counts_: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        check_fitted(self, "matrix_")
        return self.matrix_.shape[1]

    def fit(self, interactions: sp.csr_matrix, *, negatives: sp.csr_matrix | None = None,
            show_progress: bool = False, callback: Callback | None = None) -> ItemKNN:
        matrix = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
        matrix.data[:] = 1.0
        self.matrix_ = matrix
        self.counts_ = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
        self._prepare()
        if callback:
            callback(1, 0.0, {})
        return self

    def _prepare(self) -> None:
        with np.errstate(divide="ignore"):
            self._seed_w = np.where(self.counts_ > 0, self.counts_ ** -self.alpha, 0.0).astype(np.float32)
            self._cand_w = np.where(self.counts_ > 0, self.counts_ ** -self.beta, 0.0).astype(np.float32)
        self._matrix_t = self.matrix_.T.tocsr()

    def score(self, userids: np.ndarray | None, user_items: sp.csr_matrix) -> np.ndarray:
        check_fitted(self, "matrix_")
        seeds = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
        seeds.data[:] = 1.0
        through_users = (seeds @ sp.diags(self._seed_w)) @ self._matrix_t  # rows × users
        scores = np.asarray((through_users @ self.matrix_).todense(), dtype=np.float32)
        return scores * self._cand_w

    def top_neighbours(self, items: np.ndarray, m: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each seed track in ``items``: its ``m`` best co-occurring tracks (itself included, as in ``score``)
        and what each adds to a user's score, seed weight × co-occurrences × candidate weight, best first.

        A user's ``score`` is the sum over their seeds of these rows taken whole; truncated to ``m``, it is the
        usual item-item kNN with ``m`` neighbours, whose cost per user does not grow with the number of playlists.
        """
        check_fitted(self, "matrix_")
        items = np.asarray(items, dtype=np.int64)
        cooc = (self._matrix_t[items] @ self.matrix_).tocsr()
        out = []
        for r, item in enumerate(items.tolist()):
            start, end = cooc.indptr[r], cooc.indptr[r + 1]
            cols = cooc.indices[start:end]
            values = cooc.data[start:end] * self._cand_w[cols] * self._seed_w[item]
            if len(cols) > m:
                keep = np.argpartition(-values, m - 1)[:m]
                cols, values = cols[keep], values[keep]
            order = np.argsort(-values, kind="stable")
            out.append((cols[order].astype(np.int64), values[order].astype(np.float32)))
        return out

    def similar_items(self, itemid: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        check_fitted(self, "matrix_")
        cooc = np.asarray((self._matrix_t[[itemid]] @ self.matrix_).todense(), dtype=np.float32).ravel()
        scores = cooc * self._seed_w[itemid] * self._cand_w
        scores[itemid] = -np.inf
        scores[cooc == 0] = -np.inf
        ids, top = topk(scores[None, :], k)
        keep = ids[0] >= 0
        return ids[0][keep], top[0][keep]

    def similar_users(self, userid: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Users by cosine of their item sets."""
        check_fitted(self, "matrix_")
        overlap = np.asarray((self.matrix_ @ self.matrix_[userid].T).todense()).ravel()
        sizes = np.asarray(self.matrix_.sum(axis=1)).ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            sims = overlap / np.sqrt(sizes * sizes[userid])
        sims = np.nan_to_num(sims, nan=0.0).astype(np.float32)
        sims[userid] = -np.inf
        sims[overlap == 0] = -np.inf
        ids, top = topk(sims[None, :], k)
        keep = ids[0] >= 0
        return ids[0][keep], top[0][keep]

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta}

    def get_state(self) -> dict[str, np.ndarray]:
        m = self.matrix_
        return {"indptr": m.indptr, "indices": m.indices, "shape": np.asarray(m.shape, dtype=np.int64)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if "indices" not in state:
            raise ValueError("itemknn state holds no matrix: it was saved without its training matrix; "
                             "load it with ItemKNN.load(path, training_matrix=...)")
        indices = state["indices"]
        self._use(sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, state["indptr"]),
                                shape=tuple(state["shape"])))

    def _use(self, matrix: sp.csr_matrix) -> None:
        self.matrix_ = matrix
        self.counts_ = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
        self._prepare()

    def save(self, path: str | Path, *, training_matrix: sp.csr_matrix | None = None) -> None:
        """Write ``<path>.json`` and, unless ``training_matrix`` is the matrix this model holds (same shape and
        non-zeros: the caller stores it), ``<path>.npz`` with it."""
        check_fitted(self, "matrix_")
        if training_matrix is None or not same_pattern(self.matrix_, training_matrix):
            super().save(path)
            return
        path = Path(path)
        meta = {"class": self.name, "params": self.get_params(), "metrics": getattr(self, "metrics_", {}),
                "training_matrix": True, "shape": list(self.matrix_.shape), "nnz": int(self.matrix_.nnz)}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path, *, training_matrix: sp.csr_matrix | None = None) -> ItemKNN:
        """Load what ``save`` wrote; a model saved without its matrix needs the same ``training_matrix`` back."""
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        if not meta.get("training_matrix"):
            return super().load(path)
        if training_matrix is None:
            raise ValueError(f"{path.with_suffix('.json')}: itemknn was saved without its training matrix; "
                             "pass training_matrix= to load it")
        shape, nnz = tuple(training_matrix.shape), int(training_matrix.nnz)
        if shape != tuple(meta["shape"]) or nnz != meta["nnz"]:
            raise ValueError(f"{path.with_suffix('.json')}: itemknn was fitted on a {tuple(meta['shape'])} matrix "
                             f"with {meta['nnz']} non-zeros, not the {shape} one with {nnz} given")
        model = cls(**meta["params"])
        matrix = sp.csr_matrix(training_matrix, dtype=np.float32)
        if matrix.nnz and not (matrix.data == 1.0).all():  # share the index arrays, never the caller's values
            matrix = sp.csr_matrix((np.ones(matrix.nnz, dtype=np.float32), matrix.indices, matrix.indptr),
                                   shape=matrix.shape)
        model._use(matrix)
        model.metrics_ = meta.get("metrics", {})
        return model


def same_pattern(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    """Whether two CSR matrices have the same shape and the same non-zero positions (values ignored)."""
    if a.shape != b.shape or a.nnz != b.nnz:
        return False
    a, b = a.tocsr(), b.tocsr()
    if not a.has_sorted_indices:
        a = a.sorted_indices()
    if not b.has_sorted_indices:
        b = b.sorted_indices()
    return bool(np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices))
