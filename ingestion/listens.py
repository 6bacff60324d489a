"""Storing listening triplets: ``triplets_ingest``, the service of ``manage.py ingest_triplets``.

Files are parsed by ``ingestion.triplets``; the run skeleton (run document, files recorded by sha256) is
``ingestion.runs``'. For each file, a first pass hashes it (sha256, streamed); a file already ingested is skipped.
A second pass upserts its rows by deterministic ``_id`` in batches: ``insert_many`` for new rows, and for rows that
already existed one read (``$in`` chunks of 100) to compare, and an update only where the value changed (the run
remembers the unchanged ones by a 64-bit hash, 8 bytes a row, instead of writing to them). After a file read to the
end, the rows of that file's source that this run neither wrote nor met (they vanished from the file) are deleted,
unless they are more than ``max_removed_share()`` of that source's stored rows (a truncated or wrong file with the
same name): then nothing is deleted, the file is not recorded as done, and a ``Problem`` says to rerun with
``allow_removals`` (``ingest_triplets --allow-removals``) if the rows really left the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from pymongo import ReplaceOne, UpdateOne
from tqdm import tqdm

from recsys_site.mongo import get_db

from . import collections as c
from .mpd import Problem
from .runs import RunReport, ingest_file_done, ingest_file_record, ingest_run
from .services import _chunks, insert_new_many, user_ensure_many
from .triplets import FORMATS, HeaderError, TripletFile, expand_paths, parse_file, sha256_file

BATCH = 5000
# A re-ingested file may remove at most this share of its source's stored rows unless removals are allowed
# (settings.TRIPLETS_MAX_REMOVED_SHARE overrides it).
MAX_REMOVED_SHARE = 0.10


def max_removed_share() -> float:
    return float(getattr(settings, "TRIPLETS_MAX_REMOVED_SHARE", MAX_REMOVED_SHARE))


class RemovalRefused(Exception):
    """A file would remove more of its source's stored rows than allowed: nothing was removed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
USER_SOURCE = {"tasteprofile": "tasteprofile", "hetrec": "lastfm"}
COMPARED = {"listens": ("weight",), "friendships": (), "items": ("name", "url")}


@dataclass
class TripletReport(RunReport):
    COUNTS = ("files", "files_skipped", "files_failed", "rows", "listens_new", "listens_updated",
              "listens_unchanged", "listens_removed", "friendships_new", "friendships_updated",
              "friendships_unchanged", "friendships_removed", "items_new", "items_updated", "items_removed",
              "users_new", "rejected")
    RATE = ("rows_per_s", "rows")

    rows: int = 0
    removals: list[tuple[str, str, int]] = field(default_factory=list)  # (file, collection, rows removed)
    listens_new: int = 0
    listens_updated: int = 0
    listens_unchanged: int = 0
    listens_removed: int = 0
    friendships_new: int = 0
    friendships_updated: int = 0
    friendships_unchanged: int = 0
    friendships_removed: int = 0
    items_new: int = 0
    items_updated: int = 0
    items_removed: int = 0
    users_new: int = 0

    @property
    def changed(self) -> bool:
        """Whether this run stored, changed or removed anything."""
        keys = ("listens_new", "listens_updated", "listens_removed", "friendships_new", "friendships_updated",
                "friendships_removed",
                "items_new", "items_updated", "items_removed", "users_new")
        return any(getattr(self, k) for k in keys)


