"""Exploration by Thompson sampling over the candidates' follow rates.

Each playlist p has a Beta posterior on its follow rate θ_p (follows per impression in a served playlist list),
shrunk towards the prior of its taste cluster c (the playlists' track-space vectors clustered by spherical k-means):

    prior      Beta(m · r_c, m · (1 − r_c)),   r_c = (F_c + 1) / (N_c + 2)   (the cluster's pooled, smoothed rate)
    posterior  Beta(m · r_c + f_p, m · (1 − r_c) + max(n_p − f_p, 0))

with f_p, n_p the playlist's follows and impressions, F_c, N_c their sums over the cluster and m the prior strength
(``PLAYLIST_EXPLORE_PRIOR_STRENGTH``): the posterior mean is (m r_c + f_p) / (m + n_p), the cluster's rate for a
playlist nobody saw, its own rate once its impressions outweigh m. An exploration slot samples θ for each remaining
candidate and takes the largest sample (``thompson_pick``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .vectors import normalize_rows


@dataclass
class FollowPosteriors:
    centroids: np.ndarray  # (clusters, d), unit rows
    prior_alpha: np.ndarray  # (clusters,)
    prior_beta: np.ndarray
    pids: np.ndarray  # playlists with impressions or follows (sorted)
    follows: np.ndarray  # (len(pids),)
    impressions: np.ndarray
    strength: float

    def clusters_of(self, vectors: np.ndarray) -> np.ndarray:
        """Each row's nearest centroid (cosine)."""
        if len(vectors) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.argmax(normalize_rows(vectors) @ self.centroids.T, axis=1).astype(np.int64)

    def posterior(self, *, pids: np.ndarray | list[int], vectors: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(alpha, beta, cluster) of each playlist in ``pids`` (track-space vectors: rows of ``vectors``)."""
        pids = np.asarray(pids, dtype=np.int64)
        cluster = self.clusters_of(vectors)
        f, n = np.zeros(len(pids)), np.zeros(len(pids))
        if len(self.pids):
            at = np.clip(np.searchsorted(self.pids, pids), 0, len(self.pids) - 1)
            known = self.pids[at] == pids
            f[known], n[known] = self.follows[at[known]], self.impressions[at[known]]
        alpha = self.prior_alpha[cluster] + f
        beta = self.prior_beta[cluster] + np.maximum(n - f, 0.0)
        return alpha, beta, cluster

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids, "prior_alpha": self.prior_alpha, "prior_beta": self.prior_beta,
                "pids": self.pids, "follows": self.follows, "impressions": self.impressions}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, strength: float) -> FollowPosteriors:
        return cls(strength=strength, **{k: arrays[k] for k in ("centroids", "prior_alpha", "prior_beta", "pids",
                                                               "follows", "impressions")})


def follow_posteriors_fit(*, vectors: np.ndarray, row_pids: np.ndarray, follows: dict[int, int],
                          impressions: dict[int, int], clusters: int, strength: float, seed: int = 7,
                          sample: int = 200_000) -> FollowPosteriors:
    """Cluster the playlists' ``vectors`` (rows; ``row_pids`` their pids) and pool each cluster's follows and
    impressions into its prior. ``clusters`` is lowered to a tenth of the playlists when there are few."""
    import faiss  # lazy: faiss takes 0.5 s to import (measured); only the daily training clusters

    if strength <= 0:
        raise ValueError(f"the prior strength must be positive, not {strength}")
    unit = normalize_rows(vectors)
    usable = np.flatnonzero(np.abs(unit).sum(axis=1) > 0)
    k = int(max(1, min(clusters, len(usable) // 10)))
    rng = np.random.default_rng(seed)
    train = unit[rng.choice(usable, size=min(sample, len(usable)), replace=False)] if len(usable) else unit[:1]
    if k > 1:
        km = faiss.Kmeans(unit.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
        km.train(np.ascontiguousarray(train, dtype=np.float32))
        centroids = normalize_rows(km.centroids)
    else:
        centroids = normalize_rows(train.mean(axis=0, keepdims=True) + 1e-6)
    cluster = np.argmax(unit @ centroids.T, axis=1)
    row_of = {int(p): r for r, p in enumerate(np.asarray(row_pids).tolist())}
    pids = np.asarray(sorted(p for p in set(follows) | set(impressions) if p in row_of), dtype=np.int64)
    f = np.asarray([follows.get(int(p), 0) for p in pids], dtype=np.float64)
    n = np.asarray([impressions.get(int(p), 0) for p in pids], dtype=np.float64)
    of = cluster[[row_of[int(p)] for p in pids]] if len(pids) else np.zeros(0, dtype=np.int64)
    pooled_f = np.bincount(of, weights=f, minlength=len(centroids))
    pooled_n = np.bincount(of, weights=np.maximum(n, f), minlength=len(centroids))
    rate = (pooled_f + 1.0) / (pooled_n + 2.0)
    return FollowPosteriors(centroids=centroids, prior_alpha=strength * rate, prior_beta=strength * (1.0 - rate),
                            pids=pids, follows=f, impressions=n, strength=float(strength))


def thompson_pick(*, alpha: np.ndarray, beta: np.ndarray, slots: int, rng: np.random.Generator
                  ) -> list[tuple[int, float]]:
    """``slots`` picks (index, sampled θ): for each slot a fresh θ ~ Beta(alpha, beta) for every candidate not
    picked yet, and the largest sample wins."""
    left = np.ones(len(alpha), dtype=bool)
    out: list[tuple[int, float]] = []
    for _ in range(min(slots, len(alpha))):
        theta = rng.beta(alpha, beta)
        theta = np.where(left, theta, -1.0)
        best = int(np.argmax(theta))
        left[best] = False
        out.append((best, float(theta[best])))
    return out


def explore_info(alpha: float, beta: float, sample: float, cluster: int) -> dict[str, Any]:
    """What an exploration pick says in its ``why``."""
    return {"alpha": round(float(alpha), 4), "beta": round(float(beta), 4), "sample": round(float(sample), 6),
            "cluster": int(cluster)}
