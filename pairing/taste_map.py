"""The taste map: every user's taste vector projected to two dimensions (PCA) and grouped into taste clusters
(k-means in the full taste space, not on the projection, so a cluster is a taste and not an artefact of the view).

Computed once per ``buddies_compute`` (the weekly job's step) and stored (``pairing.services``), because PCA and
k-means over every user take seconds, far too long for a page view. Both are fitted on a seeded sample of at most
``FIT_SAMPLE`` users and then applied to everyone; the dashboard draws a seeded sample of at most ``MAP_SAMPLE``
points, and every user's own place is kept with their buddies so a user outside the sample can still be shown.

Clusters are numbered by size (0 is the largest) and named by their most distinctive artists: those whose share of
the cluster's users exceeds their share of all users by the most. scikit-learn is imported inside the functions.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from ranker.recommenders.vectors import taste_vectors

log = logging.getLogger(__name__)

CLUSTERS = 8
MAP_SAMPLE = 20_000
FIT_SAMPLE = 50_000
NAME_ARTISTS = 3
TRANSFORM_BATCH = 100_000


@dataclass
class MapFit:
    """The map of every row of a taste-vector matrix: ``rows`` (indices of the rows with a taste vector), their
    ``xy`` (len(rows) × 2) and ``cluster``; ``sample`` indexes into ``rows`` (sorted): the points to draw."""

    rows: np.ndarray
    xy: np.ndarray
    cluster: np.ndarray
    sample: np.ndarray
    clusters: int
    explained_variance: list[float]
    pca_mean: np.ndarray
    pca_components: np.ndarray
    centroids: np.ndarray
    cluster_names: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def cluster_sizes(self) -> list[int]:
        return np.bincount(self.cluster, minlength=self.clusters).astype(int).tolist() if self.clusters else []


@dataclass
class TasteMap:
    """What the dashboard draws: a sample of users with their place and cluster, and how the map was made.

    ``positions`` holds every user's place when the map was computed in this process (the fallback); a stored
    map leaves it None and places users through ``pairing.selectors.taste_map_positions``.
    """

    model_version: str | None
    users: list[str]
    x: list[float]
    y: list[float]
    cluster: list[int]
    total_users: int
    cluster_names: list[str]
    cluster_sizes: list[int]
    explained_variance: list[float]
    computed_at: datetime | None
    source: str  # "stored" (by buddies_compute) | "computed" (now, because none was stored)
    positions: dict[str, tuple[float, float, int]] | None = None


def taste_map_fit(vectors: np.ndarray, *, clusters: int = CLUSTERS, sample: int = MAP_SAMPLE,
                  fit_sample: int = FIT_SAMPLE, random_state: int = 0) -> MapFit:
    """PCA to 2-D and k-means with ``clusters`` clusters over the non-zero rows of ``vectors`` (users × dims).

    Both are fitted on at most ``fit_sample`` rows drawn with ``random_state`` and applied to all; ``sample`` rows
    (seeded too) are marked for drawing. Users without a taste vector (zero rows) are left off the map.
    """
    # lazy: scikit-learn takes 2.1 s to import (measured); only the taste map needs it
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    started = time.perf_counter()
    vectors = np.asarray(vectors, dtype=np.float32)
    rows = np.flatnonzero(vectors.any(axis=1))
    n, dims = len(rows), vectors.shape[1]
    rng = np.random.default_rng(random_state)
    if n < 3:  # PCA and k-means need a few points: put them at the origin, in one cluster
        zeros = np.zeros((n, 2), dtype=np.float32)
        return MapFit(rows=rows, xy=zeros, cluster=np.zeros(n, dtype=np.int64), sample=np.arange(n),
                      clusters=1 if n else 0, explained_variance=[], pca_mean=np.zeros(dims, np.float32),
                      pca_components=np.zeros((2, dims), np.float32), centroids=vectors[rows].copy(),
                      seconds=round(time.perf_counter() - started, 3))
    fit_rows = rows if n <= fit_sample else np.sort(rng.choice(rows, size=fit_sample, replace=False))
    train = vectors[fit_rows]
    with warnings.catch_warnings():  # identical points: zero variance, NaN ratios (made 0 below)
        warnings.simplefilter("ignore", RuntimeWarning)
        pca = PCA(n_components=2, random_state=random_state).fit(train)
    k = max(1, min(clusters, len(np.unique(train, axis=0))))
    kmeans = KMeans(n_clusters=k, n_init=4, random_state=random_state).fit(train)
    xy = np.empty((n, 2), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, TRANSFORM_BATCH):
        batch = vectors[rows[start:start + TRANSFORM_BATCH]]
        xy[start:start + len(batch)] = pca.transform(batch)
        labels[start:start + len(batch)] = kmeans.predict(batch)
    # Number clusters by size, largest first, so "cluster 0" means the same kind of thing from run to run.
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    labels = relabel[labels]
    shown = np.arange(n) if n <= sample else np.sort(rng.choice(n, size=sample, replace=False))
    return MapFit(rows=rows, xy=xy, cluster=labels, sample=shown, clusters=k,
                  explained_variance=[round(float(v), 4) for v in np.nan_to_num(pca.explained_variance_ratio_)],
                  pca_mean=pca.mean_.astype(np.float32), pca_components=pca.components_.astype(np.float32),
                  centroids=kmeans.cluster_centers_[order].astype(np.float32),
                  seconds=round(time.perf_counter() - started, 3))


def user_artists(model: Any, user_items: sp.csr_matrix | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """(users × artists CSR: how many of each artist's tracks a user likes, the artists' names) from ``model``."""
    user_items = model.user_items.tocsr() if user_items is None else user_items
    keys, column = np.unique(model.item_artist, return_inverse=True)
    names = np.empty(len(keys), dtype=object)
    names[column] = model.item_artist_name
    n_items = len(column)
    item_to_artist = sp.csr_matrix((np.ones(n_items, dtype=np.float32), (np.arange(n_items), column)),
                                   shape=(n_items, len(keys)))
    return (user_items @ item_to_artist).tocsr(), names


def cluster_names(fit: MapFit, artists: sp.csr_matrix, names: np.ndarray, *, top: int = NAME_ARTISTS) -> list[str]:
    """Each cluster's most distinctive artists, joined: highest (share of the cluster's users who like them)
    minus (share of all users who do), if positive; "cluster N" when none is."""
    if not fit.clusters or artists.shape[1] == 0:
        return [f"cluster {c}" for c in range(fit.clusters)]
    likes = artists[fit.rows].tocsr(copy=True)
    likes.data = np.ones_like(likes.data)
    member = sp.csr_matrix((np.ones(len(fit.rows), dtype=np.float32), (fit.cluster, np.arange(len(fit.rows)))),
                           shape=(fit.clusters, len(fit.rows)))
    sizes = np.maximum(np.bincount(fit.cluster, minlength=fit.clusters), 1)[:, None]
    share = np.asarray((member @ likes).todense()) / sizes
    overall = np.asarray(likes.sum(axis=0)).ravel() / max(len(fit.rows), 1)
    lift = share - overall[None, :]
    out = []
    for c in range(fit.clusters):
        best = [a for a in np.argsort(-lift[c], kind="stable")[:top] if lift[c, a] > 0]
        out.append(", ".join(str(names[a]) for a in best) or f"cluster {c}")
    return out


def taste_map_compute(*, model: Any, clusters: int = CLUSTERS, sample: int = MAP_SAMPLE,
                      random_state: int = 0) -> TasteMap:
    """The taste map of ``model``'s users computed now (nothing is written): what the dashboard falls back to when
    no map was stored, e.g. for buddies computed before the map existed. Seconds on a million users."""

    user_items = model.user_items.tocsr()
    vectors = taste_vectors(model.item_vectors(), user_items)
    fit = taste_map_fit(vectors, clusters=clusters, sample=sample, random_state=random_state)
    artists, names = user_artists(model, user_items)
    fit.cluster_names = cluster_names(fit, artists, names)
    users = model.user_ids[fit.rows]
    positions = {str(u): (round(float(x), 5), round(float(y), 5), int(c))
                 for u, (x, y), c in zip(users.tolist(), fit.xy.tolist(), fit.cluster.tolist(), strict=True)}
    return TasteMap(model_version=model.version, users=[str(u) for u in users[fit.sample]],
                    x=[positions[str(u)][0] for u in users[fit.sample]],
                    y=[positions[str(u)][1] for u in users[fit.sample]],
                    cluster=fit.cluster[fit.sample].astype(int).tolist(), total_users=len(fit.rows),
                    cluster_names=fit.cluster_names, cluster_sizes=fit.cluster_sizes(),
                    explained_variance=fit.explained_variance, computed_at=None, source="computed",
                    positions=positions)
