"""Writes of the ingestion package: playlists, the derived track and artist catalogue, users, runs.

``tracks`` and ``artists`` are *derived* from ``playlists``: a track's ``num_playlists`` is the number
of playlists that hold it. Ingestion keeps them right with per-run deltas (fast: one write per touched
track per run). Every writer (an ingest run, an API playlist create) records itself in the catalogue's
``writers`` before its first playlist write and removes only its own entry after its last delta; the
catalogue is dirty while any writer is recorded. A run that finds a writer that died (its ingest run is over,
or it has not been heard of for ``WRITER_STALE_SECONDS``) first rebuilds both collections from the playlists,
so counts never drift, whatever happened before. See docs/adr/0002-document-design.md.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import InsertOne, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError
from tqdm import tqdm

from recsys_site.mongo import ensure_indexes, get_db

from . import collections as c
from .mpd import (
    API_PID_START,
    Problem,
    SliceError,
    Source,
    content_hash,
    decode_slice,
    iter_sources,
    normalize_name,
    sha256,
    validate_playlist,
)
from .runs import RunReport, ingest_file_done, ingest_file_record, ingest_run
from .selectors import CATALOGUE_STATS_ID, catalogue_stats_build

log = logging.getLogger(__name__)

# SecantusDB answers large ``$in`` lists in quadratic time; small chunks are fast on every server.
IN_CHUNK = 100
WRITE_BATCH = 2000
DUPLICATE_KEY = 11000
TRACK_META_FIELDS = ("name", "artist_name", "artist_key", "artist_uri", "album_uri", "album_name", "duration_ms")


def _now() -> datetime:
    return datetime.now(UTC)


def _chunks(items: list, size: int = IN_CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_new_many(collection: str, docs: list[dict[str, Any]]) -> list[int]:
    """Insert ``docs`` (unordered); return the indexes of those whose ``_id`` already existed."""
    if not docs:
        return []
    try:
        get_db()[collection].insert_many(docs, ordered=False)
        return []
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
        if other:
            raise
        return [e["index"] for e in errors]


# --- catalogue deltas --------------------------------------------------------------------------------------------
@dataclass
class CatalogueDelta:
    """Pending changes to track counts, accumulated over a run and applied by ``catalogue_apply``."""

    playlists: Counter = field(default_factory=Counter)  # uri -> change in number of playlists holding it
    occurrences: Counter = field(default_factory=Counter)  # uri -> change in playlist-track rows
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, tracks: list[dict[str, Any]], sign: int) -> None:
        for track in tracks:
            self.occurrences[track["uri"]] += sign
            if sign > 0:
                self.meta[track["uri"]] = track
        for uri in {t["uri"] for t in tracks}:
            self.playlists[uri] += sign

    def __len__(self) -> int:
        return len(self.occurrences)


def _track_doc(uri: str, meta: dict[str, Any], n_playlists: int, n_occurrences: int) -> dict[str, Any]:
    doc = {"_id": uri, "num_playlists": n_playlists, "num_occurrences": n_occurrences}
    doc.update({k: meta[k] for k in TRACK_META_FIELDS if k in meta})
    return doc


def catalogue_apply(delta: CatalogueDelta, *, progress: Callable[[str, int, int], None] | None = None,
                    stored: set[int] | None = None) -> int:
    """Apply pending count changes; return how many tracks were new to the catalogue.

    Writes in batches of ``WRITE_BATCH`` and calls ``progress(what, written, total)`` after each (``what`` is
    ``"tracks"`` or ``"artists"``), so a caller can show this phase moving: it is most of a first load's time.
    ``stored``: ``hash()`` of the track URIs this run already inserted (an earlier flush), updated here. Those
    tracks get an ``$inc`` upsert at once instead of an insert that fails on the duplicate key and then an
    ``$inc``; being an upsert, it still stores a track whose hash merely collided.
    """
    db = get_db()
    step = progress or (lambda what, done, total: None)
    known = stored if stored is not None else set()
    uris = [u for u in delta.occurrences if delta.occurrences[u] or delta.playlists[u]]
    new_tracks = [u for u in uris if u in delta.meta and hash(u) not in known]
    seen_before = [u for u in uris if u in delta.meta and hash(u) in known]
    inserted: list[str] = []
    existing: set[str] = set()
    done = 0
    for batch in _chunks(new_tracks, WRITE_BATCH):
        docs = [_track_doc(u, delta.meta[u], delta.playlists[u], delta.occurrences[u]) for u in batch]
        dup = {batch[i] for i in insert_new_many(c.TRACKS, docs)}
        existing |= dup
        inserted.extend(u for u in batch if u not in dup)
        done += len(batch) - len(dup)
        step("tracks", done, len(uris))
    updates = [u for u in uris if u not in delta.meta or u in existing]
    for batch in _chunks(updates, WRITE_BATCH):
        ops = [UpdateOne({"_id": u}, {"$inc": {"num_playlists": delta.playlists[u],
                                              "num_occurrences": delta.occurrences[u]}}) for u in batch]
        db[c.TRACKS].bulk_write(ops, ordered=False)
        done += len(batch)
        step("tracks", done, len(uris))
    for batch in _chunks(seen_before, WRITE_BATCH):
        ops = [UpdateOne({"_id": u}, {"$inc": {"num_playlists": delta.playlists[u],
                                              "num_occurrences": delta.occurrences[u]},
                                      "$setOnInsert": {k: delta.meta[u][k] for k in TRACK_META_FIELDS
                                                       if k in delta.meta[u]}}, upsert=True) for u in batch]
        result = db[c.TRACKS].bulk_write(ops, ordered=False)
        inserted.extend(batch[i] for i in result.upserted_ids)
        done += len(batch)
        step("tracks", done, len(uris))
    if stored is not None:
        stored.update(hash(u) for u in inserted)
    # Artists count their distinct tracks; a track joins an artist once, when it is first seen.
    per_artist = Counter(delta.meta[u]["artist_key"] for u in inserted)
    names = {delta.meta[u]["artist_key"]: delta.meta[u] for u in inserted}
    done = 0
    for keys in _chunks(list(per_artist), WRITE_BATCH):
        artist_docs = [{"_id": k, "name": names[k]["artist_name"], "num_tracks": per_artist[k],
                        **({"uri": names[k]["artist_uri"]} if "artist_uri" in names[k] else {})} for k in keys]
        existing_artists = [keys[i] for i in insert_new_many(c.ARTISTS, artist_docs)]
        if existing_artists:
            db[c.ARTISTS].bulk_write([UpdateOne({"_id": k}, {"$inc": {"num_tracks": per_artist[k]}})
                                      for k in existing_artists], ordered=False)
        done += len(keys)
        step("artists", done, len(per_artist))
    return len(inserted)


def catalogue_rebuild(*, show_progress: bool = False) -> dict[str, int]:
    """Recompute ``tracks`` and ``artists`` from every playlist, then swap them in by rename.

    The repair path after a crashed run, and ``ingest_mpd --rebuild-catalogue``. Holds one entry per
    distinct track in memory. Counted in ``catalogue_state`` (``rebuilds_started`` before, ``rebuilds_done``
    after), so that a writer whose deltas overlapped a rebuild keeps its mark (see ``catalogue_mark``).
    """
    db = get_db()
    started = db[c.CATALOGUE_STATE].find_one_and_update(
        {"_id": CATALOGUE}, {"$inc": {"rebuilds_started": 1}}, upsert=True,
        return_document=ReturnDocument.AFTER)["rebuilds_started"]
    delta = CatalogueDelta()
    cursor = db[c.PLAYLISTS].find({}, {"tracks": 1}, batch_size=500)
    for playlist in tqdm(cursor, desc="rebuild catalogue", unit="playlist", disable=not show_progress):
        delta.add(playlist.get("tracks", []), +1)
    artist_tracks: Counter = Counter()
    artist_meta: dict[str, dict[str, Any]] = {}
    for coll in (f"{c.TRACKS}_rebuild", f"{c.ARTISTS}_rebuild"):
        db[coll].drop()
    batch: list[dict[str, Any]] = []
    for uri, meta in delta.meta.items():
        batch.append(_track_doc(uri, meta, delta.playlists[uri], delta.occurrences[uri]))
        artist_tracks[meta["artist_key"]] += 1
        artist_meta.setdefault(meta["artist_key"], meta)
        if len(batch) >= WRITE_BATCH:
            db[f"{c.TRACKS}_rebuild"].insert_many(batch, ordered=False)
            batch = []
    if batch:
        db[f"{c.TRACKS}_rebuild"].insert_many(batch, ordered=False)
    artist_docs = [{"_id": k, "name": m["artist_name"], "num_tracks": artist_tracks[k],
                    **({"uri": m["artist_uri"]} if "artist_uri" in m else {})} for k, m in artist_meta.items()]
    for part in _chunks(artist_docs, WRITE_BATCH):
        db[f"{c.ARTISTS}_rebuild"].insert_many(part, ordered=False)
    names = set(db.list_collection_names())
    for coll in (c.TRACKS, c.ARTISTS):
        if f"{coll}_rebuild" in names:
            db[f"{coll}_rebuild"].rename(coll, dropTarget=True)
        else:
            db[coll].drop()

    ensure_indexes()
    db[c.CATALOGUE_STATE].update_one({"_id": CATALOGUE}, {"$max": {"rebuilds_done": started}})
    return {"tracks": len(delta.meta), "artists": len(artist_docs)}


# --- who is writing the catalogue -------------------------------------------------------------------------------
# ``catalogue_state`` document ``{"_id": "catalogue", "writers": {<writer>: {"run_id", "since", "beat"}}}``: each
# writer adds and removes only its own entry (one atomic ``$set`` / ``$unset`` of its field), so no writer can clear
# another's mark. ``dirty: true`` is what stores written before the writers existed may still hold: it counts too.
CATALOGUE = "catalogue"
# A writer not heard of for this long is taken for dead. Ingest runs renew their entry after every file and every
# catalogue write batch (seconds apart), and before building indexes; an API playlist create takes milliseconds.
WRITER_STALE_SECONDS = 900


def catalogue_writer(*, run_id: Any = None) -> str:
    """A new writer id: ``run:<ingest run id>`` for an ingest run, ``api:<random>`` otherwise."""
    return f"run:{run_id}" if run_id is not None else f"api:{uuid.uuid4().hex}"


def catalogue_mark(*, writer: str, dirty: bool, run_id: Any = None, rebuilds: int | None = None) -> int | None:
    """``dirty=True``: record ``writer`` as writing the catalogue (again: renews its heartbeat), and return the
    rebuild count to hand back when done (``rebuilds``), or None if a rebuild is running now. ``dirty=False``:
    remove ``writer``'s own entry, and nobody else's, if no rebuild started since ``rebuilds`` was returned; if one
    did (or ``rebuilds`` is None), its deltas may be missing from the rebuilt counts or counted twice, so the entry
    is left, marked ``overlapped``: a dead writer, which the next run repairs. ``run_id``: the ingest run whose
    document tells whether the writer is still running (see ``catalogue_writers_dead``)."""
    field_name = f"writers.{writer}"
    state = get_db()[c.CATALOGUE_STATE]
    if dirty:
        now = _now()
        doc = state.find_one_and_update(
            {"_id": CATALOGUE},
            {"$set": {f"{field_name}.run_id": run_id, f"{field_name}.beat": now},
             "$min": {f"{field_name}.since": now}}, upsert=True, return_document=ReturnDocument.AFTER,
            projection={"rebuilds_started": 1, "rebuilds_done": 1})
        started = int(doc.get("rebuilds_started", 0))
        return started if started == int(doc.get("rebuilds_done", 0)) else None
    if rebuilds is not None:
        no_rebuild_since = [{"rebuilds_started": rebuilds}] + (
            [{"rebuilds_started": {"$exists": False}}] if rebuilds == 0 else [])
        if state.update_one({"_id": CATALOGUE, "$or": no_rebuild_since},
                            {"$unset": {field_name: ""}}).matched_count:
            return None
    log.warning("catalogue writer %s overlapped a rebuild of the catalogue: the next ingest rebuilds it again", writer)
    state.update_one({"_id": CATALOGUE, field_name: {"$exists": True}}, {"$set": {f"{field_name}.overlapped": True}})
    return None


def catalogue_writers() -> dict[str, dict[str, Any]]:
    """Every writer recorded now (writer id → ``run_id``, ``since``, ``beat``); a legacy ``dirty: true`` shows as
    the writer ``legacy``."""
    doc = get_db()[c.CATALOGUE_STATE].find_one({"_id": CATALOGUE}) or {}
    writers = dict(doc.get("writers") or {})
    if doc.get("dirty"):
        writers["legacy"] = {"run_id": doc.get("run_id"), "beat": None}
    return writers


def catalogue_is_dirty() -> bool:
    """Whether any writer is recorded: the counts may be mid-update (or left so by a writer that died)."""
    return bool(catalogue_writers())


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def catalogue_writers_dead(writers: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The recorded writers that died mid-update: an ingest run whose document is missing or no longer
    ``running`` (it failed, or finished without removing its entry), any writer whose heartbeat is older than
    ``WRITER_STALE_SECONDS`` (a process killed outright leaves its run ``running``), and any writer that finished
    while a rebuild overlapped its deltas (``overlapped``). A legacy ``dirty`` flag is dead. The others are still
    writing: their entries are left alone."""
    writers = catalogue_writers() if writers is None else writers
    stale_before = _now() - timedelta(seconds=WRITER_STALE_SECONDS)
    dead = []
    for writer, entry in writers.items():
        beat = _aware(entry.get("beat"))
        if writer == "legacy" or entry.get("overlapped") or beat is None or beat < stale_before:
            dead.append(writer)
            continue
        run_id = entry.get("run_id")
        if run_id is not None:
            run = get_db()[c.INGEST_RUNS].find_one({"_id": run_id}, {"status": 1})
            if run is None or run.get("status") != "running":
                dead.append(writer)
    return dead


