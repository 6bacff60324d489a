"""Model versions: immutable artifacts stored in MongoDB GridFS, with each machine's local disk as a cache.

A version is written whole into a hidden temporary directory beside its final place and renamed into
``MODEL_DIR/ranker/<version>/`` (one atomic ``rename``), with a ``manifest.json`` that lists every file's size
and SHA-256. ``upload`` then copies the files into the ``model_files`` GridFS bucket, the manifest last: a
version whose manifest is not in the store was not uploaded whole and can be neither registered nor promoted.
Any machine loads a version from its local directory and fetches it from the store first when it is absent
(into a temporary directory, every file checked against the manifest, then renamed), so web and worker
machines share versions through MongoDB alone; ``docs/adr/0010-model-artifacts-in-gridfs.md``.

Files: ``meta.json`` (parameters, data snapshot, metrics); ``data.npz`` (user and track ids, the users × tracks
training matrix, track artists, popularity); ``playlists.npz`` (pids, names, and for each playlist either the
row of its owner that holds exactly its tracks, as every MPD pseudo-user's does, or its own tracks); the
recommender's ``.npz``/``.json`` files; ``text.npz`` (the text model's vocabulary, idf and name vectors,
``ranker.recommenders.text``; versions without it load with no text model and serve titles by the title index);
``second_stage.npz`` (the LightGBM re-ranker of track picks in its own text format, with the per-track artist and
album codes it reads, ``ranker.recommenders.rerank``; versions without it serve the blend's order); ``manifest.json``.
The training matrix is stored once: item-kNN, whose state it is, and the playlists get it back at load, and the
title index is rebuilt from the playlists' names.
Strings are UTF-8 with lengths (a numpy string array takes four bytes a character, padded to the longest).
Every ``.npz`` is read with ``allow_pickle=False``; versions of the earlier layout (format 1) still load.
At load the second stage's booster is compiled for the machine's CPU, its object code cached in
``MODEL_DIR/native/`` (derived per machine, so never part of a version nor of the store; ADR 0020).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gridfs
import numpy as np
import scipy.sparse as sp
from django.conf import settings
from gridfs.errors import CorruptGridFile

from ranker import collections as c
from ranker.recommenders import BPR, Blend, Recommender
from ranker.recommenders.playlists import PlaylistSpace
from ranker.recommenders.rerank import SecondStage
from ranker.recommenders.text import TextModel
from ranker.recommenders.title import TitleIndex
from recsys_site.exceptions import UnavailableError
from recsys_site.mongo import get_db

KIND = "ranker"
FORMAT = 2  # 1: every string array fixed-width, the training matrix in data.npz, item-kNN and playlists.npz
MANIFEST = "manifest.json"
NATIVE_DIR = "native"  # under MODEL_DIR: second stages compiled for this machine's CPU (ranker.recommenders.compiled)
CHUNK = 1 << 20

log = logging.getLogger(__name__)


class ModelUnavailable(UnavailableError, FileNotFoundError):
    """A version whose files cannot be had whole here: not in the store, partly uploaded, corrupted, unreadable."""

    code = "model_unavailable"
    retry_after = 10  # seconds: about two of a web process's model polls (MODEL_POLL_SECONDS)
    public_message = "the live model cannot be loaded on this server; try again soon"


def native_dir(model_dir: str | Path | None = None) -> Path:
    """Where this machine keeps second stages compiled for its CPU (``ranker.recommenders.compiled``)."""
    return Path(model_dir if model_dir is not None else settings.MODEL_DIR) / NATIVE_DIR


def model_root(model_dir: str | Path | None = None) -> Path:
    if model_dir is None:
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
    playlist_names: list[str] | np.ndarray | None = None  # normalised, one per playlist: the title index's source
    text: TextModel | None = None  # names and tracks in one space (text.npz); None in versions made before it
    second_stage: SecondStage | None = None  # the re-ranker of track picks (second_stage.npz); None: blend only
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
        """The playlists as a ``ranker.recommenders.playlists.PlaylistSpace`` (built on first use, then kept)."""
        if self._space is None:
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
        """Write this version atomically, with its manifest; returns its directory. An existing version is never
        overwritten. ``upload`` puts it in the store for the other machines."""
        root = model_root(model_dir)
        root.mkdir(parents=True, exist_ok=True)
        final = root / self.version
        if final.exists():
            raise FileExistsError(f"model version {self.version} already exists at {final}")
        tmp = root / f".tmp-{self.version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            m = _canonical(self.user_items)
            # data.npz and playlists.npz deflated: ids and artists are repetitive text (a third of the size, measured
            # in the ADR); the factors are left as they are (random floats do not deflate).
            np.savez_compressed(tmp / "data.npz", indptr=m.indptr, indices=m.indices, shape=np.asarray(m.shape),
                     popularity=self.popularity, **_pack("user_ids", self.user_ids), **_pack("item_ids", self.item_ids),
                     **_pack("item_artist", self.item_artist), **_pack("item_artist_name", self.item_artist_name))
            np.savez_compressed(tmp / "playlists.npz", **self._playlists_state(m))
            if self.playlist_names is None:  # no names to rebuild the title index from: keep it whole
                np.savez(tmp / "titles.npz", **self.titles.get_state())
            if self.text is not None:
                # deflated: the vocabulary is text and the sparse indices repeat (no playlists × tracks matrix in it)
                np.savez_compressed(tmp / "text.npz", **self.text.get_state())
            if self.second_stage is not None:
                np.savez_compressed(tmp / "second_stage.npz", **self.second_stage.get_state())
            if isinstance(self.recommender, Blend):
                self.recommender.save(tmp / "recommender", training_matrix=m)
            else:
                self.recommender.save(tmp / "recommender")
            (tmp / "meta.json").write_text(json.dumps(self.meta | {"version": self.version, "format": FORMAT},
                                                      indent=2, sort_keys=True, default=str))
            files = [{"name": f.name, "size": f.stat().st_size, "sha256": _sha256_file(f)}
                     for f in sorted(tmp.iterdir())]
            (tmp / MANIFEST).write_text(json.dumps({"version": self.version, "format": FORMAT, "files": files},
                                                   indent=2))
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def _playlists_state(self, user_items: sp.csr_matrix) -> dict[str, np.ndarray]:
        """Each playlist as the row of its owner when that row holds exactly its tracks, else its own tracks."""
        p = _canonical(self.playlist_items)
        owners = np.asarray(self.playlist_owners)
        index = self.user_index
        rows = np.fromiter((index.get(o, -1) for o in owners.tolist()), dtype=np.int64, count=len(owners))
        same = np.zeros(len(rows), dtype=bool)
        known = np.flatnonzero(rows >= 0)
        if len(known) and p.shape[1] == user_items.shape[1]:
            mine, theirs = p[known], user_items[rows[known]]
            equal_length = np.diff(mine.indptr) == np.diff(theirs.indptr)
            sub = known[equal_length]
            mine, theirs = p[sub], user_items[rows[sub]]
            differs = np.concatenate([[0], np.cumsum(mine.indices != theirs.indices)])
            same[sub] = differs[mine.indptr[1:]] == differs[mine.indptr[:-1]]
        own = p[np.flatnonzero(~same)]
        state = {"ids": np.asarray(self.playlist_ids), "user_row": np.where(same, rows, -1),
                 "own_indptr": own.indptr, "own_indices": own.indices, "n_items": np.asarray(p.shape[1]),
                 **_pack("own_owners", owners[~same])}
        if self.playlist_names is not None:
            state |= _pack("names", self.playlist_names)
        return state

    @classmethod
    def load(cls, version: str, model_dir: str | Path | None = None) -> RankerModel:
        """The version from this machine's ``MODEL_DIR``, fetched from the store first when it is not there.

        ``ModelUnavailable`` when it is in neither, or its files cannot be read whole."""
        path = ensure_local(version, model_dir)
        try:
            return cls._read(version, path)
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile, FileNotFoundError) as exc:
            if isinstance(exc, ModelUnavailable):
                raise
            raise ModelUnavailable(f"model version {version} at {path} cannot be read: {exc}") from exc

    @classmethod
    def _read(cls, version: str, path: Path) -> RankerModel:
        meta = json.loads((path / "meta.json").read_text())
        with np.load(path / "data.npz", allow_pickle=False) as d:
            indices = d["indices"]
            user_items = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, d["indptr"]),
                                       shape=tuple(d["shape"]))
            arrays = {k: _unpack(d, k) for k in ("user_ids", "item_ids", "item_artist", "item_artist_name")}
            arrays["popularity"] = d["popularity"]
        names = None
        with np.load(path / "playlists.npz", allow_pickle=False) as p:
            if "user_row" in p.files:
                playlist_items, owners = _playlists_from(p, user_items, arrays["user_ids"])
                names = _unpack(p, "names") if "names__len" in p.files else None
            else:  # format 1: every playlist's tracks and owner
                indices = p["indices"]
                playlist_items = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, p["indptr"]),
                                               shape=tuple(p["shape"]))
                owners = p["owners"]
            arrays |= {"playlist_ids": p["ids"], "playlist_owners": owners, "playlist_items": playlist_items}
        if (path / "titles.npz").exists():
            with np.load(path / "titles.npz", allow_pickle=False) as t:
                titles = TitleIndex.from_state({k: t[k] for k in t.files})
        elif names is not None:
            titles = TitleIndex().fit(names.tolist(), playlist_items)
        else:
            raise ValueError("neither titles.npz nor playlist names to rebuild the title index from")
        text = None
        if (path / "text.npz").exists():
            with np.load(path / "text.npz", allow_pickle=False) as t:
                text = TextModel.from_state({k: t[k] for k in t.files}, playlist_items)
        second_stage = None
        if (path / "second_stage.npz").exists():
            with np.load(path / "second_stage.npz", allow_pickle=False) as t:
                try:
                    second_stage = SecondStage.from_state({k: t[k] for k in t.files})
                except ValueError as exc:  # trained on other features than this code computes (an older release)
                    log.warning("model version %s serves continuations without its second stage: %s", version, exc)
        recommender_meta = json.loads((path / "recommender.json").read_text())
        if recommender_meta.get("class") == Blend.name:
            recommender = Blend.load(path / "recommender", training_matrix=user_items)
        else:
            recommender = Recommender.load(path / "recommender")
        if second_stage is not None and settings.SECOND_STAGE_COMPILE:
            # Once per model and CPU: ~5 s, then every process of the machine loads it in milliseconds.
            second_stage.compile(native_dir(path.parent.parent))
        if second_stage is not None and isinstance(recommender, Blend):
            second_stage.warm(recommender)  # here, not in the first request a worker serves (0.5 s)
        return cls(version=version, user_items=user_items, recommender=recommender, titles=titles, meta=meta,
                   playlist_names=names, text=text, second_stage=second_stage, **arrays)


def _playlists_from(p: Any, user_items: sp.csr_matrix, user_ids: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Playlists × tracks and owners from ``playlists.npz``: owners' rows where shared, the playlists' own else."""
    user_row = p["user_row"]
    shared = np.flatnonzero(user_row >= 0)
    alone = np.flatnonzero(user_row < 0)
    n_items = int(p["n_items"])
    own_indices = p["own_indices"]
    own = sp.csr_matrix((np.ones(len(own_indices), dtype=np.float32), own_indices, p["own_indptr"]),
                        shape=(len(alone), n_items))
    own_owners = _unpack(p, "own_owners")
    if len(shared) and user_items.shape[1] != n_items:
        raise ValueError(f"playlists.npz has {n_items} tracks, data.npz {user_items.shape[1]}")
    if len(shared) and int(user_row.max()) >= user_items.shape[0]:
        raise ValueError(f"playlists.npz names user row {int(user_row.max())} of {user_items.shape[0]}")
    order = np.empty(len(user_row), dtype=np.int64)
    order[shared] = np.arange(len(shared))
    order[alone] = len(shared) + np.arange(len(alone))
    stacked = sp.vstack([user_items[user_row[shared]], own], format="csr")
    items = stacked[order] if len(user_row) else sp.csr_matrix((0, n_items), dtype=np.float32)
    width = max(user_ids.dtype.itemsize, own_owners.dtype.itemsize) // 4 or 1
    owners = np.empty(len(user_row), dtype=f"<U{width}")
    owners[shared] = user_ids[user_row[shared]]
    owners[alone] = own_owners
    return items, owners


