"""The learned playlist ranker: a BPR model over users × playlists and feature weights learned from feedback.

Two parts, both fitted by ``ranker.playlist_ranking.services`` from the store's feedback; this module holds the
maths only (no store):

* ``PlaylistBPR``, a pairwise (BPR) model of which playlists a user engages with. Users and playlists are keyed by
  their string id and pid, so the model outlives the track model it was trained beside. Its score is

      s(u, p) = b_p + x_u · y_p + (t_u W) · v_p

  where x_u, y_p are free embeddings (slot 0 of each table, for users and playlists the model never saw, is held at
  zero: an unseen playlist is neither good nor bad, only its taste term speaks), b_p a playlist bias, t_u the user's
  taste vector and v_p the playlist's vector in the track model's BPR space (``ranker.recommenders.vectors``), and W a
  learned map (initialised to the identity, regularised towards it). The taste term carries what the track model knows
  to users with few follows; the free embeddings carry what only follows say. Served beside a track model other than
  the one it was trained with, W is meaningless and is left out (the plain cosine t_u · v_p stands in).
* ``LearnedWeights``: the combination of the ranking features (``FEATURES``) fitted by logistic regression of
  "followed" over the playlists users opened from the lists they were shown (``logistic_fit``).

``PlaylistRanker`` bundles them with the exploration posteriors (``ranker.recommenders.explore``) into one
versioned artifact, written and read as one ``.npz`` (no pickle).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .explore import FollowPosteriors

log = logging.getLogger(__name__)

# The ranking features, in the order of ``LearnedWeights.coef``: the track-BPR affinity (mean track score of the
# playlist for the user), familiarity (share of the playlist's artists the user knows), novelty (share of its
# tracks new to the user), the buddy's similarity when a buddy owns it (0 otherwise), the playlist-BPR score, the
# playlist's follow rate (its posterior mean, shrunk towards its taste cluster's: ``explore.FollowPosteriors``) and
# its size (log of 1 + its tracks). The last two are the user-independent signals: on the simulated A/B's first
# days they were the only features that told the followed playlist from the skipped ones above it (pairwise AUC
# 0.74 and 0.73, against 0.49–0.52 for the first three; ADR 0014).
FEATURES = ("affinity", "familiarity", "novelty", "buddy", "playlist_bpr", "follow_rate", "size")

DEFAULT_PARAMS = {"dim": 16, "epochs": 40, "batch": 1024, "lr": 0.05, "reg": 1e-4, "reg_map": 1e-2,
                  "hard_share": 0.5, "seed": 7, "l2": 1.0, "taste": True}


@dataclass
class PlaylistBPR:
    user_ids: np.ndarray  # str; user_ids[i] has slot i + 1 (slot 0: unknown users)
    pids: np.ndarray  # int64; pids[i] has slot i + 1 (slot 0: unknown playlists)
    user_factors: np.ndarray  # (users + 1, dim)
    playlist_factors: np.ndarray  # (playlists + 1, dim)
    playlist_bias: np.ndarray  # (playlists + 1,)
    taste_map: np.ndarray  # (d, d): W, in the track space of ``track_version``
    track_version: str
    _user_slot: dict[str, int] | None = field(default=None, repr=False)
    _pid_slot: dict[int, int] | None = field(default=None, repr=False)

    def user_slot(self, user: str) -> int:
        if self._user_slot is None:
            self._user_slot = {u: i + 1 for i, u in enumerate(self.user_ids.tolist())}
        return self._user_slot.get(user, 0)

    def pid_slots(self, pids: np.ndarray | list[int]) -> np.ndarray:
        if self._pid_slot is None:
            self._pid_slot = {int(p): i + 1 for i, p in enumerate(self.pids.tolist())}
        return np.asarray([self._pid_slot.get(int(p), 0) for p in pids], dtype=np.int64)

    def scores(self, *, user: str, taste: np.ndarray, pids: np.ndarray | list[int], vectors: np.ndarray,
               same_space: bool) -> np.ndarray:
        """s(u, p) for one user and the playlists ``pids`` whose track-space vectors are the rows of ``vectors``."""
        u = self.user_slot(user)
        slots = self.pid_slots(pids)
        out = self.playlist_bias[slots] + self.playlist_factors[slots] @ self.user_factors[u]
        if not self.taste_map.any():  # trained without the taste term (``taste: false``)
            return np.asarray(out, dtype=np.float64)
        mapped = taste @ self.taste_map if same_space and self.taste_map.shape[0] == len(taste) else taste
        if vectors.shape[1] == len(mapped):
            out = out + vectors @ mapped
        return np.asarray(out, dtype=np.float64)


def playlist_bpr_fit(*, users: np.ndarray, pids: np.ndarray, taste: np.ndarray, vectors: np.ndarray,
                     pid_rows: np.ndarray, positives: np.ndarray, hard: list[np.ndarray], track_version: str,
                     params: dict[str, Any] | None = None, device: Any = None,
                     callback: Callable[[int, float, dict[str, float]], None] | None = None) -> PlaylistBPR:
    """Fit ``PlaylistBPR`` on ``positives`` (n × 2: user index, pid index into ``users``/``pids``).

    ``taste`` (users × d): each user's taste vector; ``vectors`` (catalogue rows × d): every playlist's vector;
    ``pid_rows``: each pid's row in ``vectors``. Each positive is paired, per epoch, with one negative: with
    probability ``hard_share`` one of ``hard[user]`` (pid indices the user was shown and did not engage with), else
    a uniform catalogue row (the neutral unknown slot when that row is not one of ``pids``).
    """
    import torch  # lazy: torch takes 2.9 s to import (measured); only training needs it

    p = {**DEFAULT_PARAMS, **(params or {})}
    device = device or torch.device("cpu")
    rng = np.random.default_rng(int(p["seed"]))
    torch.manual_seed(int(p["seed"]))
    n_users, n_pids, d, dim = len(users), len(pids), vectors.shape[1], int(p["dim"])
    row_slot = np.zeros(len(vectors), dtype=np.int64)
    row_slot[pid_rows] = np.arange(1, n_pids + 1)
    taste_t = torch.as_tensor(np.vstack([np.zeros((1, d), np.float32), taste]).astype(np.float32), device=device)
    vec_t = torch.as_tensor(np.asarray(vectors, dtype=np.float32), device=device)
    uf = torch.nn.Parameter(0.01 * torch.randn(n_users + 1, dim, device=device))
    pf = torch.nn.Parameter(0.01 * torch.randn(n_pids + 1, dim, device=device))
    bias = torch.nn.Parameter(torch.zeros(n_pids + 1, device=device))
    eye = torch.eye(d, device=device)
    if not p["taste"]:  # the free embeddings and biases alone (the measured alternative, ADR 0014)
        taste_t = torch.zeros_like(taste_t)
        eye = torch.zeros_like(eye)
    w = torch.nn.Parameter(eye.clone())
    opt = torch.optim.Adam([uf, pf, bias, w], lr=float(p["lr"]))

    def score(u: Any, slot: Any, row: Any) -> Any:
        return bias[slot] + (uf[u] * pf[slot]).sum(1) + ((taste_t[u] @ w) * vec_t[row]).sum(1)

    pos_u, pos_p = positives[:, 0].astype(np.int64), positives[:, 1].astype(np.int64)
    hard_len = np.asarray([len(h) for h in hard], dtype=np.int64)
    hard_flat = np.concatenate(hard).astype(np.int64) if hard_len.sum() else np.zeros(1, dtype=np.int64)
    hard_start = np.concatenate([[0], np.cumsum(hard_len)[:-1]]) if len(hard_len) else np.zeros(0, dtype=np.int64)
    started = time.perf_counter()
    for epoch in range(1, int(p["epochs"]) + 1):
        order = rng.permutation(len(pos_u))
        total = 0.0
        for begin in range(0, len(order), int(p["batch"])):
            idx = order[begin:begin + int(p["batch"])]
            u, pp = pos_u[idx], pos_p[idx]
            neg_slot = np.empty(len(idx), dtype=np.int64)
            neg_row = rng.integers(0, len(vectors), size=len(idx))
            use_hard = (rng.random(len(idx)) < float(p["hard_share"])) & (hard_len[u] > 0)
            picked = hard_flat[hard_start[u[use_hard]] + (rng.random(use_hard.sum()) * hard_len[u[use_hard]]
                                                          ).astype(np.int64)]
            neg_row[use_hard] = pid_rows[picked]
            neg_slot[:] = row_slot[neg_row]
            tu = torch.as_tensor(u + 1, device=device)
            s_pos = score(tu, torch.as_tensor(pp + 1, device=device), torch.as_tensor(pid_rows[pp], device=device))
            s_neg = score(tu, torch.as_tensor(neg_slot, device=device), torch.as_tensor(neg_row, device=device))
            loss = -torch.nn.functional.logsigmoid(s_pos - s_neg).mean()
            loss = loss + float(p["reg"]) * ((uf[tu] ** 2).sum() + (pf[torch.as_tensor(pp + 1, device=device)] ** 2
                                                                   ).sum() + (bias ** 2).sum()) / len(idx)
            loss = loss + float(p["reg_map"]) * ((w - eye) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # slot 0, the unknown user or playlist, stays neutral: no free part, no bias
                uf[0].zero_()
                pf[0].zero_()
                bias[0].zero_()
            total += float(loss.detach()) * len(idx)
        if callback:
            callback(epoch, time.perf_counter() - started, {"loss": total / max(len(order), 1)})
    return PlaylistBPR(user_ids=np.asarray(users, dtype=str), pids=np.asarray(pids, dtype=np.int64),
                       user_factors=uf.detach().cpu().numpy(), playlist_factors=pf.detach().cpu().numpy(),
                       playlist_bias=bias.detach().cpu().numpy(), taste_map=w.detach().cpu().numpy(),
                       track_version=track_version)


@dataclass
class LearnedWeights:
    """score = ((features − mean) / std) · coef, over the columns ``FEATURES``."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray

    def combine(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, dtype=np.float64) - self.mean) / self.std) @ self.coef

    def to_dict(self) -> dict[str, float]:
        """The weight of each feature on its own scale (per unit of the raw feature) and standardised."""
        return {name: round(float(c), 6) for name, c in zip(FEATURES, self.coef, strict=True)}


