"""Writes of the pairing package: compute every user's taste buddies from the live ranker and swap them in.

A user's taste vector is the L2-normalised mean of the live model's vectors of the tracks they like
(``ranker.recommenders.vectors.taste_vectors``); buddies are the cosine top-K (exact FAISS search, HNSW past
``PAIRING_EXACT_MAX`` users, with its recall against exact search measured on a sample and recorded).
Each pair keeps its evidence: how many tracks and which artists the two share.

The new buddies are written into a side collection and renamed over ``buddies`` in one step, so readers see
the old set or the new one, never a mix, and a run that dies half-way leaves the old set serving.

The same run makes the taste map (``pairing.taste_map``: PCA to 2-D and k-means clusters of the taste vectors):
each user's place is kept in their buddies document, and a seeded sample with the clusters' names goes to
``taste_map``, swapped in the same way, for the dashboard to draw without computing anything.

``evaluate_pairing`` records its HetRec friend-recall result here too (``hetrec_result_record``).
"""

from __future__ import annotations

import json
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

from ranker.recommenders.vectors import taste_vectors
from ranker.training.selectors import live_model
from recsys_site.mongo import get_db

from . import collections as c
from .indexes import INDEXES
from .knn import Neighbours, exact_topk, recall_at_k, topk
from .taste_map import MAP_SAMPLE, MapFit, cluster_names, taste_map_fit, user_artists

log = logging.getLogger(__name__)

SHARED_ARTISTS_SHOWN = 5
WRITE_BATCH = 1000
RECALL_SAMPLE = 1000
MAP_CHUNK = 5000  # points per taste_map chunk document (well under MongoDB's 16 MB)


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
                    callback: Callable[[int, float, dict[str, float]], None] | None = None,
                    map_sample: int = MAP_SAMPLE, random_state: int = 0) -> dict[str, Any]:
    """Recompute every user's top-``k`` buddies from ``model`` (default: the live ranker) and swap them in, with
    the taste map (``map_sample`` points drawn with ``random_state``); returns a summary of the run."""

    model = model or live_model()
    if model is None:
        raise RuntimeError("no live ranker model: train and promote one first (manage.py train_ranker --promote)")
    k = k or settings.PAIRING_K
    started = time.perf_counter()
    user_items = model.user_items.tocsr()
    vectors = taste_vectors(model.item_vectors(), user_items)
    neighbours, used = topk(vectors, k, method=method, exact_max=settings.PAIRING_EXACT_MAX,
                            device="auto", show_progress=show_progress)  # exact search on a GPU where there is one
    searched = time.perf_counter() - started
    summary: dict[str, Any] = {"users": int(user_items.shape[0]), "k": k, "method": used,
                               "model_version": model.version, "search_seconds": round(searched, 3)}
    if used != "exact":
        summary["recall_at_k"] = _sampled_recall(vectors, neighbours, k)
        log.info("pairing: %s recall@%d against exact search = %.4f", used, k, summary["recall_at_k"])
    if callback:
        callback(1, searched, {"users": summary["users"]})
    artists, artist_names = user_artists(model, user_items)  # users × artists: how many of their tracks they like
    fit = taste_map_fit(vectors, sample=map_sample, random_state=random_state)
    fit.cluster_names = cluster_names(fit, artists, artist_names)
    summary["map"] = {"users": len(fit.rows), "sampled": len(fit.sample), "clusters": fit.clusters,
                      "explained_variance": fit.explained_variance, "seconds": fit.seconds}
    written = _write(model, neighbours, user_items, artists, artist_names, fit, show_progress)
    _write_map(model, fit, random_state)
    summary |= {"written": written, "seconds": round(time.perf_counter() - started, 3)}
    get_db()[c.PAIRING_STATE].replace_one({"_id": "buddies"}, {"_id": "buddies", **summary,
                                                               "computed_at": datetime.now(UTC)}, upsert=True)
    if callback:
        callback(2, summary["seconds"], {"users": summary["users"], "written": written})
    log.info("pairing: %s", summary)
    return summary


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
           artist_names: np.ndarray, fit: MapFit, show_progress: bool) -> int:
    db = get_db()
    place = np.full(len(model.user_ids), -1, dtype=np.int64)  # user row -> index into fit.rows
    place[fit.rows] = np.arange(len(fit.rows))
    side = f"{c.BUDDIES}_new_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    users = model.user_ids
    written = 0
    bar = tqdm(total=len(users), disable=not show_progress, unit="user", desc="buddies")
    try:
        db[side].create_indexes(INDEXES[c.BUDDIES])  # the rename keeps them; the old collection's go with it
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
            docs = [{"_id": str(users[rows[u]]), "user": str(users[rows[u]]), "buddies": buddies,
                     "model_version": model.version, "computed_at": now, **_place(fit, place[rows[u]])}
                    for u, buddies in per_user.items()]
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


def _place(fit: MapFit, i: int) -> dict[str, Any]:
    """The ``map`` field of a buddies document: [x, y, cluster] of the user's point, if they have one."""
    if i < 0:
        return {}
    return {"map": [round(float(fit.xy[i, 0]), 5), round(float(fit.xy[i, 1]), 5), int(fit.cluster[i])]}


def _write_map(model: Any, fit: MapFit, random_state: int) -> None:
    """The sample of the map and how it was made, written aside and renamed over ``taste_map`` in one step."""
    db = get_db()
    side = f"{c.TASTE_MAP}_new_{uuid.uuid4().hex[:8]}"
    users = model.user_ids[fit.rows[fit.sample]]
    xy, cluster = fit.xy[fit.sample], fit.cluster[fit.sample]
    chunks = [{"_id": f"chunk:{n:04d}", "users": [str(u) for u in users[start:start + MAP_CHUNK]],
               "x": np.round(xy[start:start + MAP_CHUNK, 0].astype(float), 5).tolist(),
               "y": np.round(xy[start:start + MAP_CHUNK, 1].astype(float), 5).tolist(),
               "cluster": cluster[start:start + MAP_CHUNK].astype(int).tolist()}
              for n, start in enumerate(range(0, len(users), MAP_CHUNK))]
    state = {"_id": "state", "model_version": model.version, "users": len(fit.rows), "sampled": len(fit.sample),
             "chunks": len(chunks), "clusters": fit.clusters, "cluster_names": fit.cluster_names,
             "cluster_sizes": fit.cluster_sizes(), "explained_variance": fit.explained_variance,
             "pca_mean": fit.pca_mean.astype(float).tolist(),
             "pca_components": fit.pca_components.astype(float).tolist(),
             "centroids": fit.centroids.astype(float).tolist(), "seed": random_state,
             "computed_at": datetime.now(UTC)}
    try:
        db[side].insert_many([state, *chunks], ordered=False)
        db[side].rename(c.TASTE_MAP, dropTarget=True)
    except BaseException:
        db[side].drop()
        raise


def hetrec_result_record(*, result: dict[str, Any], dataset: str) -> str:
    """Keep one ``evaluate_pairing`` result (``pairing.hetrec.evaluate_hetrec``'s dict) for the dashboard; returns
    its id. Stored as JSON would write it, so numpy scalars or tuples in the extras never reach the driver."""
    doc_id = uuid.uuid4().hex
    get_db()[c.PAIRING_EVALUATIONS].insert_one({"_id": doc_id, "kind": "hetrec", "dataset": dataset,
                                                "created_at": datetime.now(UTC),
                                                "result": json.loads(json.dumps(result, default=float))})
    return doc_id