def _canonical(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m)
    return m if m.has_sorted_indices else m.sorted_indices()


def _pack(name: str, values: Any) -> dict[str, np.ndarray]:
    """Strings as one UTF-8 buffer and their lengths in characters (``_unpack`` gives the numpy array back)."""
    strings = [str(v) for v in (values.tolist() if isinstance(values, np.ndarray) else values)]
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int32, count=len(strings))
    return {f"{name}__utf8": np.frombuffer("".join(strings).encode("utf-8"), dtype=np.uint8),
            f"{name}__len": lengths}


def _unpack(d: Any, name: str) -> np.ndarray:
    """The string array ``_pack`` stored (or, format 1, the fixed-width array itself), without a loop per string."""
    if name in d.files:
        return d[name]
    lengths = d[f"{name}__len"].astype(np.int64)
    codes = np.frombuffer(d[f"{name}__utf8"].tobytes().decode("utf-8").encode("utf-32-le"), dtype=np.uint32)
    if int(lengths.sum()) != len(codes) or (lengths < 0).any():
        raise ValueError(f"{name}: lengths add up to {int(lengths.sum())} characters, the text has {len(codes)}")
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    out = np.zeros((len(lengths), width), dtype=np.uint32)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    rows = np.repeat(np.arange(len(lengths)), lengths)
    out[rows, np.arange(len(codes)) - starts[rows]] = codes
    return out.view(f"<U{width}").ravel()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


