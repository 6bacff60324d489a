"""Feedback events (issue 15): strict inputs, and idempotent retries by ``event_id``; through the API and the service,
against the real store."""

from __future__ import annotations

import pytest

from ingestion.feedback.selectors import event_iter
from ingestion.feedback.services import EventError, event_record_many
from ingestion.services import user_create
from tests.conftest import app_client as make_app_client

pytestmark = pytest.mark.django_db

TRACK = "spotify:track:" + "A" * 22
ID_MAX_CHARS = 64  # ingestion.feedback.services.ID_MAX_CHARS (checked below)
MS_PLAYED_MAX = 24 * 60 * 60 * 1000


@pytest.fixture
def app_client(store):
    """A first-party app's token: it may send events for every user (recsys_site/auth.py)."""
    return make_app_client("events:write")


@pytest.fixture
def user(store) -> str:
    return user_create(name="listener")


def post(client, body):
    response = client.post("/api/v1/events", body, format="json")
    return response.status_code, response.json()


@pytest.mark.parametrize("rec_id", [{"$gt": ""}, ["a"], 7, "", "x" * (ID_MAX_CHARS + 1), "line\nbreak", "\x00"])
def test_a_rec_id_that_is_not_a_short_printable_string_is_refused_and_nothing_stored(app_client, user, rec_id):
    status, body = post(app_client, [{"user": user, "kind": "like", "track": TRACK},
                                     {"user": user, "kind": "like", "track": TRACK, "rec_id": rec_id}])
    assert status == 400, body
    assert set(body["fields"]) == {"1"} and "rec_id" in body["fields"]["1"]
    assert f"1 to {ID_MAX_CHARS} printable characters" in body["fields"]["1"]["rec_id"]
    assert list(event_iter(user=user)) == []


def test_a_good_rec_id_is_stored_as_sent(app_client, user):
    rec_id = "a" * ID_MAX_CHARS
    assert post(app_client, {"user": user, "kind": "like", "track": TRACK, "rec_id": rec_id})[0] == 201
    assert [e["rec_id"] for e in event_iter(user=user)] == [rec_id]


def test_ms_played_is_bounded_and_the_error_says_the_bound(app_client, user):
    status, body = post(app_client, {"user": user, "kind": "play", "track": TRACK, "ms_played": MS_PLAYED_MAX + 1})
    assert status == 400 and str(MS_PLAYED_MAX) in body["fields"]["0"]["ms_played"]
    assert "24 h" in body["fields"]["0"]["ms_played"]
    assert list(event_iter(user=user)) == []
    assert post(app_client, {"user": user, "kind": "play", "track": TRACK, "ms_played": MS_PLAYED_MAX})[0] == 201


def test_a_track_uri_with_a_trailing_newline_is_refused(app_client, user):
    status, body = post(app_client, {"user": user, "kind": "like", "track": TRACK + "\n"})
    assert status == 400 and "track" in body["fields"]["0"]
    assert list(event_iter(user=user)) == []


def test_a_retried_batch_neither_errors_nor_duplicates(app_client, user, store):
    batch = [{"user": user, "kind": "like", "track": TRACK, "event_id": "e-1"},
             {"user": user, "kind": "skip", "track": TRACK, "event_id": "e-2"}]
    assert post(app_client, batch) == (201, {"stored": 2, "duplicates": 0})
    assert post(app_client, batch) == (201, {"stored": 0, "duplicates": 2})  # the client's retry
    again = [*batch, {"user": user, "kind": "like", "track": TRACK, "event_id": "e-3"}]
    assert post(app_client, again) == (201, {"stored": 1, "duplicates": 2})
    assert sorted(e["event_id"] for e in event_iter(user=user)) == ["e-1", "e-2", "e-3"]
    assert store.events.count_documents({}) == 3


def test_event_ids_are_unique_per_user_and_events_without_one_are_all_stored(user, store):
    other = user_create(name="other")
    like = {"kind": "like", "track": TRACK}
    written = event_record_many(events=[{"user": user, **like, "event_id": "same"},
                                        {"user": other, **like, "event_id": "same"},
                                        {"user": user, **like, "event_id": "same"},  # twice in one batch
                                        {"user": user, **like}, {"user": user, **like}])
    assert (written.stored, written.duplicates) == (4, 1)
    assert store.events.count_documents({"user": user}) == 3 and store.events.count_documents({"user": other}) == 1


@pytest.mark.parametrize("event_id", [{"$ne": None}, 12, "", "x" * (ID_MAX_CHARS + 1), "tab\there"])
def test_a_bad_event_id_is_refused_naming_the_field(user, store, event_id):
    with pytest.raises(EventError) as refused:
        event_record_many(events=[{"user": user, "kind": "like", "track": TRACK, "event_id": event_id}])
    assert "event_id" in refused.value.errors[0]
    assert store.events.count_documents({}) == 0


def test_the_event_id_index_is_unique_and_partial(store):
    [index] = [i for i in store.events.index_information().values() if [k for k, _ in i["key"]] == ["user",
                                                                                                   "event_id"]]
    assert index["unique"] and dict(index["partialFilterExpression"]) == {"event_id": {"$exists": True}}


def test_the_bounds_are_the_services_and_the_serializer_states_them():
    from ingestion.api import EventSerializer
    from ingestion.feedback import services

    assert (services.ID_MAX_CHARS, services.MS_PLAYED_MAX) == (ID_MAX_CHARS, MS_PLAYED_MAX)
    fields = EventSerializer().fields
    assert fields["ms_played"].max_value == MS_PLAYED_MAX and fields["ms_played"].min_value == 0
    for name in ("rec_id", "event_id"):
        assert (fields[name].min_length, fields[name].max_length, fields[name].required) == (1, ID_MAX_CHARS, False)


def test_a_track_event_may_name_the_playlist_it_was_played_from(app_client, user):
    assert post(app_client, [{"user": user, "kind": "play", "track": TRACK, "ms_played": 40_000, "playlist": 7},
                             {"user": user, "kind": "skip", "track": TRACK}])[0] == 201
    stored = sorted(event_iter(user=user), key=lambda e: e["kind"])
    assert [(e["kind"], e.get("playlist")) for e in stored] == [("play", 7), ("skip", None)]


@pytest.mark.parametrize("playlist", ["7", True, -1, 1.5, {"$gt": 0}])
def test_a_track_events_playlist_that_is_not_a_playlist_id_is_refused_and_nothing_stored(app_client, user, playlist):
    status, body = post(app_client, [{"user": user, "kind": "like", "track": TRACK},
                                     {"user": user, "kind": "skip", "track": TRACK, "playlist": playlist}])
    assert status == 400, body
    assert set(body["fields"]) == {"1"} and "played from" in body["fields"]["1"]["playlist"]
    assert list(event_iter(user=user)) == []
