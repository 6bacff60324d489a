"""Writes of the pairing package: compute every user's taste buddies from the live ranker and swap them in.

A user's taste vector is the L2-normalised mean of the live model's vectors of the tracks they like
(``pairing.knn.taste_vectors``); buddies are the cosine top-K (exact FAISS search, HNSW past
``PAIRING_EXACT_MAX`` users, with its recall against exact search measured on a sample and recorded).
Each pair keeps its evidence: how many tracks and which artists the two share.

The new buddies are written into a side collection and renamed over ``buddies`` in one step, so readers see
the old set or the new one, never a mix, and a run that dies half-way leaves the old set serving.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.conf import settings
from tqdm.auto import tqdm

from recsys_site.mongo import get_db

from . import collections as c
from .knn import Neighbours, exact_topk, recall_at_k, taste_vectors, topk

log = logging.getLogger(__name__)

SHARED_ARTISTS_SHOWN = 5
WRITE_BATCH = 1000
RECALL_SAMPLE = 1000


def _evidence(user_items: sp.csr_matrix, artists: sp.csr_matrix, us: np.ndarray, vs: np.ndarray
              ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Shared track counts and shared artist indices (most shared tracks first) for pairs (us[i], vs[i])."""
    shared_tracks = np.asarray(user_items[us].multiply(user_items[vs]).sum(axis=1)).ravel().astype(int)
    both = artists[us].multiply(artists[vs]).tocsr()  # per pair: min-ish weight of each shared artist
    shared_artists = []
    for i in range(both.shape[0]):
        row = both.indices[both.indptr[i]:both.indptr[i + 1]]
        weight = both.data[both.indptr[i]:both.indptr[i + 1]]
        shared_artists.append(row[np.argsort(-weight, kind="stable")])
    return shared_tracks, shared_artists


def buddies_compute(*, model: Any = None, k: int | None = None, method: str = "auto", show_progress: bool = False,
                    callback: Callable[[int, float, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Recompute every user's top-``k`` buddies from ``model`` (default: the live ranker) and swap them in."""
    from ranker.selectors import live_model

    model = model or live_model()
    if model is None:
        raise RuntimeError("no live ranker model: train and promote one first (manage.py train_ranker --promote)")
    k = k or settings.PAIRING_K
    started = time.perf_counter()
    user_items = model.user_items.tocsr()
    vectors = taste_vectors(model.item_vectors(), user_items)
    neighbours, used = topk(vectors, k, method=method, exact_max=settings.PAIRING_EXACT_MAX,
                            show_progress=show_progress)
    searched = time.perf_counter() - started
    summary: dict[str, Any] = {"users": int(user_items.shape[0]), "k": k, "method": used,
                               "model_version": model.version, "search_seconds": round(searched, 3)}
    if used != "exact":
        summary["recall_at_k"] = _sampled_recall(vectors, neighbours, k)
        log.info("pairing: %s recall@%d against exact search = %.4f", used, k, summary["recall_at_k"])
    if callback:
        callback(1, searched, {"users": summary["users"]})
    artist_keys, artist_col = np.unique(model.item_artist, return_inverse=True)
    artist_names = _artist_names(model, artist_keys, artist_col)
    n_items = len(artist_col)
    item_to_artist = sp.csr_matrix((np.ones(n_items, dtype=np.float32), (np.arange(n_items), artist_col)),
                                   shape=(n_items, len(artist_keys)))
    artists = (user_items @ item_to_artist).tocsr()  # users × artists: how many of the artist's tracks they like
    written = _write(model, neighbours, user_items, artists, artist_keys, artist_names, show_progress)
    summary |= {"written": written, "seconds": round(time.perf_counter() - started, 3)}
    get_db()[c.PAIRING_STATE].replace_one({"_id": "buddies"}, {"_id": "buddies", **summary,
                                                               "computed_at": datetime.now(UTC)}, upsert=True)
    if callback:
        callback(2, summary["seconds"], {"users": summary["users"], "written": written})
    log.info("pairing: %s", summary)
    return summary


def _artist_names(model: Any, keys: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    names = np.empty(len(keys), dtype=object)
    names[inverse] = model.item_artist_name
    return names


def _sampled_recall(vectors: np.ndarray, approx: Neighbours, k: int) -> float:
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(vectors), size=min(RECALL_SAMPLE, len(vectors)), replace=False))
    exact = exact_topk(vectors, k + 1, queries=vectors[sample], exclude_self=False)
    # Drop each query's own row from the exact answer, as the approximate search did.
    ids = np.where(exact.ids == sample[:, None], -1, exact.ids)
    order = np.argsort(ids == -1, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)[:, :k]
    trimmed = Neighbours(ids=ids, scores=np.take_along_axis(exact.scores, order, axis=1)[:, :k])
    sub = Neighbours(ids=approx.ids[sample], scores=approx.scores[sample])
    return round(recall_at_k(sub, trimmed), 4)


def _write(model: Any, neighbours: Neighbours, user_items: sp.csr_matrix, artists: sp.csr_matrix,
           artist_keys: np.ndarray, artist_names: np.ndarray, show_progress: bool) -> int:
    db = get_db()
    side = f"{c.BUDDIES}_new_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    users = model.user_ids
    written = 0
    bar = tqdm(total=len(users), disable=not show_progress, unit="user", desc="buddies")
    try:
        for start in range(0, len(users), WRITE_BATCH):
            rows = np.arange(start, min(start + WRITE_BATCH, len(users)))
            ids, sims = neighbours.ids[rows], neighbours.scores[rows]
            us, slots = np.nonzero(ids >= 0)
            pair_u, pair_v = rows[us], ids[us, slots]
            shared_tracks, shared_artists = _evidence(user_items, artists, pair_u, pair_v)
            per_user: dict[int, list[dict[str, Any]]] = {}
            for n, (u, slot) in enumerate(zip(us.tolist(), slots.tolist(), strict=True)):
                top = shared_artists[n]
                per_user.setdefault(u, []).append({
                    "user": str(users[pair_v[n]]), "similarity": round(float(sims[u, slot]), 6),
                    "shared_tracks": int(shared_tracks[n]), "shared_artists_count": len(top),
                    "shared_artists": [str(artist_names[a]) for a in top[:SHARED_ARTISTS_SHOWN]],
                })
            docs = [{"_id": str(users[rows[u]]), "buddies": buddies, "model_version": model.version,
                     "computed_at": now} for u, buddies in per_user.items()]
            if docs:
                db[side].insert_many(docs, ordered=False)
                written += len(docs)
            bar.update(len(rows))
        bar.close()
        if written:
            db[side].rename(c.BUDDIES, dropTarget=True)
        else:
            db[side].drop()
    except BaseException:
        db[side].drop()
        raise
    return written