def catalogue_repair(*, show_progress: bool = False) -> list[str]:
    """If a writer died mid-update, rebuild ``tracks`` and ``artists`` from the playlists, then forget exactly the
    dead writers (the live ones keep their entries). Returns the dead writers found."""
    writers = catalogue_writers()
    dead = catalogue_writers_dead(writers)
    if not dead:
        if writers:
            log.info("the catalogue is being written by %s: not rebuilding it", ", ".join(writers))
        return []
    log.warning("the catalogue was left mid-update by %s: rebuilding it from playlists", ", ".join(dead))
    catalogue_rebuild(show_progress=show_progress)
    unset = {f"writers.{w}": "" for w in dead if w != "legacy"}
    change: dict[str, Any] = {"$unset": unset} if unset else {}
    if "legacy" in dead:
        change["$set"] = {"dirty": False}
    get_db()[c.CATALOGUE_STATE].update_one({"_id": CATALOGUE}, change)
    return dead


# --- playlists ---------------------------------------------------------------------------------------------------
@dataclass
class PlaylistWriteResult:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


def playlist_upsert_many(*, playlists: list[dict[str, Any]], source: dict[str, Any],
                         delta: CatalogueDelta, all_new: bool = False) -> PlaylistWriteResult:
    """Insert new playlists, replace changed ones (by pid), leave identical ones alone.

    Each playlist is one document, so it is written whole or not at all. Count changes for the
    catalogue are added to ``delta``. ``all_new``: the caller knows that none of these pids is stored (a
    first load into an empty store), so the lookup of stored pids is skipped; a pid that is stored after all
    still fails loudly (duplicate key) instead of being overwritten.
    """
    db = get_db()
    result = PlaylistWriteResult()
    ids = [p["_id"] for p in playlists]
    stored: dict[Any, str] = {}
    for chunk in [] if all_new else _chunks(ids):
        for doc in db[c.PLAYLISTS].find({"_id": {"$in": chunk}}, {"content_hash": 1}):
            stored[doc["_id"]] = doc.get("content_hash")
    changed = [p for p in playlists if p["_id"] in stored and stored[p["_id"]] != p["content_hash"]]
    fresh = [p for p in playlists if p["_id"] not in stored]
    result.unchanged = len(playlists) - len(changed) - len(fresh)
    for chunk in _chunks([p["_id"] for p in changed]):
        for old in db[c.PLAYLISTS].find({"_id": {"$in": chunk}}, {"tracks": 1}):
            delta.add(old.get("tracks", []), -1)
    now = _now()
    ops: list[Any] = []
    for p in fresh:
        ops.append(InsertOne({**p, "source": source, "ingested_at": now}))
    for p in changed:
        ops.append(ReplaceOne({"_id": p["_id"]}, {**p, "source": source, "ingested_at": now}))
    if ops:
        db[c.PLAYLISTS].bulk_write(ops, ordered=False)
    for p in fresh + changed:
        delta.add(p["tracks"], +1)
    result.new, result.updated = len(fresh), len(changed)
    user_ensure_many(user_ids=[p["owner"] for p in fresh], source=source.get("kind", "mpd"))
    return result


