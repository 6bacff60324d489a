"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008) through the ``implicit`` library, under our contract.

A well-kept compiled implementation (conjugate-gradient ALS) beats anything we would hand-write; this class
only adapts it: confidence ``alpha`` on every positive (``implicit`` scales the binary matrix by ``alpha``) and
fold-in of unseen rows by one exact least-squares step against the fixed item factors (what ``implicit``'s
``recalculate_user`` does).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from .base import Callback, Recommender, check_fitted, check_params, cosine_top, sliced
from .device import resolve_device

log = logging.getLogger(__name__)


class ALS(Recommender):
    name = "als"

    def __init__(self, *, factors: int = 128, regularization: float = 0.01, alpha: float = 20.0,
                 iterations: int = 15, threads: int | None = None, device: str = "cpu",
                 random_state: int = 0) -> None:
        check_params("als", factors=(factors, factors >= 1), regularization=(regularization, regularization >= 0),
                     alpha=(alpha, alpha > 0), iterations=(iterations, iterations >= 1))
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.threads, self.device, self.random_state = iterations, threads, device, random_state
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.metrics_: dict[str, Any] = {}

    @property
    def n_items(self) -> int:
        check_fitted(self, "item_factors")
        return self.item_factors.shape[0]

    def fit(self, interactions: sp.csr_matrix, *, negatives: sp.csr_matrix | None = None,
            show_progress: bool = False, callback: Callback | None = None) -> ALS:
        device = resolve_device(self.device).type
        # lazy: implicit takes 0.7 s to import (measured); only ALS training needs it
        import implicit.gpu

        gpu = device == "cuda" and implicit.gpu.HAS_CUDA
        if device == "cuda" and not gpu:
            log.warning("ALS: this implicit build has no CUDA support; training on the CPU")
        if gpu:
            from implicit.gpu.als import AlternatingLeastSquares  # lazy: as above
        else:
            from implicit.cpu.als import AlternatingLeastSquares  # lazy: as above
        binary = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
        binary.data[:] = 1.0
        started = time.perf_counter()

        def report(iteration: int, elapsed: float, *_: Any) -> None:
            if callback:
                callback(iteration + 1, time.perf_counter() - started, {})

        with threadpool_limits(1, "blas"):  # implicit's own threads do the work; BLAS threads would fight them
            options = {} if gpu else {"num_threads": self.threads or 0}
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                            alpha=self.alpha, iterations=self.iterations,
                                            random_state=self.random_state, calculate_training_loss=False, **options)
            model.fit(binary, show_progress=show_progress, callback=report)
        if gpu:
            model = model.to_cpu()
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        self.metrics_ = {"seconds": round(time.perf_counter() - started, 3), "iterations": self.iterations,
                         "device": "cuda" if gpu else "cpu"}
        return self

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """Exact ALS user vectors for unseen rows: (YᵀY + (α−1)YᵤᵀYᵤ + λI)⁻¹ α Yᵤᵀ 1 (confidence α, preference 1)."""
        check_fitted(self, "item_factors")
        Y = self.item_factors
        gram = self._gram()
        out = np.zeros((user_items.shape[0], Y.shape[1]), dtype=np.float32)
        rows = user_items.tocsr()
        for r in range(rows.shape[0]):
            items = rows.indices[rows.indptr[r]:rows.indptr[r + 1]]
            if len(items) == 0:
                continue
            Yu = Y[items]
            A = gram + (self.alpha - 1.0) * Yu.T @ Yu + self.regularization * np.eye(Y.shape[1], dtype=np.float32)
            out[r] = np.linalg.solve(A, self.alpha * Yu.sum(axis=0))
        return out

    def _gram(self) -> np.ndarray:
        """YᵀY, the same for every fold-in of a fitted model: computed once (201k × 128 items: 60 ms a request)."""
        cached = getattr(self, "_gram_cache", None)
        if cached is None or cached[0] is not self.item_factors:
            cached = (self.item_factors, self.item_factors.T @ self.item_factors)
            self._gram_cache = cached
        return cached[1]

    def score(self, userids: np.ndarray | None, user_items: sp.csr_matrix) -> np.ndarray:
        check_fitted(self, "item_factors")
        vectors = self.fold_in(user_items) if userids is None else self.user_factors[userids]
        return (vectors @ self.item_factors.T).astype(np.float32)

    def score_items(self, userids: np.ndarray | None, user_items: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
        check_fitted(self, "item_factors")
        vectors = self.fold_in(user_items) if userids is None else self.user_factors[userids]
        return (vectors @ sliced(self, "item_factors", items).T).astype(np.float32)

    def similar_items(self, itemid: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        check_fitted(self, "item_factors")
        return cosine_top(self.item_factors, itemid, k)

    def similar_users(self, userid: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        check_fitted(self, "user_factors")
        return cosine_top(self.user_factors, userid, k)

    def get_params(self) -> dict[str, Any]:
        keys = ("factors", "regularization", "alpha", "iterations", "threads", "device", "random_state")
        return {key: getattr(self, key) for key in keys}

    def get_state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors, self.item_factors = state["user_factors"], state["item_factors"]
