"""In-memory snapshots of the store that models train on: raw ids are mapped to indices here, once.

``Playlists`` holds every stored playlist as arrays (ordered track indices, names, owners, followers); the
evaluation harness splits it. ``Interactions`` is the user × track matrix a recommender fits: positives
(tracks of a user's own playlists, liked tracks, plays of 30 s or more) and hard negatives (early skips).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ingestion.feedback.rules import track_signal
from ingestion.selectors import playlist_iter

__all__ = ["Interactions", "Playlists", "rows_matrix"]

# Documents per round trip when reading playlists: a 100-track playlist with this projection is about 12 kB, so
# 5,000 stay well under MongoDB's 16 MB batch limit.
STORE_BATCH = 5000


def _index(ids: np.ndarray) -> dict[str, int]:
    return {raw: i for i, raw in enumerate(ids.tolist())}


@dataclass
class Playlists:
    """Every playlist as arrays: ``tracks[indptr[i]:indptr[i+1]]`` are playlist i's track indices, in order."""

    pids: np.ndarray  # int64
    names: list[str]  # normalised names (``name_norm``)
    owners: list[str]
    followers: np.ndarray  # int64, 0 where unknown
    indptr: np.ndarray  # int64
    tracks: np.ndarray  # int32 indices into item_ids
    item_ids: np.ndarray  # track URIs (unicode array)
    item_artist: np.ndarray  # artist key per item (unicode array)
    item_artist_name: np.ndarray  # artist display name per item (unicode array)
    item_name: np.ndarray | None = None  # track title per item (unicode array); the text model reads it
    item_album: np.ndarray | None = None  # album URI per item ("" unknown); the second stage reads it
    _item_index: dict[str, int] | None = field(default=None, repr=False)

    @classmethod
    def from_docs(cls, docs: Iterable[Mapping[str, Any]]) -> Playlists:
        """Build from stored playlist documents (``_id``, ``name_norm``, ``owner``, ``tracks``, ...), in one pass.

        Track indices go straight into a typed CSR buffer (``indptr`` / ``tracks``); a track's index is the order
        in which it is first seen, and only a first sighting reads its artist fields.
        """
        item_index: dict[str, int] = {}
        lookup = item_index.get
        artists: list[str] = []
        artist_names: list[str] = []
        track_names: list[str] = []
        albums: list[str] = []
        names: list[str] = []
        owners: list[str] = []
        pids, followers, indptr, tracks = array("q"), array("q"), array("q", [0]), array("i")
        add = tracks.append
        for doc in docs:
            pids.append(int(doc["_id"]))
            names.append(doc.get("name_norm") or "")
            owners.append(doc.get("owner") or "")
            followers.append(int(doc.get("num_followers") or 0))
            for track in doc.get("tracks") or ():
                uri = track["uri"]
                idx = lookup(uri)
                if idx is None:
                    idx = item_index[uri] = len(artists)
                    artists.append(track.get("artist_key") or "")
                    artist_names.append(track.get("artist_name") or "")
                    track_names.append(track.get("name") or "")
                    albums.append(track.get("album_uri") or "")
                add(idx)
            indptr.append(len(tracks))
        return cls(
            pids=np.frombuffer(pids, dtype=np.int64).copy(), names=names, owners=owners,
            followers=np.frombuffer(followers, dtype=np.int64).copy(),
            indptr=np.frombuffer(indptr, dtype=np.int64).copy(),
            tracks=np.frombuffer(tracks, dtype=np.int32).copy() if tracks else np.zeros(0, dtype=np.int32),
            item_ids=np.asarray(list(item_index), dtype=str),
            item_artist=np.asarray(artists, dtype=str), item_artist_name=np.asarray(artist_names, dtype=str),
            item_name=np.asarray(track_names, dtype=str), item_album=np.asarray(albums, dtype=str),
            _item_index=item_index,
        )

    @classmethod
    def from_store(cls, *, batch_size: int = STORE_BATCH) -> Playlists:
        """Every stored playlist in one streaming pass: only the fields used, ``batch_size`` documents a round trip."""

        fields = ("name_norm", "owner", "num_followers", "tracks.uri", "tracks.artist_key", "tracks.artist_name",
                  "tracks.name", "tracks.album_uri")
        return cls.from_docs(playlist_iter(fields=fields, batch_size=batch_size))

    def __len__(self) -> int:
        return len(self.pids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def item_index(self) -> dict[str, int]:
        if self._item_index is None:
            self._item_index = _index(self.item_ids)
        return self._item_index

    def tracks_of(self, row: int) -> np.ndarray:
        return self.tracks[self.indptr[row]:self.indptr[row + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def matrix(self) -> sp.csr_matrix:
        """Playlists × tracks, binary (a track twice in one playlist counts once). Its arrays are its own: sorting
        its indices (``sum_duplicates`` here, or a model's fit) must not reorder ``tracks``, the playlists' order."""
        m = sp.csr_matrix((np.ones(len(self.tracks), dtype=np.float32), self.tracks.copy(), self.indptr.copy()),
                          shape=(len(self), self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def sample(self, n: int, *, seed: int = 0) -> Playlists:
        """``n`` playlists drawn without replacement (seeded), in their stored order; all of them when ``n`` is at
        least their number. Items are re-indexed compactly to the tracks the sample holds, so a small sample of a
        large catalogue scores a small matrix."""
        if n >= len(self):
            return self
        if n < 0:
            raise ValueError(f"cannot sample {n} playlists")
        rows = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.lengths()[rows], out=indptr[1:])
        kept = np.concatenate([self.tracks_of(r) for r in rows]) if n else np.zeros(0, dtype=np.int32)
        used, tracks = np.unique(kept, return_inverse=True)
        return Playlists(
            pids=self.pids[rows], names=[self.names[r] for r in rows], owners=[self.owners[r] for r in rows],
            followers=self.followers[rows], indptr=indptr, tracks=tracks.astype(np.int32).ravel(),
            item_ids=self.item_ids[used], item_artist=self.item_artist[used],
            item_artist_name=self.item_artist_name[used],
            item_name=self.item_name[used] if self.item_name is not None else None,
            item_album=self.item_album[used] if self.item_album is not None else None,
        )


def rows_matrix(rows: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """A binary CSR matrix whose row i holds the item indices ``rows[i]``."""
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, dtype=np.int32)
    m = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(rows), n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


@dataclass
class Interactions:
    """What a recommender fits: ``positives`` (users × items, binary) and optional hard ``negatives``."""

    user_ids: np.ndarray  # unicode array
    item_ids: np.ndarray  # unicode array
    positives: sp.csr_matrix
    negatives: sp.csr_matrix | None = None
    _user_index: dict[str, int] | None = field(default=None, repr=False)
    _item_index: dict[str, int] | None = field(default=None, repr=False)

    @property
    def user_index(self) -> dict[str, int]:
        if self._user_index is None:
            self._user_index = _index(self.user_ids)
        return self._user_index

    @property
    def item_index(self) -> dict[str, int]:
        if self._item_index is None:
            self._item_index = _index(self.item_ids)
        return self._item_index

    @classmethod
    def build(cls, *, playlists: Playlists, events: Iterable[Mapping[str, Any]] = ()) -> Interactions:
        """Users are playlist owners (``ingestion.ownership``); events add positives and hard negatives.

        Events on tracks the catalogue does not know are ignored: no model can score them.
        """
        user_index: dict[str, int] = {}
        rows = np.empty(len(playlists.tracks), dtype=np.int64)
        for i, owner in enumerate(playlists.owners):
            rows[playlists.indptr[i]:playlists.indptr[i + 1]] = user_index.setdefault(owner, len(user_index))
        # Events go into flat typed buffers (row, col pairs), never one small array per event.
        event_pos, event_neg = array("q"), array("q")
        items = playlists.item_index
        for event in events:
            col = items.get(event.get("track") or "")
            if col is None:
                continue
            row = user_index.setdefault(event["user"], len(user_index))
            signal = track_signal(event["kind"], event.get("ms_played"))
            if signal > 0:
                event_pos.extend((row, col))
            elif signal < 0:
                event_neg.extend((row, col))
        shape = (len(user_index), playlists.n_items)
        extra = np.frombuffer(event_pos, dtype=np.int64).reshape(-1, 2) if event_pos else np.zeros((0, 2), np.int64)
        positives = _binary(np.concatenate([rows, extra[:, 0]]),
                            np.concatenate([playlists.tracks.astype(np.int64), extra[:, 1]]), shape)
        negatives = None
        if event_neg:
            negatives = _binary(*np.frombuffer(event_neg, dtype=np.int64).reshape(-1, 2).T, shape)
            # A track the user also liked or played through is not a negative.
            negatives = negatives - negatives.multiply(positives)
            negatives.eliminate_zeros()
        return cls(user_ids=np.asarray(list(user_index), dtype=str), item_ids=playlists.item_ids,
                   positives=positives, negatives=negatives, _user_index=user_index,
                   _item_index=playlists._item_index)

    def snapshot(self) -> dict[str, int]:
        """Sizes recorded with a model, so a model's data can be told apart from another's."""
        return {"users": len(self.user_ids), "items": len(self.item_ids), "positives": int(self.positives.nnz),
                "negatives": int(self.negatives.nnz) if self.negatives is not None else 0}


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m
