"""The served-list log, written in batches: one ``insert_many`` per half second instead of one insert per request.

Every pick list the API serves is logged (``served``) so that feedback carrying its ``rec_id`` can be joined to it
for the A/B results. Written inline, that insert was the largest single cost of a cached pick (a store round trip
per request, see docs/BENCHMARKS.md). Here a request appends the document to a per-process buffer; a daemon thread
writes the buffer every ``SERVED_LOG_FLUSH_SECONDS`` (or sooner when ``SERVED_LOG_BATCH`` lists wait), and the
process writes what is left when it exits.

Trade-off (docs/adr/0008-buffered-served-log.md): a process killed without exiting (SIGKILL, OOM) loses at most its
last interval of served lists — exposures, not user data. While the store is down the buffer keeps up to
``SERVED_LOG_MAX_BUFFER`` lists and retries; beyond that the oldest are dropped and counted
(``buddies_served_log_dropped_total``). ``SERVED_LOG_FLUSH_SECONDS = 0`` writes each list inline, as before.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import deque
from datetime import datetime
from typing import Any

from django.conf import settings
from pymongo.errors import BulkWriteError, PyMongoError

from ranker import collections as c
from recsys_site.metrics import SERVED_LOG_DROPPED
from recsys_site.mongo import get_client, get_db

from .stats import stats_pending_delete_before, stats_served

log = logging.getLogger(__name__)
DUPLICATE_KEY = 11000  # a retried batch whose first try reached the store in part


class ServedLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()  # (database, document)
        self._thread: threading.Thread | None = None
        self._flushing = threading.Lock()

    def record(self, doc: dict[str, Any]) -> None:
        if settings.SERVED_LOG_FLUSH_SECONDS <= 0:
            get_db()[c.SERVED].insert_one(doc)
            _count_served(get_db(), [doc])
            return
        with self._lock:
            self._pending.append((settings.MONGO_DB, doc))
            overflow = len(self._pending) - settings.SERVED_LOG_MAX_BUFFER
            for _ in range(max(0, overflow)):
                self._pending.popleft()
            waiting = len(self._pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
                self._thread.start()
        if overflow > 0:
            _dropped(overflow)
        if waiting >= settings.SERVED_LOG_BATCH:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write every buffered list now; how many were written. On a store error they stay buffered (and the
        error is logged): the next flush tries again."""
        with self._flushing:  # one writer at a time, so a batch is never written twice concurrently
            written = 0
            while True:
                with self._lock:
                    if not self._pending:
                        return written
                    database = self._pending[0][0]
                    batch = []
                    while self._pending and self._pending[0][0] == database and len(batch) < 1000:
                        batch.append(self._pending.popleft())
                docs = [doc for _, doc in batch]
                db = get_client()[database]
                try:
                    db[c.SERVED].insert_many(docs, ordered=False)
                    inserted = docs
                except BulkWriteError as exc:
                    errors = exc.details.get("writeErrors", [])
                    others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
                    if others:
                        log.error("served log: %d of %d lists not written: %s", len(others), len(batch),
                                  others[0].get("errmsg"))
                    failed = {e.get("index") for e in errors}  # a duplicate was counted when it first landed
                    inserted = [doc for i, doc in enumerate(docs) if i not in failed]
                except PyMongoError as exc:
                    with self._lock:
                        self._pending.extendleft(reversed(batch))
                    log.warning("served log: store unavailable, %d lists kept for the next try: %s",
                                len(batch), exc)
                    return written
                _count_served(db, inserted)
                written += len(batch)

    def _run(self) -> None:
        while True:
            self._wake.wait(settings.SERVED_LOG_FLUSH_SECONDS)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the writer thread die: the next interval tries again
                log.exception("served log: flush failed")

    def _after_fork(self) -> None:
        # A forked child (a Celery or gunicorn worker) has a copy of the buffer but not the thread: start empty.
        self.__init__()


def served_delete_before(*, before: datetime, batch: int) -> int:
    """Delete up to ``batch`` served lists logged before ``before`` (oldest first, by the ``ts`` index), and the
    feedback still waiting for lists that old; how many lists went. The A/B counters keep what they counted."""
    db = get_db()
    ids = [d["_id"] for d in db[c.SERVED].find({"ts": {"$lt": before}}, {"_id": 1}).sort("ts", 1).limit(batch)]
    stats_pending_delete_before(db, before=before, batch=batch)
    return db[c.SERVED].delete_many({"_id": {"$in": ids}}).deleted_count if ids else 0


def _count_served(db, docs: list[dict[str, Any]]) -> None:
    """Fold the lists just written into the kept A/B results (``ranker.experiments.stats``); a failure there is
    logged, never lets the log retry the batch (the lists are written)."""
    try:
        stats_served(db, docs)
    except PyMongoError as exc:
        log.error("served log: %d lists written but not counted in the experiment results: %s", len(docs), exc)


def _dropped(n: int) -> None:
    SERVED_LOG_DROPPED.inc(n)
    log.error("served log: buffer full (%d lists): dropped the %d oldest", settings.SERVED_LOG_MAX_BUFFER, n)


SERVED_LOG = ServedLog()
os.register_at_fork(after_in_child=SERVED_LOG._after_fork)


@atexit.register
def _flush_at_exit() -> None:
    if SERVED_LOG.pending():
        try:
            SERVED_LOG.flush()
        except Exception:
            log.exception("served log: could not write the last lists at exit")
