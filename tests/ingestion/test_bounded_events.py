"""Issue 15 (5): one event batch costs one user lookup, one bounded cache invalidation and at most one queued
refresh per distinct user, on the ``refresh`` queue (not ``default``, which job steps use), and a user whose
refresh still waits gets no second one."""

from __future__ import annotations

import pytest
import redis

from tests.commands import redis_calls, store_commands
from tests.conftest import app_client

pytestmark = pytest.mark.django_db

TRACK = "spotify:track:" + "C" * 22
USERS = 50


@pytest.fixture
def writer():
    """A first-party app's token: it may send events for every user (recsys_site/auth.py)."""
    return app_client("events:write")


@pytest.fixture
def broker(settings):
    """The broker's Redis; the refresh and default queues' messages this test adds are removed afterwards."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = {q: client.llen(q) for q in ("refresh", "default")}
    yield client, before
    for queue, n in before.items():  # newest messages are at the head (LPUSH): drop what this test added
        extra = client.llen(queue) - n
        if extra > 0:
            client.lpop(queue, extra)


def test_an_event_batch_is_bounded_work(store, settings, writer, broker):
    from ingestion.services import user_ensure_many
    from ranker.picks import cache

    client, before = broker
    users = [f"api:batch{i}" for i in range(USERS)]
    user_ensure_many(user_ids=users, source="api")
    cache_redis = redis.Redis.from_url(settings.PICKS_CACHE_URL)
    cache_redis.delete(*[f"refresh-pending:{u}" for u in users])
    for user in users[:2]:  # cached picks that the feedback must invalidate
        cache.put(cache.key(kind="tracks", version="v:control:x", user=user, k=5), {"payload": [1]}, user=user)
    events = [{"user": users[i % USERS], "kind": "like", "track": TRACK} for i in range(1000)]

    smembers = redis_calls(cache_redis, "smembers")
    with store_commands() as commands:
        assert writer.post("/api/v1/events", events, format="json").status_code == 201
    assert len(commands.on("users")) == 1, commands.counts()  # one batched lookup, not one per event or user
    assert redis_calls(cache_redis, "smembers") == smembers  # no scan of each user's key set
    assert all(cache.get(cache.key(kind="tracks", version="v:control:x", user=u, k=5)) is None for u in users[:2])
    assert client.llen("refresh") - before["refresh"] == USERS  # one refresh per distinct user
    assert client.llen("default") - before["default"] == 0  # job steps' queue untouched

    # More feedback while those refreshes still wait: nothing more is queued.
    assert writer.post("/api/v1/events", events[:300], format="json").status_code == 201
    assert client.llen("refresh") - before["refresh"] == USERS
    assert client.llen("default") - before["default"] == 0


def test_an_unknown_user_in_a_batch_is_still_named(store, writer, broker):
    from ingestion.services import user_ensure_many

    user_ensure_many(user_ids=["api:known"], source="api")
    events = [{"user": "api:known", "kind": "like", "track": TRACK}, {"user": "api:ghost", "kind": "like",
                                                                      "track": TRACK}]
    refused = writer.post("/api/v1/events", events, format="json")
    assert refused.status_code == 400 and "unknown user 'api:ghost'" in str(refused.json()["fields"]["1"])
    assert store["events"].count_documents({}) == 0
