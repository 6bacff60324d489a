"""A client's time on an event (``ts``, issue 16): ISO-8601 with a time zone, never in the future beyond the clock
skew allowed, never older than CLIENT_TS_MAX_AGE_DAYS (nor the events' retention); a bad one refuses the whole batch
and names the field. Through the API, against the real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingestion.feedback.selectors import event_iter
from ingestion.services import user_create
from tests.conftest import app_client as make_app_client

pytestmark = pytest.mark.django_db

TRACK = "spotify:track:" + "B" * 22


@pytest.fixture
def client(store):
    return make_app_client("events:write")


@pytest.fixture
def user(store) -> str:
    return user_create(name="dated")


def post(client, body):
    response = client.post("/api/v1/events", body, format="json")
    return response.status_code, response.json()


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_a_dated_event_is_stored_at_its_time_and_an_undated_one_at_the_servers(client, user):
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3, hours=5)
    before = datetime.now(UTC)
    status, body = post(client, [{"user": user, "kind": "like", "track": TRACK, "ts": _iso(when)},
                                 {"user": user, "kind": "skip", "track": TRACK}])
    assert status == 201, body
    stored = {e["kind"]: e["ts"].replace(tzinfo=UTC) for e in event_iter(user=user)}
    assert stored["like"] == when
    assert stored["skip"] >= before.replace(microsecond=(before.microsecond // 1000) * 1000)


def test_another_time_zone_is_converted_to_utc(client, user):
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=30)
    text = when.astimezone(datetime.now().astimezone().tzinfo).isoformat()  # this machine's zone, or UTC
    shifted = (when + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S") + "+02:00"
    assert post(client, [{"user": user, "kind": "like", "track": TRACK, "ts": text},
                         {"user": user, "kind": "skip", "track": TRACK, "ts": shifted}])[0] == 201
    assert [e["ts"].replace(tzinfo=UTC) for e in event_iter(user=user)] == [when, when]


@pytest.mark.parametrize("ts", [12345, 1.5, True, ["2026-01-01T00:00:00Z"], {"$gt": ""}, "yesterday",
                                "2026-13-01T00:00:00Z", "2026-05-01T12:00:00", ""])
def test_a_ts_that_is_not_iso_text_with_a_zone_is_refused_and_nothing_stored(client, user, ts):
    status, body = post(client, [{"user": user, "kind": "like", "track": TRACK},
                                 {"user": user, "kind": "like", "track": TRACK, "ts": ts}])
    assert status == 400, body
    assert set(body["fields"]) == {"1"} and set(body["fields"]["1"]) == {"ts"}
    assert "ISO-8601" in body["fields"]["1"]["ts"]
    assert list(event_iter(user=user)) == []


def test_a_ts_in_the_future_beyond_the_skew_is_refused(client, user, settings):
    settings.CLIENT_TS_SKEW_SECONDS = 60
    ahead = datetime.now(UTC) + timedelta(seconds=120)
    status, body = post(client, {"user": user, "kind": "like", "track": TRACK, "ts": _iso(ahead)})
    assert status == 400 and "future" in body["fields"]["0"]["ts"] and "60 s" in body["fields"]["0"]["ts"]
    assert list(event_iter(user=user)) == []
    within = datetime.now(UTC) + timedelta(seconds=20)  # a client clock a little ahead is fine
    assert post(client, {"user": user, "kind": "like", "track": TRACK, "ts": _iso(within)})[0] == 201


def test_a_ts_older_than_the_allowed_age_or_the_retention_is_refused(client, user, settings):
    settings.CLIENT_TS_MAX_AGE_DAYS = 10
    settings.EVENTS_RETENTION_DAYS = 365
    old = datetime.now(UTC) - timedelta(days=11)
    status, body = post(client, {"user": user, "kind": "like", "track": TRACK, "ts": _iso(old)})
    assert status == 400 and "older than 10 days" in body["fields"]["0"]["ts"]
    settings.EVENTS_RETENTION_DAYS = 5  # the retention is tighter: it wins
    five_and_a_half = datetime.now(UTC) - timedelta(days=5.5)
    status, body = post(client, {"user": user, "kind": "like", "track": TRACK, "ts": _iso(five_and_a_half)})
    assert status == 400 and "older than 5 days" in body["fields"]["0"]["ts"]
    assert list(event_iter(user=user)) == []
    assert post(client, {"user": user, "kind": "like", "track": TRACK,
                         "ts": _iso(datetime.now(UTC) - timedelta(days=4))})[0] == 201