def logistic_fit(*, features: np.ndarray | None = None, labels: np.ndarray | None = None,
                 positives: np.ndarray | None = None, negatives: np.ndarray | None = None,
                 l2: float = 1.0) -> LearnedWeights:
    """Feature weights ``w`` from two kinds of evidence, over the same standardised features:

    * rows with a label (``features``, ``labels``): P(label) = σ(b + x·w), the intercept b not penalised and then
      dropped (it does not change a ranking);
    * pairs (rows of ``positives`` and ``negatives``), each positive preferred to its negative: P = σ((x⁺ − x⁻)·w).

    Minimises the summed log-losses + l2/2 ‖w‖². Raises ``ValueError`` when there is neither a pair nor both labels.
    """
    from scipy.optimize import minimize  # lazy: only the daily training fits weights

    width = next(np.asarray(a).shape[1] for a in (features, positives) if a is not None and np.asarray(a).ndim == 2)
    x = np.asarray(features if features is not None else np.zeros((0, width)), np.float64).reshape(-1, width)
    y = np.asarray(labels if labels is not None else np.zeros(0), dtype=bool)
    pos = np.asarray(positives if positives is not None else np.zeros((0, width)), np.float64).reshape(-1, width)
    neg = np.asarray(negatives if negatives is not None else np.zeros((0, width)), np.float64).reshape(-1, width)
    if len(x) != len(y) or pos.shape != neg.shape:
        raise ValueError(f"rows and labels, positives and negatives must match: {x.shape}, {y.shape}, {pos.shape}, "
                         f"{neg.shape}")
    rows_inform = len(y) > 0 and y.any() and not y.all()
    if not rows_inform and len(pos) == 0:
        raise ValueError(f"need a pair or rows of both labels, got {int(y.sum())} of {len(y)} rows positive "
                         f"and no pair")
    both = np.vstack([x, pos, neg])
    mean, std = both.mean(axis=0), both.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    # One design: labelled rows [z, 1] with their sign; pairs [z⁺ − z⁻, 0], always "the first is preferred".
    design = np.vstack([np.column_stack([(x - mean) / std, np.ones(len(x))]),
                        np.column_stack([(pos - neg) / std, np.zeros(len(pos))])])
    sign = np.r_[np.where(y, 1.0, -1.0), np.ones(len(pos))]
    penalty = np.r_[np.full(width, l2), 0.0]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        margin = sign * (design @ w)
        value = np.logaddexp(0.0, -margin).sum() + 0.5 * (penalty * w) @ w
        grad = -(design * (sign / (1.0 + np.exp(margin)))[:, None]).sum(axis=0) + penalty * w
        return float(value), grad

    found = minimize(loss, np.zeros(width + 1), jac=True, method="L-BFGS-B")
    return LearnedWeights(mean=mean, std=std, coef=np.asarray(found.x[:-1], dtype=np.float64))