class HashSet:
    """A compact set of strings (8 bytes each): their 64-bit BLAKE2b hashes in sorted numpy arrays.

    Arrays are merged like a binary counter, so there are O(log n) of them and a batch lookup is a few
    vectorised binary searches. Used to remember which stored rows a run met unchanged, without writing
    to them (per-document updates are slow) and without holding their ids (files can have 10^8 rows).
    Two strings sharing a hash (odds about n^2 / 2^65) would make a vanished row look seen: it stays.
    """

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    @staticmethod
    def hashes(keys: list[str]) -> np.ndarray:
        return np.fromiter((int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
                            for k in keys), dtype=np.uint64, count=len(keys))

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            found |= run[at] == hashes
        return found

    def add(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        self.runs.append(np.unique(hashes))
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.union1d(self.runs[-1], last)

    def __len__(self) -> int:
        return sum(len(run) for run in self.runs)


class _Upserter:
    """Writes one file's documents into one collection in batches, and counts what happened.

    Rows are keyed by ``_id``. New ones are inserted (stamped with this run's ``run_id``). For ones that
    existed, the stored document is read (``$in`` chunks of 100) and: met earlier in this run (its
    ``run_id`` is this run's, or it is in ``unchanged``) -> a duplicate, reported if its values differ,
    the first is kept; values or source changed -> ``$set`` of them and ``run_id``; unchanged -> no write,
    its hash goes into ``unchanged``. ``finish`` then deletes the rows of this source that this run did
    not meet: ``run_id`` not this run's and not in ``unchanged``.
    """

    def __init__(self, collection: str, *, source: str, run_id: Any, compared: tuple[str, ...], file: str,
                 unchanged: HashSet):
        self.collection, self.source, self.run_id, self.compared, self.file = (
            collection, source, run_id, compared, file)
        self.met_unchanged = unchanged  # shared by the files of one run that write this collection
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.new = self.updated = self.unchanged = self.removed = 0
        self.seen_before = False  # rows of this source stored by an earlier run were met
        self.problems: list[Problem] = []

    def add(self, line: int, doc: dict[str, Any]) -> bool:
        """Queue a document; True when a batch is full and ``flush`` should be called."""
        self.pending.append((line, doc))
        return len(self.pending) >= BATCH

    def flush(self) -> list[dict[str, Any]]:
        """Write the queued documents; return them (for the caller's user bookkeeping)."""
        pending, self.pending = self.pending, []
        if not pending:
            return []
        stamp = {"source": self.source, "run_id": self.run_id}
        docs = [{**doc, **stamp} for _, doc in pending]
        existed = sorted(insert_new_many(self.collection, docs))
        self.new += len(docs) - len(existed)
        if not existed:
            return docs
        coll = get_db()[self.collection]
        ids = list(dict.fromkeys(docs[i]["_id"] for i in existed))
        stored: dict[Any, dict[str, Any]] = {}
        projection = {f: 1 for f in (*self.compared, "source", "run_id")}
        for chunk in _chunks(ids):
            for old in coll.find({"_id": {"$in": chunk}}, projection):
                stored[old["_id"]] = old
        hashes = HashSet.hashes([docs[i]["_id"] for i in existed])
        met = self.met_unchanged.contains(hashes)
        ops: list[Any] = []
        unchanged: list[int] = []
        for k, i in enumerate(existed):
            line, doc = pending[i]
            new = docs[i]
            old = stored.get(doc["_id"])
            if old is None:  # deleted since the insert was tried
                ops.append(ReplaceOne({"_id": doc["_id"]}, new, upsert=True))
                self.new += 1
            elif old.get("run_id") == self.run_id or met[k]:
                self._duplicate(line, doc, old)
                continue
            else:
                if old.get("source") == self.source:
                    self.seen_before = True
                if old.get("source") != self.source or any(old.get(f) != doc.get(f) for f in self.compared):
                    ops.append(UpdateOne({"_id": doc["_id"]}, {"$set": {f: doc.get(f) for f in self.compared}
                                                               | stamp}))
                    self.updated += 1
                else:
                    unchanged.append(k)
                    self.unchanged += 1
            stored[doc["_id"]] = new  # a later duplicate in this batch compares with what is kept
        self.met_unchanged.add(hashes[unchanged])
        if ops:
            coll.bulk_write(ops, ordered=False)
        return docs

    def _duplicate(self, line: int, doc: dict[str, Any], old: dict[str, Any]) -> None:
        if old.get("source") != self.source:
            reason = f"{doc['_id']}: already given by {old.get('source')} in this run (kept that one)"
        else:
            differs = [f for f in self.compared if old.get(f) != doc.get(f)]
            if not differs:
                return  # the same row twice: harmless
            kept = ", ".join(f"{f} {old.get(f)!r}" for f in differs)
            got = ", ".join(f"{f} {doc.get(f)!r}" for f in differs)
            reason = f"{doc['_id']}: listed twice in this file with different values (kept the first: {kept}; " \
                     f"this line: {got})"
        self.problems.append(Problem(file=self.file, line=line, reason=reason))

    def finish(self, *, previously_ingested: bool, allow_removals: bool = False) -> None:
        """Delete the rows of this source that this run did not meet (if the source was stored before).

        ``RemovalRefused`` (and nothing deleted) when they are more than ``max_removed_share()`` of the source's
        stored rows and ``allow_removals`` is false."""
        self.flush()
        if not (self.seen_before or previously_ingested):
            return
        coll = get_db()[self.collection]
        cursor = coll.find({"source": self.source, "run_id": {"$ne": self.run_id}}, {"_id": 1}, batch_size=BATCH)
        vanished: list[Any] = []
        batch: list[Any] = []
        for doc in cursor:
            batch.append(doc["_id"])
            if len(batch) >= BATCH:
                vanished += self._not_met(batch)
                batch = []
        vanished += self._not_met(batch)
        if not vanished:
            return
        stored = coll.count_documents({"source": self.source}) - self.new  # the source's rows before this run
        share, limit = len(vanished) / max(stored, 1), max_removed_share()
        if share > limit and not allow_removals:
            raise RemovalRefused(
                f"would remove {len(vanished):,} of the {stored:,} rows stored from {self.source} in "
                f"{self.collection} ({share:.0%}; more than {limit:.0%} needs --allow-removals): nothing was removed "
                f"and the file is not recorded as ingested. If the file is complete and those rows really left it, "
                f"rerun with --allow-removals")
        for chunk in _chunks(vanished):
            self.removed += coll.delete_many({"_id": {"$in": chunk}}).deleted_count

    def _not_met(self, ids: list[Any]) -> list[Any]:
        if not ids:
            return []
        met = self.met_unchanged.contains(HashSet.hashes([str(i) for i in ids]))
        return [i for i, m in zip(ids, met, strict=True) if not m]


ProgressCallback = Callable[[dict[str, Any]], None]


def triplets_ingest(*, paths: list[str], fmt: str, show_progress: bool = False,
                    callback: ProgressCallback | None = None, allow_removals: bool = False) -> TripletReport:
    """Ingest listening triplets (and HetRec friendships and artist names); see ``ingest_triplets --help``.

    Skips files whose sha256 was already ingested; upserts changed files row by row and removes the
    rows that vanished from them; rejects bad lines one by one (file, line, field) and unusable files one
    by one, and keeps going. A file that would remove more than ``max_removed_share()`` of its source's stored
    rows removes nothing and is reported as failed, unless ``allow_removals``; ``report.removals`` says what each
    file removed.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    report = TripletReport()
    collections = {"listens": c.LISTENS, "friendships": c.FRIENDSHIPS, "items": c.LISTEN_ITEMS}
    user_source = USER_SOURCE[fmt]
    met_unchanged: dict[str, HashSet] = {}  # per collection: rows this run met unchanged (left unwritten)
    bar = tqdm(desc=f"ingest_triplets {fmt}", unit="row", disable=not show_progress, dynamic_ncols=True)
    try:
        with ingest_run(kind="triplets", paths=paths, report=report) as run_id:
            for item in expand_paths(list(paths), fmt):
                if isinstance(item, Problem):
                    report.file_failed(item)
                    continue
                tf: TripletFile = item
                report.files += 1
                bar.set_postfix_str(f"hashing {tf.path.name}")
                try:
                    digest = sha256_file(tf.path)
                except OSError as exc:
                    report.file_failed(Problem(file=tf.name, reason=f"cannot read: {exc.strerror or exc}"))
                    continue
                if ingest_file_done(digest):
                    report.file_skipped(tf.name)
                    bar.set_postfix_str(f"skipped {tf.path.name} (already ingested)")
                    continue
                bar.set_postfix_str(tf.path.name)
                target = tf.role.target
                writer = _Upserter(collections[target], source=tf.source, run_id=run_id, compared=COMPARED[target],
                                   file=tf.name, unchanged=met_unchanged.setdefault(target, HashSet()))
                users = _UserKeeper(user_source)
                rows = rejected = unflushed = 0
                try:
                    for result in parse_file(tf.path, tf.role):
                        rows += 1
                        unflushed += 1
                        if isinstance(result, Problem):
                            report.problems.append(result)
                            rejected += 1
                            continue
                        if writer.add(*result):
                            users.ensure(target, writer.flush())
                            bar.update(unflushed)
                            unflushed = 0
                    previously = get_db()[c.INGEST_FILES].find_one(
                        {"kind": "triplets", "source": tf.source}, {"_id": 1}) is not None
                    users.ensure(target, writer.flush())
                    writer.finish(previously_ingested=previously, allow_removals=allow_removals)
                except (OSError, HeaderError, RemovalRefused) as exc:
                    users.ensure(target, writer.flush())  # keep what was read; the file is not recorded as done
                    if isinstance(exc, OSError):
                        reason = f"cannot read: {exc.strerror or exc}"
                    else:
                        reason = exc.reason if isinstance(exc, RemovalRefused) else str(exc)
                    report.file_failed(Problem(file=tf.name, reason=reason))
                    report.problems.extend(writer.problems)
                    report.rejected += rejected + len(writer.problems)
                    _add_counts(report, target, writer, users)
                    continue
                finally:
                    bar.update(unflushed)
                    report.rows += rows
                report.problems.extend(writer.problems)
                rejected += len(writer.problems)
                report.rejected += rejected
                _add_counts(report, target, writer, users)
                if writer.removed:
                    report.removals.append((tf.name, writer.collection, writer.removed))
                counts = {"rows": rows, "new": writer.new, "updated": writer.updated, "unchanged": writer.unchanged,
                          "removed": writer.removed, "rejected": rejected, "users_new": users.new}
                ingest_file_record(sha=digest, name=tf.name, kind="triplets", run_id=run_id, counts=counts,
                                   source=tf.source, format=fmt)
                if callback:
                    callback({"file": tf.name, **report.summary()})
    finally:
        bar.close()
    return report


def _add_counts(report: TripletReport, target: str, writer: _Upserter, users: _UserKeeper) -> None:
    report.users_new += users.new
    if target == "listens":
        report.listens_new += writer.new
        report.listens_updated += writer.updated
        report.listens_unchanged += writer.unchanged
        report.listens_removed += writer.removed
    elif target == "friendships":
        report.friendships_new += writer.new
        report.friendships_updated += writer.updated
        report.friendships_unchanged += writer.unchanged
        report.friendships_removed += writer.removed
    else:
        report.items_new += writer.new
        report.items_updated += writer.updated
        report.items_removed += writer.removed


class _UserKeeper:
    """Creates the users met in listens and friendships; remembers the last batch's (files come grouped by user)."""

    def __init__(self, source: str):
        self.source = source
        self.recent: set[str] = set()
        self.new = 0

    def ensure(self, target: str, docs: list[dict[str, Any]]) -> None:
        if target == "items" or not docs:
            return
        ids: dict[str, None] = {}
        for doc in docs:
            ids[doc["user"]] = None
            if "friend" in doc:
                ids[doc["friend"]] = None
        fresh = [u for u in ids if u not in self.recent]
        if fresh:
            self.new += user_ensure_many(user_ids=fresh, source=self.source)
        self.recent = set(ids)
