"""A text model learned from the MPD's own names: playlist titles, track titles and artist names in one space.

The space is that of a name's *features*: its words and the character 3- and 4-grams of each word (so "chill",
"chillin", "chilll" and "chill vibes" share most features), weighted by TF-IDF over the playlist names and
L2-normalised. In it:

- a playlist is its name's vector;
- a track is the mean of the names of the playlists that hold it, plus (at ``own_weight``) its own title's and
  artist's features: "name tokens → tracks", learned from which names people give to which tracks;
- free text (a title being made, a mood query) is embedded the same way.

Tracks for a text are scored through the nearest playlist names (``neighbours`` of them, each weighted by its
cosine similarity to the power ``power``): a track held by many playlists whose names are close scores high, so
the ranking carries the popularity *among playlists named like this* and not across the catalogue. Tracks whose
own title or artist matches are added at ``own_weight``. Every product is sparse and exact (the index is the
playlists' name matrix itself: no approximate search, no download, nothing outside the model version).
``docs/adr/0017-text-model.md`` gives the measurement that chose this over a factorised (SVD) dense space and
over a sentence-embedding model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ingestion.mpd import normalize_name

from .base import weighted_rows
from .state import csr_from_state, csr_state

# Title-heavy continuation: a playlist with a title and at most this many seeds gets the recommender's ranking
# fused with the text model's (``fuse_ranked``); the text's weight falls as seeds add evidence.
TITLE_HEAVY_SEEDS = 5
TITLE_HEAVY_WEIGHT = 1.0
RRF_K = 60  # reciprocal-rank fusion's constant (Cormack et al. 2009)

# A playlist name less similar than this to a text says nothing about it: one shared n-gram ("zz " of "jazz" for
# "zzzz") is not a match. Searches and title scores ignore such names.
MIN_SIMILARITY = 0.1

NGRAMS = (3, 4)
MIN_DF = 2  # a feature seen in a single name says nothing about any other name


def features(text: str) -> list[str]:
    """The features of a text: ``w:<word>`` for each word and the character n-grams of `` word `` (padded, so
    that a word's start and end are features of their own)."""
    out = []
    for word in normalize_name(text or "").split():
        out.append(f"w:{word}")
        padded = f" {word} "
        for n in NGRAMS:
            out.extend(padded[i:i + n] for i in range(len(padded) - n + 1))
    return out


@dataclass(frozen=True)
class Match:
    """Why a result matched: the query's features that it shares (the most weighted first) and the similarity."""

    index: int
    score: float
    similarity: float
    shared: list[str]


class TextModel:
    """Fit on playlist names and the playlists × tracks matrix; embed text; score tracks; find playlists."""

    def __init__(self, *, neighbours: int = 200, power: float = 2.0, own_weight: float = 1.0) -> None:
        self.neighbours = neighbours
        self.power = power
        self.own_weight = own_weight
        self.vocab: dict[str, int] = {}
        self.idf: np.ndarray = np.zeros(0, dtype=np.float32)
        self.name_vectors: sp.csr_matrix | None = None  # playlists × features, L2 rows
        self.item_own: sp.csr_matrix | None = None  # tracks × features: own title and artist, L2 rows
        self.playlist_items: sp.csr_matrix | None = None  # playlists × tracks, binary (not saved: the model's)
        self._item_playlists: sp.csc_matrix | None = None

    # -- fitting -----------------------------------------------------------------------------------------------

    def fit(self, names: list[str], playlist_items: sp.csr_matrix, *, item_names: list[str] | np.ndarray | None = None,
            item_artists: list[str] | np.ndarray | None = None) -> TextModel:
        """``names[i]`` is row i's title ("" for a row that must not be learned from, such as a test playlist)."""
        docs = [features(n) for n in names]
        counts: dict[str, int] = {}
        for doc in docs:
            for f in set(doc):
                counts[f] = counts.get(f, 0) + 1
        named = sum(1 for d in docs if d)
        self.vocab = {f: i for i, f in enumerate(sorted(f for f, c in counts.items() if c >= MIN_DF))}
        df = np.asarray([counts[f] for f in self.vocab], dtype=np.float64)
        self.idf = (np.log((1 + named) / (1 + df)) + 1).astype(np.float32)
        self.name_vectors = self.transform_many(names, _docs=docs)
        n_items = playlist_items.shape[1]
        if item_names is not None and item_artists is not None and len(item_names) == n_items:
            # Only tracks some playlist holds: a track no playlist holds is one nothing was learned from (offline,
            # one that only a test playlist's hidden part holds; found by its own title, it would give itself away).
            held = np.asarray((playlist_items > 0).sum(axis=0)).ravel() > 0
            own = [f"{t} {a}" if h else "" for t, a, h in zip(np.asarray(item_names).tolist(),
                                                               np.asarray(item_artists).tolist(), held, strict=True)]
            self.item_own = self.transform_many(own)
        else:
            self.item_own = sp.csr_matrix((n_items, len(self.vocab)), dtype=np.float32)
        return self.bind(playlist_items)

    @property
    def _own_t(self) -> sp.csr_matrix:
        """Features × tracks (own title and artist), kept: a query's own matches are one sparse product."""
        if getattr(self, "_own_t_cache", None) is None:
            self._own_t_cache = self.item_own.T.tocsr()
        return self._own_t_cache

    @property
    def _names_t(self) -> sp.csr_matrix:
        """Features × playlists, kept: transposing the names for every query cost more than the product."""
        if getattr(self, "_names_t_cache", None) is None:
            self._names_t_cache = self.name_vectors.T.tocsr()
        return self._names_t_cache

    def bind(self, playlist_items: sp.csr_matrix) -> TextModel:
        """Attach the playlists × tracks matrix the names belong to (a model version keeps it once, elsewhere)."""
        if self.name_vectors is not None and playlist_items.shape[0] != self.name_vectors.shape[0]:
            raise ValueError(f"{playlist_items.shape[0]} playlists for {self.name_vectors.shape[0]} names")
        self.playlist_items = sp.csr_matrix(playlist_items, dtype=np.float32)
        self._item_playlists = None
        return self

    # -- embedding ---------------------------------------------------------------------------------------------

    def transform_many(self, texts: list[str], *, _docs: list[list[str]] | None = None,
                       query: bool = False) -> sp.csr_matrix:
        """Texts × features, TF-IDF with sublinear term frequency, L2-normalised rows (all zero: nothing known).

        For a ``query``, the features the vocabulary lacks count in the norm too, each as rare as the rarest known
        one: a text of which one n-gram is known ("zz " of "zzzz qqqq") is then barely similar to anything, and
        the ranking of names for one text is unchanged (the same factor scales all its similarities)."""
        rows, cols, vals = [], [], []
        vocab = self.vocab
        unknown = np.zeros(len(texts), dtype=np.float64)
        unknown_idf = float(self.idf.max()) if len(self.idf) else 1.0
        for r, doc in enumerate(_docs if _docs is not None else (features(t) for t in texts)):
            tf: dict[int, int] = {}
            missing: dict[str, int] = {}
            for f in doc:
                j = vocab.get(f)
                if j is not None:
                    tf[j] = tf.get(j, 0) + 1
                elif query:
                    missing[f] = missing.get(f, 0) + 1
            unknown[r] = sum(((1.0 + np.log(c)) * unknown_idf) ** 2 for c in missing.values())
            rows.extend([r] * len(tf))
            cols.extend(tf)
            vals.extend(tf.values())
        n = len(texts)
        m = sp.csr_matrix((np.asarray(vals, dtype=np.float32), (np.asarray(rows, dtype=np.int64),
                                                                 np.asarray(cols, dtype=np.int64))),
                          shape=(n, len(vocab)))
        m.data = (1.0 + np.log(m.data)) * self.idf[m.indices]
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel() + unknown)
        m = sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ m
        return sp.csr_matrix(m, dtype=np.float32)

    def transform(self, text: str) -> sp.csr_matrix:
        """One query text, embedded (``transform_many(query=True)``)."""
        return self.transform_many([text], query=True)

    # -- queries -----------------------------------------------------------------------------------------------

    def playlist_similarities(self, query: sp.csr_matrix) -> np.ndarray:
        """Cosine similarity of one embedded text to every playlist name (dense, one per playlist)."""
        return np.asarray((self.name_vectors @ query.T).todense()).ravel()

    def scores(self, titles: list[str | None], n_items: int) -> np.ndarray:
        """Dense track scores (len(titles) × n_items), zero where nothing is known: ``TitleIndex.scores``'s shape."""
        out = np.zeros((len(titles), n_items), dtype=np.float32)
        if not titles:
            return out
        queries = self.transform_many([t or "" for t in titles], query=True)
        sims = (queries @ self._names_t).tocsr()
        own_weight = self.own_weight if self.item_own is not None and self.item_own.nnz else 0.0
        own_all = (queries @ self._own_t).tocsr() if own_weight else None
        held = self.playlist_items
        for i in range(len(titles)):
            data, names = sims.data[sims.indptr[i]:sims.indptr[i + 1]], sims.indices[sims.indptr[i]:sims.indptr[i + 1]]
            keep = np.flatnonzero(data >= MIN_SIMILARITY)
            if len(keep):
                keep = keep[np.argsort(-data[keep], kind="stable")[:self.neighbours]]
                out[i] = weighted_rows(held, names[keep], data[keep] ** self.power)  # their playlists' tracks
            if own_all is not None:
                own = own_all[i]
                near = own.data >= MIN_SIMILARITY
                out[i, own.indices[near]] += own_weight * max(float(out[i].max()), 1.0) * own.data[near] ** 2
        return out

    def search_playlists(self, text: str, k: int, *, exclude: set[int] | None = None) -> list[Match]:
        """The ``k`` playlists whose names are nearest to ``text`` (cosine), best first."""
        query = self.transform(text)
        if query.nnz == 0:
            return []
        sims = self.playlist_similarities(query)
        if exclude:
            sims[np.fromiter(exclude, dtype=np.int64)] = 0.0
        candidates = np.flatnonzero(sims >= MIN_SIMILARITY)
        order = candidates[np.argsort(-sims[candidates], kind="stable")][:k]
        return [Match(index=int(r), score=float(sims[r]), similarity=float(sims[r]),
                      shared=self.shared_features(query, self.name_vectors[r])) for r in order]

    def search_tracks(self, text: str, k: int) -> tuple[list[Match], np.ndarray]:
        """The ``k`` best tracks for ``text`` and the playlist similarities they came from (for ``why``)."""
        query = self.transform(text)
        if query.nnz == 0:
            return [], np.zeros(0, dtype=np.float32)
        scores = self.scores([text], self.playlist_items.shape[1])[0]
        candidates = np.flatnonzero(scores > 0)
        order = candidates[np.argsort(-scores[candidates], kind="stable")][:k]
        top = float(scores[order[0]]) if len(order) else 1.0
        matches = [Match(index=int(t), score=float(scores[t]) / top, similarity=float(scores[t]) / top,
                         shared=self.shared_features(query, self.item_own[t]) if self.item_own is not None else [])
                   for t in order]
        return matches, self.playlist_similarities(query)

    def playlists_holding(self, item: int, similarities: np.ndarray, n: int = 3) -> list[int]:
        """The ``n`` playlists holding track ``item`` whose names are nearest the query (for a track's ``why``)."""
        if self._item_playlists is None:
            self._item_playlists = self.playlist_items.tocsc()
        m = self._item_playlists
        rows = m.indices[m.indptr[item]:m.indptr[item + 1]]
        rows = rows[similarities[rows] >= MIN_SIMILARITY]
        return rows[np.argsort(-similarities[rows], kind="stable")][:n].tolist()

    def shared_features(self, query: sp.csr_matrix, other: sp.csr_matrix, n: int = 5) -> list[str]:
        """The query's words and n-grams that ``other`` has too, the heaviest in the product first."""
        common, qi, oi = np.intersect1d(query.indices, other.indices, return_indices=True)
        if not len(common):
            return []
        weight = query.data[qi] * other.data[oi]
        names = self.feature_names
        return [names[j].removeprefix("w:") for j in common[np.argsort(-weight, kind="stable")][:n]]

    @property
    def feature_names(self) -> list[str]:
        if getattr(self, "_names", None) is None:
            self._names = list(self.vocab)
        return self._names

    # -- persistence inside a model artifact (``ranker.training.artifacts``): plain arrays only -----------------

    def get_state(self) -> dict[str, np.ndarray]:
        state = {"vocab": np.asarray(list(self.vocab), dtype=str), "idf": self.idf,
                 "params": np.asarray([self.neighbours, self.power, self.own_weight], dtype=np.float64)}
        for key in ("name_vectors", "item_own"):
            state |= csr_state(key, getattr(self, key))
        return state

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], playlist_items: sp.csr_matrix) -> TextModel:
        neighbours, power, own_weight = state["params"].tolist()
        model = cls(neighbours=int(neighbours), power=float(power), own_weight=float(own_weight))
        model.vocab = {f: i for i, f in enumerate(state["vocab"].tolist())}
        model.idf = state["idf"]
        for key in ("name_vectors", "item_own"):
            setattr(model, key, csr_from_state(state, key))
        return model.bind(playlist_items)


def title_heavy(title: str | None, n_seeds: int) -> bool:
    """Whether a playlist being made leans on its title: it has one and only a few seeds."""
    return bool((title or "").strip()) and 0 < n_seeds <= TITLE_HEAVY_SEEDS


def fuse_ranked(model: np.ndarray, text: np.ndarray, *, n_seeds: int, k: int,
                weight: float = TITLE_HEAVY_WEIGHT) -> np.ndarray:
    """Reciprocal-rank fusion of two rankings of item indices (best first): ``1/(RRF_K + rank)`` from the model
    plus ``weight / n_seeds`` times that from the text; the ``k`` best, best first. Rank fusion needs no common
    scale between a blend's scores and the text model's."""
    text_weight = weight / max(n_seeds, 1)
    scores: dict[int, float] = {}
    for rank, item in enumerate(np.asarray(model).tolist()):
        scores[item] = 1.0 / (RRF_K + rank)
    for rank, item in enumerate(np.asarray(text).tolist()):
        scores[item] = scores.get(item, 0.0) + text_weight / (RRF_K + rank)
    order = sorted(scores, key=lambda i: -scores[i])[:k]
    return np.asarray(order, dtype=np.int64)