def user_ensure_many(*, user_ids: list[str], source: str, app: str | None = None) -> int:
    """Create the users that do not exist yet (created by ``app``, when an app's token asked); return how many were
    created."""
    now = _now()
    docs = [{"_id": u, "source": source, "created_at": now, **({"app": app} if app else {})}
            for u in dict.fromkeys(user_ids)]
    return len(docs) - len(insert_new_many(c.USERS, docs))


# --- the MPD ingestion service -----------------------------------------------------------------------------------
@dataclass
class IngestReport(RunReport):
    COUNTS = ("files", "files_skipped", "files_failed", "new", "updated", "unchanged", "rejected", "new_tracks")
    RATE = ("playlists_per_s", "written")

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    new_tracks: int = 0

    @property
    def written(self) -> int:
        return self.new + self.updated + self.unchanged


ProgressCallback = Callable[[dict[str, Any]], None]
# Apply catalogue deltas before this many distinct tracks pile up in memory (about 1 kB each): bounds a run's
# memory whatever its input size, and keeps each flush's cost proportional to the playlists read since the last.
FLUSH_TRACKS = 300_000
DEFERRED_INDEXES = "deferred_indexes"  # catalogue_state document: collections whose indexes a bulk load dropped


def store_is_empty() -> bool:
    """No playlists, tracks or artists: an ingest now is a first load (see ``docs/adr/0011-bulk-first-load.md``)."""
    db = get_db()
    return all(db[name].find_one({}, {"_id": 1}) is None for name in (c.PLAYLISTS, c.TRACKS, c.ARTISTS))


