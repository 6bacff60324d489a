"""Issue 15 (4): the served log and the events do not grow forever. TTL indexes expire them where the store runs
them, and the weekly refresh's cleanup step deletes what is past retention in bounded batches on any store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.django_db


def test_cleanup_deletes_old_served_lists_and_events_and_keeps_new_ones(store, settings):
    from recsys_site.job_definitions import CLEANUP
    from recsys_site.jobs import Job, job_start, register

    settings.SERVED_RETENTION_DAYS, settings.EVENTS_RETENTION_DAYS, settings.RETENTION_BATCH = 90, 365, 7
    now = datetime.now(UTC)
    served = [{"_id": f"old{i}", "user": "u", "experiment": None, "variant": "control", "ts": now - timedelta(days=91)}
              for i in range(20)]
    served += [{"_id": f"new{i}", "user": "u", "experiment": None, "variant": "control", "ts": now - timedelta(days=89)}
               for i in range(5)]
    store["served"].insert_many(served)
    store["events"].insert_many([{"user": "u", "kind": "skip", "ts": now - timedelta(days=366)} for _ in range(30)]
                                + [{"user": "u", "kind": "skip", "ts": now - timedelta(days=364)} for _ in range(4)])
    store["experiment_pending"].insert_one({"_id": "gone", "events": [], "ts": now - timedelta(days=100)})

    name = f"test_cleanup_{uuid.uuid4().hex[:6]}"
    register(Job(name, "the weekly refresh's cleanup step alone", (CLEANUP,)))
    run = job_start(name=name, sync=True, trigger="test")
    assert run["status"] == "succeeded", run.get("traceback")
    assert sorted(d["_id"] for d in store["served"].find()) == sorted(f"new{i}" for i in range(5))
    assert store["events"].count_documents({}) == 4
    assert store["events"].count_documents({"ts": {"$lt": now - timedelta(days=365)}}) == 0
    assert store["experiment_pending"].count_documents({}) == 0
    assert run["metrics"]["cleanup"]["served_deleted"] == 20 and run["metrics"]["cleanup"]["events_deleted"] == 30


def test_ttl_indexes_carry_the_retention_and_follow_a_change(store):
    served = {i["key"][0][0]: i for i in store["served"].index_information().values() if "expireAfterSeconds" in i}
    events = {i["key"][0][0]: i for i in store["events"].index_information().values() if "expireAfterSeconds" in i}
    assert served["ts"]["expireAfterSeconds"] == 90 * 86400 and events["ts"]["expireAfterSeconds"] == 365 * 86400
    # A store whose index predates the retention (or another retention): the same index is retuned, not refused.
    from recsys_site.mongo import _create_or_retune, retention_index

    scratch = store["scratch"]
    scratch.create_index("ts")
    _create_or_retune(scratch, retention_index("ts", 30))
    assert scratch.index_information()["ts_1"]["expireAfterSeconds"] == 30 * 86400
