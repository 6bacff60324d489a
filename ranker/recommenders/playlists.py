"""Playlist picks: organic playlists of your taste buddies (and their nearest neighbours), re-ranked.

Candidates are the playlists owned by the user's buddies plus the nearest playlist vectors to the user's taste
vector (a playlist's vector is the normalised mean of its tracks' BPR vectors). Each candidate gets

    score = affinity · z(BPR affinity) + familiarity · (share of its artists the user knows)
            + discovery · (share of its tracks new to the user)

and picks are taken greedily, each time subtracting ``diversity`` × the candidate's largest track-set Jaccard
with the picks already made (maximal marginal relevance), so ten near-copies of one playlist never fill a page.
The user's own playlists and those they follow are never picked. Every pick explains itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .ann import inner_product_index
from .playlist_ranker import FEATURES
from .vectors import normalize_rows, taste_vectors


@dataclass(frozen=True)
class PlaylistWeights:
    affinity: float = 1.0
    familiarity: float = 0.3
    discovery: float = 0.3
    diversity: float = 0.5
    buddies: int = 20  # buddies whose playlists are candidates
    neighbours: int = 100  # nearest playlist vectors added as candidates

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> PlaylistWeights:
        raw = raw or {}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown playlist weights {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pick:
    row: int  # playlist row in the space
    score: float
    affinity: float
    new_share: float
    known_artist_share: float
    buddy: str | None = None
    buddy_similarity: float | None = None
    shared_artists: list[str] = field(default_factory=list)
    explore: dict[str, Any] | None = None  # an exploration slot's posterior and sample (``explore.explore_info``)


# The nearest playlist vectors come from an exact (flat) search up to this many candidate playlists: at the MPD's
# 1,000,000 it costs 0.72 ms a user on 2 cores, a few per cent of a user's picks, for exact neighbours. Above it, IVF
# (``ann``) scanning SEARCH_NPROBE lists of about 1,000 playlists: a cost per user that no longer grows, for a recall
# of the exact 100 of 0.77 on diffuse synthetic vectors at 1M and 1.00 on a trained model's at 50k (nprobe 8 reads
# 0.49 and 1.00). bench/playlist_search.py, docs/BENCHMARKS.md.
SEARCH_EXACT_MAX = 2_000_000
SEARCH_NPROBE = 32


class PlaylistSpace:
    """Playlists as rows: their tracks, artists, owners and vectors, with a FAISS index over the vectors."""

    def __init__(self, *, playlist_items: sp.csr_matrix, item_factors: np.ndarray, item_bias: np.ndarray,
                 item_artist: np.ndarray, item_artist_name: np.ndarray, owners: np.ndarray,
                 candidate_mask: np.ndarray | None = None, exact_max: int = SEARCH_EXACT_MAX) -> None:
        self.items = playlist_items.tocsr()
        self.item_factors, self.item_bias = item_factors, item_bias
        keys, self.item_artist_idx = np.unique(item_artist, return_inverse=True)
        self.artist_names = np.empty(len(keys), dtype=object)
        self.artist_names[self.item_artist_idx] = item_artist_name
        self.owners = owners
        n_items = len(self.item_artist_idx)
        self._track_artist = sp.csr_matrix((np.ones(n_items, dtype=np.float32), (np.arange(n_items),
                                            self.item_artist_idx)), shape=(n_items, len(keys)))
        self.vectors = taste_vectors(item_factors, self.items)
        self._means: tuple[np.ndarray, np.ndarray] | None = None
        self._artists: sp.csr_matrix | None = None
        # Rows that may be recommended (the evaluation hides test playlists); default: all.
        self.candidate_mask = np.ones(self.items.shape[0], dtype=bool) if candidate_mask is None else candidate_mask
        self.exact_max = exact_max  # candidate playlists: above this many, the vector search is IVF (``ann``)
        self._index = None
        self._rows = None

    def nearest(self, vector: np.ndarray, n: int) -> np.ndarray:
        """Rows of the ``n`` candidate playlists whose vectors are closest (cosine) to ``vector``."""
        if self._index is None:
            self._rows = np.flatnonzero(self.candidate_mask & (np.abs(self.vectors).sum(axis=1) > 0))
            self._index = inner_product_index(self.vectors[self._rows], exact_max=self.exact_max,
                                              nprobe=SEARCH_NPROBE)
        if n <= 0 or len(self._rows) == 0:
            return np.zeros(0, dtype=np.int64)
        query = normalize_rows(vector[None, :])
        _, ids = self._index.search(query, min(n, len(self._rows)))
        return self._rows[ids[0][ids[0] >= 0]]

    def nearest_many(self, vectors: np.ndarray, n: int) -> list[np.ndarray]:
        """``nearest`` for each row of ``vectors`` (unit taste vectors), in one batched search."""
        self.nearest(np.ones(self.vectors.shape[1], dtype=np.float32), 0)  # builds the index on first use
        if n <= 0 or len(self._rows) == 0 or len(vectors) == 0:
            return [np.zeros(0, dtype=np.int64) for _ in range(len(vectors))]
        _, ids = self._index.search(normalize_rows(vectors), min(n, len(self._rows)))
        return [self._rows[row[row >= 0]] for row in ids]

    def user_vectors(self, tracks: list[np.ndarray]) -> np.ndarray:
        """One taste vector per user from their liked track indices (``user_vector`` for many)."""
        lengths = np.asarray([len(t) for t in tracks], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate(tracks).astype(np.int64) if len(tracks) else np.zeros(0, dtype=np.int64)
        rows = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                             shape=(len(tracks), self.item_factors.shape[0]))
        return taste_vectors(self.item_factors, rows)

    def _playlist_means(self) -> tuple[np.ndarray, np.ndarray]:
        """Each playlist's mean track factors and mean track bias, so that a candidate's BPR affinity (the mean of
        its tracks' scores) is one dot product, not a gather of all its tracks' factors per user."""
        if self._means is None:
            sizes = np.maximum(np.asarray(self.items.sum(axis=1)).ravel(), 1.0)
            factors = np.asarray(self.items @ self.item_factors, dtype=np.float32) / sizes[:, None].astype(np.float32)
            self._means = factors, np.asarray(self.items @ self.item_bias).ravel() / sizes
        return self._means

    def _playlist_artists(self) -> sp.csr_matrix:
        """Playlists × artists: how many of the playlist's tracks are by that artist (built once, on first use)."""
        if self._artists is None:
            artists = (self.items @ self._track_artist).tocsr()
            artists.sort_indices()
            self._artists = artists
        return self._artists

    def tracks(self, row: int) -> np.ndarray:
        return self.items.indices[self.items.indptr[row]:self.items.indptr[row + 1]]

    def _stats(self, rows: np.ndarray, user_vector: np.ndarray, user_tracks: np.ndarray) -> dict[str, Any]:
        """The candidates' tracks (binary rows), BPR affinity, new-track share and known-artist share."""
        sub = self.items[rows]  # candidates × tracks, binary
        sizes = np.maximum(np.asarray(sub.sum(axis=1)).ravel(), 1.0)
        entry_row = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
        mean_factors, mean_bias = self._playlist_means()
        affinity = mean_factors[rows] @ user_vector + mean_bias[rows]
        # The candidates' distinct tracks, once: a track test is then a lookup per entry, not a sort (``rank``
        # makes one per pick).
        local, inverse = np.unique(sub.indices, return_inverse=True)
        mine = np.isin(local, user_tracks)[inverse]
        new_share = 1.0 - np.bincount(entry_row, weights=np.asarray(sub.data, dtype=np.float64) * mine,
                                      minlength=len(rows)) / sizes
        artists = self._playlist_artists()[rows]
        my_artists = np.unique(self.item_artist_idx[user_tracks])
        known_entry = np.isin(artists.indices, my_artists)
        known = np.bincount(np.repeat(np.arange(len(rows)), np.diff(artists.indptr)), weights=known_entry,
                            minlength=len(rows))
        known_artists = known / np.maximum(np.diff(artists.indptr), 1)
        return {"sub": sub, "sizes": sizes, "entry_row": entry_row, "affinity": affinity, "new_share": new_share,
                "artists": artists, "known_entry": known_entry, "known_artists": known_artists,
                "n_local": len(local), "inverse": inverse}

    def features(self, *, user_vector: np.ndarray, user_tracks: np.ndarray, rows: np.ndarray,
                 buddy_of: dict[int, tuple[str, float]] | None = None) -> np.ndarray:
        """The ranking features of playlists ``rows`` for one user: columns ``playlist_ranker.FEATURES``, the
        playlist-BPR score and the follow rate left 0 (the learned ranker fills them in)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), len(FEATURES)), dtype=np.float64)
        if len(rows) == 0:
            return out
        stats = self._stats(rows, user_vector, user_tracks)
        out[:, FEATURES.index("affinity")] = stats["affinity"]
        out[:, FEATURES.index("familiarity")] = stats["known_artists"]
        out[:, FEATURES.index("novelty")] = stats["new_share"]
        out[:, FEATURES.index("buddy")] = [(buddy_of or {}).get(int(r), (None, 0.0))[1] for r in rows]
        out[:, FEATURES.index("size")] = np.log1p(stats["sizes"])
        return out

    def rank(self, *, user_vector: np.ndarray, user_tracks: np.ndarray, candidates: np.ndarray,
             exclude: set[int], buddy_of: dict[int, tuple[str, float]], weights: PlaylistWeights, k: int,
             scorer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
             explore: Callable[[np.ndarray, int], list[tuple[int, dict[str, Any]]]] | None = None,
             explore_slots: int = 0) -> list[Pick]:
        """Score the ``candidates`` for one user and pick ``k`` greedily for relevance and diversity.

        ``scorer(rows, features)`` replaces the hand-set score (``features``: columns ``FEATURES``, as
        ``features`` returns them); ``explore(rows, slots)``, when given with ``explore_slots``, fills the last
        ``explore_slots`` places from the candidates not picked, as (index into ``rows``, why) pairs.
        Vectorised over the candidates' tracks only (never a pass over the whole catalogue), so a user costs a few
        milliseconds whatever the catalogue's size.
        """
        rows = np.asarray([r for r in dict.fromkeys(candidates.tolist())
                           if r not in exclude and self.candidate_mask[r]
                           and self.items.indptr[r + 1] > self.items.indptr[r]], dtype=np.int64)
        if len(rows) == 0:
            return []
        st = self._stats(rows, user_vector, user_tracks)
        sub, sizes, entry_row, inverse = st["sub"], st["sizes"], st["entry_row"], st["inverse"]
        affinity, new_share, known_artists = st["affinity"], st["new_share"], st["known_artists"]
        artists, known_entry = st["artists"], st["known_entry"]
        if scorer is None:
            z = (affinity - affinity.mean()) / affinity.std() if affinity.std() > 0 else np.zeros_like(affinity)
            base = weights.affinity * z + weights.familiarity * known_artists + weights.discovery * new_share
        else:
            feats = np.zeros((len(rows), len(FEATURES)), dtype=np.float64)
            feats[:, FEATURES.index("affinity")] = affinity
            feats[:, FEATURES.index("familiarity")] = known_artists
            feats[:, FEATURES.index("novelty")] = new_share
            feats[:, FEATURES.index("buddy")] = [buddy_of.get(int(r), (None, 0.0))[1] for r in rows]
            feats[:, FEATURES.index("size")] = np.log1p(sizes)
            base = np.asarray(scorer(rows, feats), dtype=np.float64)
        slots = max(0, min(int(explore_slots), k)) if explore is not None else 0

        def pick(best: int, score: float, why: dict[str, Any] | None = None) -> Pick:
            r = int(rows[best])
            buddy = buddy_of.get(r)
            return Pick(row=r, score=round(float(score), 6), affinity=round(float(affinity[best]), 6),
                        new_share=round(float(new_share[best]), 4),
                        known_artist_share=round(float(known_artists[best]), 4),
                        buddy=buddy[0] if buddy else None,
                        buddy_similarity=round(buddy[1], 6) if buddy else None,
                        shared_artists=self._shared_artists(artists, best, known_entry), explore=why)

        # Jaccard with the picks made so far, one column per pick (k columns, not a candidates × candidates product).
        picks: list[Pick] = []
        closest = np.zeros(len(rows), dtype=np.float32)  # each candidate's largest Jaccard with the picks so far
        left = np.ones(len(rows), dtype=bool)
        in_best = np.zeros(st["n_local"], dtype=bool)  # the pick's tracks, over the candidates' distinct tracks
        while left.any() and len(picks) < k - slots:
            gains = np.where(left, base - weights.diversity * closest, -np.inf)
            best = int(np.argmax(gains))
            left[best] = False
            best_local = inverse[sub.indptr[best]:sub.indptr[best + 1]]
            in_best[best_local] = True
            overlap = np.bincount(entry_row, weights=in_best[inverse], minlength=len(rows)).astype(np.float32)
            in_best[best_local] = False
            closest = np.maximum(closest, overlap / (sizes + sizes[best] - overlap))
            picks.append(pick(best, gains[best]))
        if slots and left.any():
            remaining = np.flatnonzero(left)
            for index, why in explore(rows[remaining], slots):
                best = int(remaining[index])
                picks.append(pick(best, base[best], why))
        return picks

    def _shared_artists(self, artists: sp.csr_matrix, row: int, known_entry: np.ndarray, n: int = 3) -> list[str]:
        """The user's artists that candidate ``row`` of ``artists`` (candidates × artists, track counts) holds most
        tracks of; ``known_entry`` flags the entries of ``artists`` that are the user's artists."""
        start, end = artists.indptr[row], artists.indptr[row + 1]
        known = known_entry[start:end]
        ids, counts = artists.indices[start:end][known], artists.data[start:end][known]
        order = np.argsort(-counts, kind="stable")[:n]
        return [str(self.artist_names[a]) for a in ids[order]]


def user_vector(item_factors: np.ndarray, user_tracks: np.ndarray) -> np.ndarray:
    """The user's taste vector: the normalised mean of their tracks' vectors (as for pairing)."""
    row = sp.csr_matrix((np.ones(len(user_tracks), dtype=np.float32), user_tracks,
                         np.asarray([0, len(user_tracks)])), shape=(1, item_factors.shape[0]))
    return taste_vectors(item_factors, row)[0]