def follow_rate(posteriors: FollowPosteriors | None, *, pids: np.ndarray | list[int], vectors: np.ndarray
                ) -> np.ndarray:
    """Each playlist's posterior mean follow rate (0 without posteriors): the ``follow_rate`` feature."""
    if posteriors is None or len(pids) == 0:
        return np.zeros(len(pids), dtype=np.float64)
    alpha, beta, _ = posteriors.posterior(pids=pids, vectors=vectors)
    return alpha / np.maximum(alpha + beta, 1e-12)


def pairwise_auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float | None:
    """Share of (positive, negative) pairs ranked right (ties count half); None without pairs."""
    if len(pos_scores) == 0:
        return None
    pos, neg = np.asarray(pos_scores, np.float64), np.asarray(neg_scores, np.float64)
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


@dataclass
class PlaylistRanker:
    """One version of the learned playlist ranker: the BPR, the feature weights, the exploration posteriors."""

    version: str
    bpr: PlaylistBPR
    weights: LearnedWeights
    explore: FollowPosteriors | None
    meta: dict[str, Any] = field(default_factory=dict)

    def score(self, *, user: str, taste: np.ndarray, pids: np.ndarray, vectors: np.ndarray, features: np.ndarray,
              track_version: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(combined score, playlist-BPR score) of the candidates; ``features`` holds the columns of ``FEATURES``
        but the last, which this fills in."""
        bpr = self.bpr.scores(user=user, taste=taste, pids=pids, vectors=vectors,
                              same_space=track_version == self.bpr.track_version)
        full = np.array(features, dtype=np.float64, copy=True)
        full[:, FEATURES.index("playlist_bpr")] = bpr
        full[:, FEATURES.index("follow_rate")] = follow_rate(self.explore, pids=pids, vectors=vectors)
        return self.weights.combine(full), bpr

    def to_bytes(self) -> bytes:
        arrays = {"user_ids": self.bpr.user_ids, "pids": self.bpr.pids, "user_factors": self.bpr.user_factors,
                  "playlist_factors": self.bpr.playlist_factors, "playlist_bias": self.bpr.playlist_bias,
                  "taste_map": self.bpr.taste_map, "w_mean": self.weights.mean, "w_std": self.weights.std,
                  "w_coef": self.weights.coef}
        if self.explore is not None:
            arrays |= {f"explore_{k}": v for k, v in self.explore.arrays().items()}
        meta = {**self.meta, "version": self.version, "track_version": self.bpr.track_version,
                "explore_strength": self.explore.strength if self.explore is not None else None}
        arrays["meta"] = np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)
        out = io.BytesIO()
        np.savez_compressed(out, **arrays)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PlaylistRanker:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            bpr = PlaylistBPR(user_ids=z["user_ids"], pids=z["pids"], user_factors=z["user_factors"],
                              playlist_factors=z["playlist_factors"], playlist_bias=z["playlist_bias"],
                              taste_map=z["taste_map"], track_version=meta["track_version"])
            weights = LearnedWeights(mean=z["w_mean"], std=z["w_std"], coef=z["w_coef"])
            explore = None
            if "explore_centroids" in z.files:
                explore = FollowPosteriors.from_arrays({k.removeprefix("explore_"): z[k] for k in z.files
                                                        if k.startswith("explore_")},
                                                       strength=float(meta["explore_strength"]))
        return cls(version=meta["version"], bpr=bpr, weights=weights, explore=explore, meta=meta)
