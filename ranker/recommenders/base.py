"""The one contract every track recommender honours (after implicit's ``RecommenderBase`` and cornac's
``Recommender``): ``fit`` on a users × items CSR matrix of indices, ``score``/``recommend`` for users or for
rows of seed items folded in, ``similar_items``, ``similar_users``, ``save`` and ``load``.

Raw ids (user ids, track URIs) never reach a recommender: ``ranker.training.data`` maps them to indices once.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

# callback(epoch, elapsed_seconds, metrics) — the job runner uses it to update its run document.
Callback = Callable[[int, float, dict[str, float]], None]

REGISTRY: dict[str, type[Recommender]] = {}


class NotFittedError(RuntimeError):
    pass


class Recommender(ABC):
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    @abstractmethod
    def fit(self, interactions: sp.csr_matrix, *, negatives: sp.csr_matrix | None = None,
            show_progress: bool = False, callback: Callback | None = None) -> Recommender:
        """Learn from ``interactions`` (users × items, non-zero = positive); ``negatives`` are hard negatives."""

    @abstractmethod
    def score(self, userids: np.ndarray | None, user_items: sp.csr_matrix) -> np.ndarray:
        """Dense scores, one row per row of ``user_items``.

        ``userids`` are the rows' trained user indices; ``None`` folds each row in from its items instead
        (a user or a seed playlist the model never saw). Higher is better; scores are only comparable within
        a row.
        """

    def score_items(self, userids: np.ndarray | None, user_items: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
        """``score``'s columns ``items`` only (rows × len(items)). Factor models compute just those columns
        (``sliced``); this default scores every item and takes them."""
        return self.score(userids, user_items)[:, items]

    @property
    @abstractmethod
    def n_items(self) -> int: ...

    def recommend(self, userid: int | np.ndarray | None, user_items: sp.csr_matrix, k: int = 10, *,
                  filter_already_liked_items: bool = True, recalculate_user: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores, best first.

        One user (int) gives 1-d arrays; an array of users (or ``None`` with ``recalculate_user``) gives
        (rows × k) arrays where missing picks are id -1 with score -inf. ``user_items`` holds the rows of these
        users: their liked items are never recommended unless ``filter_already_liked_items`` is False.
        """
        single = np.isscalar(userid)
        ids = None if recalculate_user or userid is None else np.atleast_1d(np.asarray(userid, dtype=np.int64))
        if single and user_items.shape[0] != 1:
            user_items = user_items[[int(userid)]]
        scores = self.score(ids, user_items).astype(np.float32, copy=False)
        if filter_already_liked_items:
            scores = scores.copy() if not scores.flags.writeable else scores
            rows, cols = user_items.nonzero()
            scores[rows, cols] = -np.inf
        top, top_scores = topk(scores, k)
        if single:
            keep = top[0] >= 0
            return top[0][keep], top_scores[0][keep]
        return top, top_scores

    def similar_items(self, itemid: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items most like ``itemid`` (itself excluded), by the model's own notion of similarity."""
        raise NotImplementedError(f"{self.name} has no item similarity")

    def similar_users(self, userid: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError(f"{self.name} has no user similarity")

    # Persistence: arrays in an .npz read with allow_pickle=False, parameters in a JSON beside it.
    @abstractmethod
    def get_params(self) -> dict[str, Any]: ...

    @abstractmethod
    def get_state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def set_state(self, state: dict[str, np.ndarray]) -> None: ...

    def save(self, path: str | Path) -> None:
        """Write ``<path>.npz`` and ``<path>.json``."""
        path = Path(path)
        np.savez(path.with_suffix(".npz"), **self.get_state())
        meta = {"class": self.name, "params": self.get_params(), "metrics": getattr(self, "metrics_", {})}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load what ``save`` wrote; called on the base class it returns the saved subclass."""
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        model_cls = REGISTRY[meta["class"]]
        model = model_cls(**meta["params"])
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
            model.set_state({key: data[key] for key in data.files})
        model.metrics_ = meta.get("metrics", {})
        return model


def sliced(model: Recommender, attr: str, items: np.ndarray) -> np.ndarray:
    """``getattr(model, attr)[items]``, kept on the model for the next call with the same ``items`` array.

    A second stage scores the same part of the catalogue (its head) for every request: copying those rows of
    201k × 128 factors each time cost as much as the product itself."""
    source = getattr(model, attr)
    cache = model.__dict__.setdefault("_sliced", {})
    hit = cache.get(attr)
    if hit is None or hit[0] is not source or hit[1] is not items:
        hit = (source, items, np.ascontiguousarray(source[items]))
        cache[attr] = hit
    return hit[2]


def weighted_rows(matrix: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ weights[i] · matrix[rows[i]] as a dense vector over the columns: the rows gathered, no sparse product."""
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    at = np.concatenate([np.arange(a, b) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
                        or [np.zeros(0, dtype=np.int64)])
    return np.bincount(matrix.indices[at], weights=np.repeat(weights, ends - starts) * matrix.data[at],
                       minlength=matrix.shape[1])


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``k`` (ids, scores) of a dense matrix, best first; -inf entries come back as id -1."""
    n = scores.shape[1]
    k_eff = min(k, n)
    if k_eff < n:
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.tile(np.arange(n), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(part_scores, order, axis=1)
    ids[~np.isfinite(top_scores)] = -1
    if k_eff < k:  # fewer items than asked for: pad so batch shapes stay (rows × k)
        pad = k - k_eff
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return ids, top_scores


def cosine_top(vectors: np.ndarray, query: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows most cosine-similar to row ``query`` (itself excluded)."""
    norms = np.linalg.norm(vectors, axis=1)
    norms[norms == 0] = 1.0
    sims = (vectors @ vectors[query]) / (norms * norms[query])
    sims[query] = -np.inf
    ids, scores = topk(sims[None, :].astype(np.float32), k)
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


def check_params(name: str, **rules: tuple[Any, bool]) -> None:
    """Refuse bad parameters up front, naming each: ``check_params("bpr", epochs=(epochs, epochs >= 1))``."""
    bad = [f"{key}={value!r}" for key, (value, ok) in rules.items() if not ok]
    if bad:
        raise ValueError(f"{name}: invalid parameters {', '.join(bad)}")


def check_fitted(model: Recommender, attr: str) -> None:
    if getattr(model, attr, None) is None:
        raise NotFittedError(f"{model.name} is not fitted: call fit() or load() first")
