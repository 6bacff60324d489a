"""Track scores from a playlist title alone: what playlists with the same (or similar) name hold.

An exact normalised name match wins; otherwise each known word of the title contributes the tracks of the
playlists whose names contain it, weighted by the word's rarity (idf) so that "music" or "playlist" count
little. A title with no known word scores nothing and the caller falls back to popularity.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ingestion.mpd import normalize_name

from .state import csr_from_state, csr_state


class TitleIndex:
    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.words: dict[str, int] = {}
        self.name_items: sp.csr_matrix | None = None
        self.word_items: sp.csr_matrix | None = None
        self.word_idf: np.ndarray | None = None

    def fit(self, names: list[str], matrix: sp.csr_matrix) -> TitleIndex:
        """``names[i]`` is row i's title (already normalised or not); ``matrix`` rows × items, binary."""
        names = [normalize_name(n) for n in names]
        name_rows, word_rows, word_cols = [], [], []
        for row, name in enumerate(names):
            if not name:
                continue
            name_rows.append((self.names.setdefault(name, len(self.names)), row))
            for word in set(name.split()):
                word_rows.append(self.words.setdefault(word, len(self.words)))
                word_cols.append(row)
        n_rows = matrix.shape[0]
        by_name = _incidence(name_rows, (len(self.names), n_rows))
        by_word = _incidence(list(zip(word_rows, word_cols, strict=True)), (len(self.words), n_rows))
        self.name_items = (by_name @ matrix).tocsr()
        self.word_items = (by_word @ matrix).tocsr()
        df = np.asarray(by_word.sum(axis=1)).ravel()
        self.word_idf = np.log1p(n_rows / np.maximum(df, 1)).astype(np.float32)
        return self

    def scores(self, titles: list[str | None], n_items: int) -> np.ndarray:
        """Dense scores (len(titles) × n_items); all zero for a title the index knows nothing of."""
        out = np.zeros((len(titles), n_items), dtype=np.float32)
        for i, title in enumerate(titles):
            name = normalize_name(title or "")
            if not name:
                continue
            if name in self.names:
                out[i] = self.name_items[self.names[name]].toarray().ravel()
                continue
            for word in set(name.split()):
                w = self.words.get(word)
                if w is not None:
                    row = self.word_items[w]
                    out[i, row.indices] += self.word_idf[w] * row.data / max(row.data.max(), 1.0)
        return out

    # Persistence inside a model artifact (``ranker.training.artifacts``): plain arrays only.
    def get_state(self) -> dict[str, np.ndarray]:
        state = {"names": np.asarray(list(self.names), dtype=str), "words": np.asarray(list(self.words), dtype=str),
                 "word_idf": self.word_idf}
        for key in ("name_items", "word_items"):
            state |= csr_state(key, getattr(self, key))
        return state

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> TitleIndex:
        index = cls()
        index.names = {n: i for i, n in enumerate(state["names"].tolist())}
        index.words = {w: i for i, w in enumerate(state["words"].tolist())}
        index.word_idf = state["word_idf"]
        for key in ("name_items", "word_items"):
            setattr(index, key, csr_from_state(state, key))
        return index


def _incidence(pairs: list[tuple[int, int]], shape: tuple[int, int]) -> sp.csr_matrix:
    if not pairs:
        return sp.csr_matrix(shape, dtype=np.float32)
    rows, cols = np.asarray(pairs, dtype=np.int64).T
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