# -- the store: the ``model_files`` GridFS bucket ------------------------------------------------------------------

def _bucket() -> Any:
    return gridfs.GridFSBucket(get_db(), bucket_name=c.MODEL_FILES)


def _stored(bucket: Any, version: str, name: str) -> Any:
    """The newest stored file ``<version>/<name>`` (a GridOut), or None."""
    return next(iter(bucket.find({"filename": f"{version}/{name}"}).sort("uploadDate", -1).limit(1)), None)


def _read_manifest(grid_out: Any, version: str) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = grid_out.read()
        return raw, json.loads(raw)
    except (CorruptGridFile, ValueError) as exc:
        raise ModelUnavailable(f"model version {version}: its {MANIFEST} in the store is corrupt: {exc}") from exc


def stored_versions() -> set[str]:
    """Versions with at least one file in the store (whole or not)."""

    return {v for v in get_db()[f"{c.MODEL_FILES}.files"].distinct("metadata.version") if v}


def upload(version: str, model_dir: str | Path | None = None) -> dict[str, Any]:
    """Copy a saved version into the store, its manifest last; returns the manifest.

    Files left by an earlier upload of this version that was killed (no manifest) are replaced; a version already
    in the store whole is refused (versions are immutable)."""
    path = model_root(model_dir) / version
    if not (path / MANIFEST).exists():
        raise FileNotFoundError(f"no saved model version {version} with a {MANIFEST} under {path.parent}")
    bucket = _bucket()
    if _stored(bucket, version, MANIFEST) is not None:
        raise FileExistsError(f"model version {version} is already in the store")
    for leftover in bucket.find({"metadata.version": version}):
        bucket.delete(leftover._id)
    manifest = json.loads((path / MANIFEST).read_text())
    for entry in manifest["files"]:
        with open(path / entry["name"], "rb") as f:
            bucket.upload_from_stream(f"{version}/{entry['name']}", f, chunk_size_bytes=CHUNK,
                                      metadata={"version": version, "kind": KIND, "sha256": entry["sha256"]})
    bucket.upload_from_stream(f"{version}/{MANIFEST}", (path / MANIFEST).read_bytes(),
                              metadata={"version": version, "kind": KIND, "manifest": True})
    return manifest