# A first load builds these collections' secondary indexes after writing them. Playlists and users keep theirs:
# a build scans every document, and a playlist is large (its tracks) while it has few index entries.
DEFERRABLE = (c.TRACKS, c.ARTISTS)


def indexes_defer() -> list[str]:
    """Drop the secondary indexes of the empty catalogue collections a first load fills; return their names.

    Recorded in ``catalogue_state`` before anything is dropped, so a run that dies before ``indexes_restore``
    has its indexes rebuilt by the next run.
    """
    db = get_db()
    empty = [name for name in DEFERRABLE if db[name].find_one({}, {"_id": 1}) is None]
    db[c.CATALOGUE_STATE].update_one({"_id": DEFERRED_INDEXES}, {"$set": {"collections": empty, "at": _now()}},
                                     upsert=True)
    for name in empty:
        db[name].drop_indexes()  # every index but _id's
    return empty


def indexes_restore(*, progress: Callable[[str], None] | None = None) -> list[str]:
    """Build the indexes a bulk load deferred (every declared index, idempotent); return the collections."""

    db = get_db()
    doc = db[c.CATALOGUE_STATE].find_one({"_id": DEFERRED_INDEXES})
    if doc is None:
        return []
    if progress:
        progress(", ".join(doc.get("collections", [])))
    ensure_indexes()
    db[c.CATALOGUE_STATE].delete_one({"_id": DEFERRED_INDEXES})
    return list(doc.get("collections", []))


