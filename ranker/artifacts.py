"""The served ranker as one immutable, versioned artifact directory under ``MODEL_DIR/ranker/<version>/``.

A version is written whole into a hidden temporary directory beside its final place and renamed into it
(one atomic ``rename`` on the same filesystem), so a reader sees a complete model or none, and a training
killed half-way leaves only a ``.tmp-*`` directory that nothing reads. Files: ``meta.json`` (parameters,
data snapshot, metrics), ``data.npz`` (user and track ids, the users × tracks training matrix, track
artists, popularity), ``titles.npz`` and the recommender's own ``.npz``/``.json`` files. Every ``.npz`` is
read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .recommenders import BPR, Blend, Recommender
from .title import TitleIndex

KIND = "ranker"


def model_root(model_dir: str | Path | None = None) -> Path:
    if model_dir is None:
        from django.conf import settings

        model_dir = settings.MODEL_DIR
    return Path(model_dir) / KIND


@dataclass
class RankerModel:
    """Everything serving needs: ids ↔ indices, the training matrix, the recommender, titles, popularity."""

    version: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_items: sp.csr_matrix
    item_artist: np.ndarray
    item_artist_name: np.ndarray
    recommender: Recommender
    titles: TitleIndex
    popularity: np.ndarray
    playlist_ids: np.ndarray  # pids, one per row of playlist_items
    playlist_items: sp.csr_matrix  # playlists × tracks (candidates for playlist picks)
    playlist_owners: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    _user_index: dict[str, int] | None = field(default=None, repr=False)
    _item_index: dict[str, int] | None = field(default=None, repr=False)
    _space: Any = field(default=None, repr=False)
    _playlist_row: dict[int, int] | None = field(default=None, repr=False)
    _owner_rows: dict[str, list[int]] | None = field(default=None, repr=False)

    @property
    def user_index(self) -> dict[str, int]:
        if self._user_index is None:
            self._user_index = {u: i for i, u in enumerate(self.user_ids.tolist())}
        return self._user_index

    @property
    def item_index(self) -> dict[str, int]:
        if self._item_index is None:
            self._item_index = {t: i for i, t in enumerate(self.item_ids.tolist())}
        return self._item_index

    @property
    def playlist_row(self) -> dict[int, int]:
        """pid → row of ``playlist_items`` (built on first use: a picks request must not pay it)."""
        if self._playlist_row is None:
            self._playlist_row = {int(p): r for r, p in enumerate(self.playlist_ids.tolist())}
        return self._playlist_row

    def owner_rows(self, owner: str) -> list[int]:
        """Rows of the playlists ``owner`` made (an index, not a scan of every owner per buddy)."""
        if self._owner_rows is None:
            index: dict[str, list[int]] = {}
            for row, who in enumerate(self.playlist_owners.tolist()):
                index.setdefault(who, []).append(row)
            self._owner_rows = index
        return self._owner_rows.get(owner, [])

    @property
    def bpr(self) -> BPR | None:
        """The BPR component, whose track vectors pairing and playlist picks use."""
        if isinstance(self.recommender, BPR):
            return self.recommender
        if isinstance(self.recommender, Blend):
            return next((m for m, _ in self.recommender.components if isinstance(m, BPR)), None)
        return None

    def playlist_space(self) -> Any:
        """The playlists as a ``ranker.playlists.PlaylistSpace`` (built on first use, then kept)."""
        if self._space is None:
            from .playlists import PlaylistSpace

            bpr = self.bpr
            if bpr is None:
                raise RuntimeError(f"model {self.version} has no BPR component: no playlist vectors")
            self._space = PlaylistSpace(playlist_items=self.playlist_items, item_factors=bpr.item_factors,
                                        item_bias=bpr.item_bias, item_artist=self.item_artist,
                                        item_artist_name=self.item_artist_name, owners=self.playlist_owners)
        return self._space

    def item_vectors(self) -> np.ndarray:
        bpr = self.bpr
        if bpr is None:
            raise RuntimeError(f"model {self.version} has no BPR component: no track vectors")
        return bpr.item_factors

    # -- persistence ---------------------------------------------------------------------------------------

    def save(self, model_dir: str | Path | None = None) -> Path:
        """Write this version atomically; returns its directory. An existing version is never overwritten."""
        root = model_root(model_dir)
        root.mkdir(parents=True, exist_ok=True)
        final = root / self.version
        if final.exists():
            raise FileExistsError(f"model version {self.version} already exists at {final}")
        tmp = root / f".tmp-{self.version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            m = self.user_items
            np.savez(tmp / "data.npz", user_ids=self.user_ids, item_ids=self.item_ids, indptr=m.indptr,
                     indices=m.indices, shape=np.asarray(m.shape), item_artist=self.item_artist,
                     item_artist_name=self.item_artist_name, popularity=self.popularity)
            p = self.playlist_items
            np.savez(tmp / "playlists.npz", ids=self.playlist_ids, owners=self.playlist_owners, indptr=p.indptr,
                     indices=p.indices, shape=np.asarray(p.shape))
            np.savez(tmp / "titles.npz", **self.titles.get_state())
            self.recommender.save(tmp / "recommender")
            (tmp / "meta.json").write_text(json.dumps(self.meta | {"version": self.version}, indent=2,
                                                      sort_keys=True, default=str))
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    @classmethod
    def load(cls, version: str, model_dir: str | Path | None = None) -> RankerModel:
        path = model_root(model_dir) / version
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"no model version {version} under {path.parent}")
        meta = json.loads((path / "meta.json").read_text())
        with np.load(path / "data.npz", allow_pickle=False) as d:
            indices = d["indices"]
            user_items = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, d["indptr"]),
                                       shape=tuple(d["shape"]))
            arrays = {k: d[k] for k in ("user_ids", "item_ids", "item_artist", "item_artist_name", "popularity")}
        with np.load(path / "playlists.npz", allow_pickle=False) as p:
            indices = p["indices"]
            arrays |= {"playlist_ids": p["ids"], "playlist_owners": p["owners"],
                       "playlist_items": sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices,
                                                        p["indptr"]), shape=tuple(p["shape"]))}
        with np.load(path / "titles.npz", allow_pickle=False) as t:
            titles = TitleIndex.from_state({k: t[k] for k in t.files})
        recommender_meta = json.loads((path / "recommender.json").read_text())
        loader = Blend if recommender_meta.get("class") == Blend.name else Recommender
        recommender = loader.load(path / "recommender")
        return cls(version=version, user_items=user_items, recommender=recommender, titles=titles, meta=meta,
                   **arrays)


def new_version() -> str:
    """Sortable and unique: UTC time to the second plus a short random suffix."""
    from datetime import UTC, datetime

    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