def check_uploaded(version: str) -> dict[str, Any]:
    """The manifest of a version stored whole (every file present at its size and checksum as recorded), else
    ``ModelUnavailable`` saying what is missing. Reads no file content: ``verify_stored`` does."""
    bucket = _bucket()
    grid_out = _stored(bucket, version, MANIFEST)
    if grid_out is None:
        raise ModelUnavailable(f"model version {version} is not in the store whole: no {MANIFEST} in the "
                               "model_files bucket (never uploaded, or its upload was cut short)")
    _, manifest = _read_manifest(grid_out, version)
    for entry in manifest["files"]:
        stored = _stored(bucket, version, entry["name"])
        if stored is None:
            raise ModelUnavailable(f"model version {version}: {entry['name']} is missing from the store")
        if stored.length != entry["size"] or (stored.metadata or {}).get("sha256") != entry["sha256"]:
            raise ModelUnavailable(f"model version {version}: {entry['name']} in the store is {stored.length} "
                                   f"bytes, the manifest says {entry['size']} with another checksum")
    return manifest


def _copy_checked(bucket: Any, version: str, entry: dict[str, Any], out: Any | None) -> None:
    """Stream one stored file, checking its size and SHA-256 against the manifest, into ``out`` if given."""

    stored = _stored(bucket, version, entry["name"])
    if stored is None:
        raise ModelUnavailable(f"model version {version}: {entry['name']} is missing from the store")
    h, size = hashlib.sha256(), 0
    try:
        while block := stored.read(CHUNK):
            h.update(block)
            size += len(block)
            if out is not None:
                out.write(block)
    except CorruptGridFile as exc:
        raise ModelUnavailable(f"model version {version}: {entry['name']} is corrupt in the store: {exc}") from exc
    if size != entry["size"] or h.hexdigest() != entry["sha256"]:
        raise ModelUnavailable(f"model version {version}: {entry['name']} in the store does not match its manifest "
                               f"({size} bytes, sha256 {h.hexdigest()[:12]}…; expected {entry['size']} bytes, "
                               f"{entry['sha256'][:12]}…)")


