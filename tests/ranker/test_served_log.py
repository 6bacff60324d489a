"""The served-list log: buffered, written in batches by a thread, kept while the store is down, written at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ranker.experiments.served_log import ServedLog
from tests.processes import wait_until

REPO = Path(__file__).resolve().parents[2]


def _doc(n: int) -> dict:
    return {"_id": f"rec-{n}-{uuid.uuid4().hex[:6]}", "user": f"u{n}", "kind": "playlists", "items": [n]}


def _ids(store) -> set[str]:
    return {d["_id"] for d in store["served"].find({}, {"_id": 1})}


def test_lists_wait_in_the_buffer_until_a_flush(store, settings):
    settings.SERVED_LOG_FLUSH_SECONDS = 3600  # the thread sleeps: only an explicit flush writes
    log = ServedLog()
    docs = [_doc(n) for n in range(5)]
    for doc in docs:
        log.record(doc)
    assert log.pending() == 5 and _ids(store) == set()
    assert log.flush() == 5
    assert log.pending() == 0 and _ids(store) == {d["_id"] for d in docs}
    assert store["served"].find_one({"_id": docs[3]["_id"]})["items"] == [3]


def test_the_thread_writes_every_interval(store, settings):
    settings.SERVED_LOG_FLUSH_SECONDS = 0.1
    log = ServedLog()
    docs = [_doc(n) for n in range(3)]
    for doc in docs:
        log.record(doc)
    wait_until(lambda: _ids(store) == {d["_id"] for d in docs}, 10, "the thread to write the lists", 0.05)
    assert log.pending() == 0


def test_a_full_batch_wakes_the_writer_before_the_interval(store, settings):
    settings.SERVED_LOG_FLUSH_SECONDS = 3600
    settings.SERVED_LOG_BATCH = 4
    log = ServedLog()
    for n in range(3):
        log.record(_doc(n))
    time.sleep(0.3)
    assert _ids(store) == set()  # under the batch size, the interval has not passed
    log.record(_doc(3))
    wait_until(lambda: len(_ids(store)) == 4, 10, "the full batch to be written", 0.05)


def test_lists_are_written_to_the_database_they_were_served_from(store, settings):
    settings.SERVED_LOG_FLUSH_SECONDS = 3600
    log = ServedLog()
    first = _doc(1)
    log.record(first)
    other = f"{settings.MONGO_DB}_other"
    settings.MONGO_DB = other
    second = _doc(2)
    log.record(second)
    assert log.flush() == 2
    assert _ids(store) == {first["_id"]}
    from recsys_site.mongo import get_client

    assert [d["_id"] for d in get_client()[other]["served"].find()] == [second["_id"]]
    get_client().drop_database(other)


def test_a_store_outage_keeps_the_lists_for_the_next_try(store, settings):
    from recsys_site.embedded import free_port

    settings.SERVED_LOG_FLUSH_SECONDS = 3600
    log = ServedLog()
    docs = [_doc(n) for n in range(3)]
    for doc in docs:
        log.record(doc)
    real_uri = settings.MONGO_URI
    settings.MONGO_URI, settings.MONGO_TIMEOUT_MS = f"mongodb://127.0.0.1:{free_port()}", 200  # nothing listens
    assert log.flush() == 0
    assert log.pending() == 3
    settings.MONGO_URI = real_uri
    assert log.flush() == 3
    assert _ids(store) == {d["_id"] for d in docs}


def test_a_retried_batch_that_partly_reached_the_store_is_written_once(store, settings):
    settings.SERVED_LOG_FLUSH_SECONDS = 3600
    log = ServedLog()
    docs = [_doc(n) for n in range(4)]
    store["served"].insert_one(dict(docs[1]))  # as if the first try had written this one before failing
    for doc in docs:
        log.record(doc)
    assert log.flush() == 4
    assert _ids(store) == {d["_id"] for d in docs} and store["served"].count_documents({}) == 4


def test_a_full_buffer_drops_the_oldest_and_counts_them(store, settings):
    from recsys_site.metrics import SERVED_LOG_DROPPED

    settings.SERVED_LOG_FLUSH_SECONDS = 3600
    settings.SERVED_LOG_MAX_BUFFER = 3
    before = SERVED_LOG_DROPPED._value.get()
    log = ServedLog()
    docs = [_doc(n) for n in range(5)]
    for doc in docs:
        log.record(doc)
    assert log.pending() == 3
    assert SERVED_LOG_DROPPED._value.get() - before == 2
    log.flush()
    assert _ids(store) == {d["_id"] for d in docs[2:]}


def test_zero_interval_writes_inline(store, settings):
    settings.SERVED_LOG_FLUSH_SECONDS = 0
    log = ServedLog()
    doc = _doc(7)
    log.record(doc)
    assert log.pending() == 0 and _ids(store) == {doc["_id"]}


def test_what_is_buffered_is_written_when_the_process_exits(store, settings):
    doc_id = f"rec-exit-{uuid.uuid4().hex[:8]}"
    script = (
        "import django; django.setup()\n"
        "from ranker.experiments.assign import served_record\n"
        "from ranker.experiments.served_log import SERVED_LOG\n"
        f"served_record(rec_id={doc_id!r}, user='u1', kind='tracks', experiment=None, variant='control',"
        " model_version=None, source='popularity', items=['a'])\n"
        "assert SERVED_LOG.pending() == 1\n"  # still buffered when the interpreter exits
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.test", "MONGO_URI": settings.MONGO_URI,
           "MONGO_DB": settings.MONGO_DB, "SERVED_LOG_FLUSH_SECONDS": "3600"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert _ids(store) == {doc_id}