_STAT_FIELDS = ("name_norm", "num_tracks", "num_followers", "num_edits")  # what the statistics read of a playlist
STAT_ROWS_MAX = 200_000  # past this many playlists a first load lets the statistics read the store instead


def _stats_track_rows(delta: CatalogueDelta) -> Iterable[dict[str, Any]]:
    """The tracks as the statistics read them from the store, from a first load's only delta (its exact counts)."""
    for uri, n in delta.playlists.items():
        meta = delta.meta[uri]
        yield {"_id": uri, "name": meta.get("name"), "artist_name": meta.get("artist_name"),
               "artist_key": meta.get("artist_key"), "num_playlists": n}


class _Progress:
    """Where a run is, for people (tqdm bars on stderr) and for code (``callback`` dicts with a ``phase``).

    Phases: ``playlists`` (one call per file), ``catalogue`` (tracks, then artists, per write batch),
    ``indexes`` and ``statistics``, so nothing sits still without saying why.
    """

    def __init__(self, show: bool, callback: ProgressCallback | None) -> None:
        self.show, self.callback = show, callback
        self.bar = tqdm(desc="ingest_mpd", unit="playlist", disable=not show, dynamic_ncols=True)
        self._sub: Any = None
        self._sub_what: str | None = None

    def file(self, playlists: int, info: dict[str, Any]) -> None:
        self.bar.update(playlists)
        if self.callback:
            self.callback({"phase": "playlists", **info})

    def note(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def catalogue(self, what: str, done: int, total: int) -> None:
        if self.show:
            if self._sub_what != what:
                self._close_sub()
                self._sub = tqdm(desc=f"write catalogue: {what}", unit=what.rstrip("s"), total=total,
                                 dynamic_ncols=True, leave=False)
                self._sub_what = what
            self._sub.update(done - self._sub.n)
        if self.callback:
            self.callback({"phase": "catalogue", "what": what, "done": done, "total": total})

    def phase(self, phase: str, text: str) -> None:
        self._close_sub()
        self.note(text)
        if self.show:
            tqdm.write(f"ingest_mpd: {text}")
        if self.callback:
            self.callback({"phase": phase, "message": text})

    def _close_sub(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub, self._sub_what = None, None

    def close(self) -> None:
        self._close_sub()
        self.bar.close()


@dataclass
class _Slice:
    """One source read, hashed and validated ahead of its writes (``_read_ahead``)."""

    source: Source
    digest: str = ""
    skipped: bool = False  # already ingested (same sha256)
    problem: Problem | None = None  # the whole file is unusable
    docs: list[dict[str, Any] | Problem] = field(default_factory=list)  # in file order
    count: int = 0  # playlists in the file


def _prepare(source: Source) -> _Slice:
    out = _Slice(source)
    try:
        data = source.read()
        out.digest = sha256(data)
        if ingest_file_done(out.digest):
            out.skipped = True
            return out
        raw_playlists = decode_slice(data, name=source.name)
    except (OSError, SliceError) as exc:
        out.problem = Problem(file=source.name, reason=str(exc).removeprefix(f"{source.name}: "))
        return out
    del data
    out.count = len(raw_playlists)
    out.docs = [validate_playlist(raw, file=source.name, index=i) for i, raw in enumerate(raw_playlists)]
    return out


READ_AHEAD = 1  # slices prepared ahead of the one being written: memory holds at most READ_AHEAD + 2 slices


def _read_ahead(items: Iterable[Source | Problem]) -> Iterator[_Slice | Problem]:
    """``_prepare`` each source in a thread, one slice ahead of the caller, in order.

    Reading, JSON decoding and validation (the client's CPU) overlap the previous slice's writes (the server's);
    the GIL is free while the writing thread waits for the server. Errors surface in the caller; a caller that
    stops early stops the thread.
    """

    slots: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()
    end = object()

    def put(value: Any) -> None:
        while not stop.is_set():
            try:
                slots.put(value, timeout=0.2)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                put(item if isinstance(item, Problem) else _prepare(item))
        except BaseException as exc:  # handed to the caller, which raises it
            put(exc)
        finally:
            put(end)

    thread = threading.Thread(target=work, name="ingest_mpd-read-ahead", daemon=True)
    thread.start()
    try:
        while (value := slots.get()) is not end:
            if isinstance(value, BaseException):
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=30)


def mpd_ingest(*, paths: list[str], show_progress: bool = False,
               callback: ProgressCallback | None = None) -> IngestReport:
    """Ingest MPD slices from files, folders or the official zip; see ``ingest_mpd --help``.

    Skips files whose sha256 was already ingested, updates changed playlists by pid, rejects bad
    playlists one by one (with file, pid and reason) and bad files one by one, and keeps going.
    Reads one slice at a time and flushes catalogue deltas every ``FLUSH_TRACKS`` distinct tracks, so
    memory stays bounded whatever the input size. Into an empty store (a first load) it writes without
    secondary indexes and builds them at the end (docs/adr/0011-bulk-first-load.md).
    ``callback`` receives a dict with a ``phase`` key for every step (see ``_Progress``).
    """
    report = IngestReport()
    catalogue_repair(show_progress=show_progress)
    if indexes_restore():
        log.warning("an interrupted first load had deferred its indexes: rebuilt them")
    # pid -> (first 60 bits of its content hash << 20) | index of its file in ``files``: one int per pid,
    # to tell a pid repeated with the same content from one repeated with different content.
    seen: dict[int, int] = {}
    files: list[str] = []
    delta = CatalogueDelta()
    bulk = marked = False
    rebuilds: int | None = None  # the rebuild count when this run first marked the catalogue
    # A first load whose catalogue fits in one delta hands the statistics the rows it holds (``_stats_rows``)
    # instead of reading back everything it wrote; ``None`` once that stops being true.
    stat_rows: list[dict[str, Any]] | None = None
    progress = _Progress(show_progress, callback)
    stored_tracks: set[int] = set()  # hash() of the track URIs this run inserted: see catalogue_apply
    digests: set[str] = set()  # files written by this run (a copy later in the run is skipped like a done one)
    try:
        with ingest_run(kind="mpd", paths=paths, report=report) as run_id:
            writer = catalogue_writer(run_id=run_id)

            def beat() -> None:  # renews this run's entry among the catalogue's writers (it is alive)
                if marked:
                    catalogue_mark(writer=writer, dirty=True, run_id=run_id)

            def catalogue_progress(what: str, done: int, total: int) -> None:
                beat()
                progress.catalogue(what, done, total)

            for item in _read_ahead(iter_sources(list(paths))):
                if isinstance(item, Problem):
                    report.file_failed(item)
                    continue
                source, digest = item.source, item.digest
                report.files += 1
                if item.problem is not None:
                    report.file_failed(item.problem)
                    continue
                if item.skipped or digest in digests:
                    report.file_skipped(source.name)
                    progress.note(f"skipped {source.name.rsplit('/', 1)[-1]} (already ingested)")
                    continue
                digests.add(digest)
                files.append(source.name)
                file_no = len(files) - 1
                good: list[dict[str, Any]] = []
                rejected = 0
                for doc in item.docs:
                    if isinstance(doc, Problem):
                        report.problems.append(doc)
                        rejected += 1
                        continue
                    fingerprint = int(doc["content_hash"][:15], 16) << 20 | file_no
                    previous = seen.get(doc["_id"])
                    if previous is not None:
                        if previous >> 20 != fingerprint >> 20:
                            report.problems.append(Problem(
                                file=source.name, pid=doc["_id"],
                                reason="pid appears twice in this run with different content "
                                       f"(first in {files[previous & 0xFFFFF]})"))
                            rejected += 1
                        continue
                    seen[doc["_id"]] = fingerprint
                    good.append(doc)
                n_raw = item.count
                del item
                if not marked:
                    bulk = store_is_empty()
                    rebuilds = catalogue_mark(writer=writer, dirty=True, run_id=run_id)
                    marked = True
                    if bulk:
                        stat_rows = []
                        deferred = indexes_defer()
                        log.info("first load into an empty store: indexes of %s built after it", ", ".join(deferred))
                written = playlist_upsert_many(
                    playlists=good, source={"file": source.name, "sha256": digest, "run_id": run_id}, delta=delta,
                    all_new=bulk,
                )
                if stat_rows is not None:
                    stat_rows.extend({k: p[k] for k in _STAT_FIELDS if k in p} for p in good)
                    if len(stat_rows) > STAT_ROWS_MAX:
                        stat_rows = None
                del good
                if len(delta) > FLUSH_TRACKS:
                    stat_rows = None  # the counts are complete only in the store from now on
                    progress.note(f"writing {len(delta):,} tracks' counts")
                    report.new_tracks += catalogue_apply(delta, progress=catalogue_progress, stored=stored_tracks)
                    delta = CatalogueDelta()
                    progress.note("")
                report.new += written.new
                report.updated += written.updated
                report.unchanged += written.unchanged
                report.rejected += rejected
                ingest_file_record(sha=digest, name=source.name, kind="mpd", run_id=run_id,
                                   counts={"new": written.new, "updated": written.updated,
                                           "unchanged": written.unchanged, "rejected": rejected})
                beat()
                progress.file(n_raw, {"file": source.name, **report.summary()})
            if len(delta):
                progress.phase("catalogue", f"all files read; writing the catalogue ({len(delta):,} tracks)")
                report.new_tracks += catalogue_apply(delta, progress=catalogue_progress, stored=stored_tracks)
            if bulk:
                beat()
                indexes_restore(progress=lambda names: progress.phase("indexes", f"building the indexes of {names}"))
            if marked:
                catalogue_mark(writer=writer, dirty=False, rebuilds=rebuilds)
    except BaseException:
        progress.close()
        raise
    # After the run is recorded, so the statistics are at least as new as every run that changed the store.
    try:
        if report.new or report.updated or get_db()[c.CATALOGUE_STATS].find_one({}, {"_id": 1}) is None:
            progress.phase("statistics", "computing the catalogue statistics for the dashboard")
            if stat_rows is not None:
                _catalogue_stats_refresh(playlist_rows=stat_rows, track_rows=_stats_track_rows(delta))
            else:
                _catalogue_stats_refresh()
    finally:
        progress.close()
    return report


# --- catalogue statistics ----------------------------------------------------------------------------------------

def catalogue_stats_compute(*, playlist_rows: Iterable[dict[str, Any]] | None = None,
                            track_rows: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Recompute and store the catalogue statistics document the dashboard reads (``selectors.catalogue_stats``).

    One pass over playlists and one over tracks; called after every MPD ingest that wrote playlists and by the
    weekly job. A first load passes the rows it still holds instead (``selectors.catalogue_stats_build``).
    Returns the stored document.
    """

    doc = catalogue_stats_build(playlist_rows=playlist_rows, track_rows=track_rows)
    get_db()[c.CATALOGUE_STATS].replace_one({"_id": CATALOGUE_STATS_ID}, doc, upsert=True)
    log.info("catalogue statistics computed in %.1f s: %s", doc["seconds"], doc["counts"])
    return doc


def _catalogue_stats_refresh(**rows: Any) -> None:
    # The playlists are stored by now; statistics that could not be refreshed are only stale until the weekly
    # job recomputes them, which must not turn a good ingest into a failed one.
    try:
        catalogue_stats_compute(**rows)
    except Exception:
        log.exception("could not recompute the catalogue statistics after the ingest; the weekly job will")


# --- users and their own playlists (API) ------------------------------------------------------------------------

API_USER_PREFIX = "api:"
# API_PID_START (ingestion.mpd): pids from there up are the API's; an MPD file's pid there is rejected.


class UserExists(ValueError):
    pass


def user_create(*, name: str, app: str | None = None) -> str:
    """Create user ``api:<name>`` for ``app`` (the app whose token asked: it may then act for the user);
    ``UserExists`` if taken. Names are 1–64 letters, digits, ``_ . -``."""

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        raise ValueError("name must be 1-64 letters, digits, '_', '.' or '-'")
    user = f"{API_USER_PREFIX}{name}"
    if user_ensure_many(user_ids=[user], source="api", app=app) == 0:
        raise UserExists(f"user {user} already exists")
    return user


def user_playlist_create(*, user: str, name: str, tracks: list[str]) -> dict[str, Any]:
    """A user's own playlist from catalogue tracks; ``ValueError`` naming unknown tracks. Written whole, with the
    catalogue counts kept right as ingestion keeps them."""

    db = get_db()
    known: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(list(dict.fromkeys(tracks))):
        for doc in db[c.TRACKS].find({"_id": {"$in": chunk}}):
            known[doc["_id"]] = doc
    missing = [t for t in tracks if t not in known]
    if missing:
        raise ValueError(f"tracks not in the catalogue: {', '.join(missing[:10])}")
    counter = db[c.CATALOGUE_STATE].find_one_and_update({"_id": "api_pid"}, {"$inc": {"n": 1}}, upsert=True,
                                                        return_document=ReturnDocument.AFTER)
    pid = API_PID_START + int(counter["n"])
    playlist = {"_id": pid, "name": name, "name_norm": normalize_name(name), "owner": user, "origin": "api",
                "tracks": [{"uri": t, **{k: known[t][k] for k in TRACK_META_FIELDS if k in known[t]}} for t in tracks],
                "num_tracks": len(tracks)}
    playlist["content_hash"] = content_hash(playlist)
    delta = CatalogueDelta()
    writer = catalogue_writer()  # its own entry: removing it leaves an ingest's (or another request's) in place
    rebuilds = catalogue_mark(writer=writer, dirty=True)
    playlist_upsert_many(playlists=[playlist], source={"kind": "api", "user": user}, delta=delta)
    catalogue_apply(delta)
    catalogue_mark(writer=writer, dirty=False, rebuilds=rebuilds)
    return playlist