def verify_stored(version: str) -> dict[str, Any]:
    """``check_uploaded``, then every stored byte hashed against the manifest (what promotion demands)."""
    manifest = check_uploaded(version)
    bucket = _bucket()
    for entry in manifest["files"]:
        _copy_checked(bucket, version, entry, None)
    return manifest


def fetch(version: str, model_dir: str | Path | None = None) -> Path:
    """Download a version from the store into this machine's cache, checked, atomically; returns its directory."""
    root = model_root(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    bucket = _bucket()
    manifest_file = _stored(bucket, version, MANIFEST)
    if manifest_file is None:
        raise ModelUnavailable(f"model version {version} is neither under {root} nor whole in the store "
                               f"(no {MANIFEST} in the model_files bucket)")
    raw, manifest = _read_manifest(manifest_file, version)
    tmp = root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for entry in manifest["files"]:
            with open(tmp / entry["name"], "wb") as out:
                _copy_checked(bucket, version, entry, out)
                out.flush()
                os.fsync(out.fileno())
        (tmp / MANIFEST).write_bytes(raw)
        _fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").exists():  # not another process of this machine fetching it too
                raise
        _fsync_dir(root)
    except OSError as exc:
        if isinstance(exc, ModelUnavailable):
            raise
        raise ModelUnavailable(f"model version {version} could not be written under {root}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_local(version: str, model_dir: str | Path | None = None) -> Path:
    """The version's directory on this machine, fetched from the store when absent."""
    path = model_root(model_dir) / version
    if (path / "meta.json").exists():
        return path
    return fetch(version, model_dir)


def delete_stored(version: str) -> int:
    """Remove every stored file of a version; returns how many."""
    bucket = _bucket()
    removed = 0
    for grid_out in bucket.find({"metadata.version": version}):
        bucket.delete(grid_out._id)
        removed += 1
    return removed


def new_version() -> str:
    """Sortable and unique: UTC time to the second plus a short random suffix."""

    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
