"""Reads of training: registered model versions, the live model (cached per process) and the score drift."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

import numpy as np
from django.conf import settings
from pymongo import DESCENDING

from ranker import collections as c
from ranker.training.artifacts import KIND, ModelUnavailable, RankerModel
from recsys_site.mongo import get_db

log = logging.getLogger(__name__)


def model_get(*, version: str) -> dict[str, Any] | None:
    return get_db()[c.MODELS].find_one({"_id": version})


def model_list(*, limit: int = 50) -> list[dict[str, Any]]:
    """Model versions, newest first, each with its status (candidate, live, retired, rejected, deleted)."""
    return list(get_db()[c.MODELS].find({"kind": KIND}).sort("created_at", DESCENDING).limit(limit))


def live_version() -> str | None:
    doc = get_db()[c.MODEL_LIVE].find_one({"_id": KIND})
    return doc["version"] if doc else None


class _LiveCache:
    """The live model, loaded once per process and reloaded when another version goes live.

    The pointer is read at most every ``MODEL_POLL_SECONDS``; a version's files never change, so the cached
    object stays valid until the pointer moves. A live version that cannot be loaded here (not in the store
    whole, corrupt, no disk space for the cache) raises ``ModelUnavailable``, which the API answers with 503 and
    ``Retry-After``; the failure is kept for one poll interval, then loading is tried again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: RankerModel | None = None
        self._error: ModelUnavailable | None = None
        self._checked = 0.0
        self._db = None

    def get(self) -> RankerModel | None:
        now = time.monotonic()
        db_name = settings.MONGO_DB
        if self._db == db_name and now - self._checked < settings.MODEL_POLL_SECONDS:
            if self._error is not None:
                raise ModelUnavailable(str(self._error))
            return self._model
        with self._lock:
            version = live_version()
            self._error = None
            if version is None:
                self._model = None
            elif self._model is None or self._model.version != version:
                self._model = None
                try:
                    self._model = RankerModel.load(version)
                except OSError as exc:  # ModelUnavailable, or the disk of the local cache
                    self._error = ModelUnavailable(f"live model version {version} cannot be loaded: {exc}")
                    self._checked, self._db = now, db_name
                    log.error("%s", self._error)
                    raise self._error from exc
                # The model (and torch, imported with it) stays until the next version: keep the cyclic
                # collector off it, as recsys_site.wsgi does with everything loaded at startup.
                gc.collect()
                gc.freeze()
            self._checked, self._db = now, db_name
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._model, self._error, self._checked, self._db = None, None, 0.0, None


_live = _LiveCache()


def live_model() -> RankerModel | None:
    """The model serving now, or None before any model went live; ``ModelUnavailable`` when the live version cannot
    be loaded on this machine."""
    return _live.get()


def live_model_clear() -> None:
    """Forget the cached live model (after a promotion in this process, and in tests)."""
    _live.clear()


KL_PSEUDOCOUNT = 1.0  # added to every bin of both histograms: an empty bin would make KL infinite


def kl_divergence(p_counts: list[float] | np.ndarray, q_counts: list[float] | np.ndarray, *,
                  pseudocount: float = KL_PSEUDOCOUNT) -> float:
    """KL(P‖Q) in nats between two histograms over the same bins, each smoothed by ``pseudocount`` per bin
    (additive smoothing) and normalised."""
    p = np.asarray(p_counts, dtype=np.float64) + pseudocount
    q = np.asarray(q_counts, dtype=np.float64) + pseudocount
    if p.shape != q.shape:
        raise ValueError(f"histograms over different bins: {p.shape} against {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def score_drift() -> dict[str, Any] | None:
    """How the served score distribution moved between the two newest versions that recorded a score histogram:
    ``new`` and ``old`` (version, status, histogram) and ``kl`` = KL(new‖old) with additive smoothing. None while
    fewer than two versions have a histogram; ``kl`` is None when their bins differ."""
    docs = list(get_db()[c.MODELS].find({"kind": KIND, "score_histogram.counts": {"$exists": True}},
                                        {"score_histogram": 1, "status": 1, "created_at": 1})
                .sort("created_at", DESCENDING).limit(2))
    if len(docs) < 2:
        return None
    new, old = docs
    hist_new, hist_old = new["score_histogram"], old["score_histogram"]
    same_bins = hist_new.get("edges") == hist_old.get("edges")
    kl = kl_divergence(hist_new["counts"], hist_old["counts"]) if same_bins else None
    return {"new": {"version": new["_id"], "status": new.get("status"), "histogram": hist_new},
            "old": {"version": old["_id"], "status": old.get("status"), "histogram": hist_old},
            "kl": kl, "pseudocount": KL_PSEUDOCOUNT}


def histogram_version_count() -> int:
    """How many versions recorded a score histogram (the drift needs two)."""
    return get_db()[c.MODELS].count_documents({"kind": KIND, "score_histogram.counts": {"$exists": True}})
