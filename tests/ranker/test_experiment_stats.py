"""Issue 15 (4): A/B results come from counters kept as lists are served and feedback is stored, not from a scan of
the served log and the events; a results request reads one small document per variant."""

from __future__ import annotations

import math
import random
import statistics
import uuid

import pytest

from ranker.experiments.assign import _mean_ci, _wilson, assign, experiment_results, served_record
from tests.commands import store_commands

pytestmark = pytest.mark.django_db

SPEC = {"rerank": {"applies_to": ["playlists"], "variants": {
    "control": {"weight": 0.5}, "discovery": {"weight": 0.5, "playlist_weights": {"discovery": 5.0}}}}}
TRACK = "spotify:track:" + "B" * 22


def _serve(user: str) -> dict:
    rec = {"rec_id": uuid.uuid4().hex, "user": user, "variant": assign(user=user, experiment="rerank")}
    served_record(rec_id=rec["rec_id"], user=user, kind="playlists", experiment="rerank", variant=rec["variant"],
                  model_version="v", source="model", items=[1, 2, 3])
    return rec


@pytest.fixture
def post_events(settings):
    """POST /api/v1/events with a token; the refreshes it queues are removed from the broker afterwards."""
    import redis

    from tests.conftest import app_client

    client = app_client("events:write", app="ab")
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = {q: broker.llen(q) for q in ("refresh", "default")}

    def post(events: list[dict]) -> None:
        response = client.post("/api/v1/events", events, format="json")
        assert response.status_code == 201, response.content

    yield post
    for queue, n in before.items():
        if (extra := broker.llen(queue) - n) > 0:
            broker.lpop(queue, extra)


def _expected(lists: list[dict], events: list[dict]) -> dict:
    """The results as the old scan computed them, from everything served and stored."""
    variant_of = {r["rec_id"]: r["variant"] for r in lists}
    out = {}
    for variant in ("control", "discovery"):
        mine = [r for r in lists if r["variant"] == variant]
        evs = [e for e in events if variant_of.get(e.get("rec_id")) == variant]
        clicked = {e["rec_id"] for e in evs if e["kind"] in ("follow", "play", "like")}
        plays = sum(e["kind"] == "play" for e in evs)
        skips = sum(e["kind"] == "skip" for e in evs)
        ms = dict.fromkeys({r["user"] for r in mine}, 0)
        for e in evs:
            if e["kind"] == "play":
                ms[e["user"]] = ms.get(e["user"], 0) + e["ms_played"]
        minutes, ci = _mean_ci([v / 60_000 for v in ms.values()])
        followed = {e["rec_id"] for e in evs if e["kind"] == "follow"}
        out[variant] = {"follow_through": len(followed) / len(mine), "followed": len(followed), "lists": len(mine),
                        "per_user": [v / 60_000 for v in ms.values()],
"users": len({r["user"] for r in mine}), "picks_served": len(mine),
                        "click_through": round(len(clicked) / len(mine), 6), "click_through_ci":
                        _wilson(len(clicked), len(mine)), "skip_rate": round(skips / (plays + skips), 6),
                        "skip_rate_ci": _wilson(skips, plays + skips), "minutes": minutes, "minutes_ci": ci}
    return out


def test_results_are_kept_counters_read_in_one_query(store, settings, post_events):
    from ingestion.services import user_ensure_many
    from ranker.experiments.served_log import SERVED_LOG

    settings.EXPERIMENTS = SPEC
    settings.SERVED_LOG_FLUSH_SECONDS = 3600.0  # buffered: flushed by hand below
    settings.SERVED_LOG_BATCH = 100_000
    rng = random.Random(7)
    users = [f"api:ab{i}" for i in range(60)]
    user_ensure_many(user_ids=users, source="api")
    lists, events = [], []
    for round_ in range(3):
        served = [_serve(u) for u in users]
        lists += served
        batch = []
        for rec in served:
            roll = rng.random()
            if roll < 0.4:  # two plays on one list: a click counts once, both plays count
                batch += [{"user": rec["user"], "kind": "play", "track": TRACK, "rec_id": rec["rec_id"],
                           "ms_played": rng.randrange(1000, 400_000)} for _ in range(2)]
            elif roll < 0.6:
                batch.append({"user": rec["user"], "kind": "skip", "track": TRACK, "rec_id": rec["rec_id"]})
            elif roll < 0.75:
                batch.append({"user": rec["user"], "kind": "follow", "playlist": 7, "rec_id": rec["rec_id"]})
        batch.append({"user": users[0], "kind": "play", "track": TRACK, "ms_played": 5000})  # no rec_id: not A/B
        events += batch
        if round_ == 1:
            # Feedback stored before its lists were logged (the log writes in batches): it waits, then counts once.
            post_events(batch)
            SERVED_LOG.flush()
        else:
            SERVED_LOG.flush()
            post_events(batch)

    with store_commands() as commands:
        results = experiment_results(name="rerank")["variants"]
    touched = {coll for _, coll, _ in commands.seen}
    assert "served" not in touched and "events" not in touched, commands.counts()
    assert len(commands.on("experiment_stats")) == 1, commands.counts()  # one small document per variant

    expected = _expected(lists, events)
    for variant in ("control", "discovery"):
        got, want = results[variant], expected[variant]
        for key in ("users", "picks_served", "click_through", "click_through_ci", "skip_rate", "skip_rate_ci"):
            assert got[key] == want[key], (variant, key)
        assert got["listening_minutes_per_user"] == pytest.approx(want["minutes"], abs=1e-6)
        assert got["listening_minutes_ci"] == pytest.approx(want["minutes_ci"], abs=1e-5)
        assert got["playlists_served"] == want["lists"]
        assert got["follow_through"] == pytest.approx(want["follow_through"], abs=1e-6)
        assert got["follow_through_ci"] == _wilson(want["followed"], want["lists"])
    assert store["experiment_pending"].count_documents({}) == 0

    # The treatment against control: differences with their 95 % intervals, computed here from the raw values.
    got, base, mine = results["discovery"], expected["control"], expected["discovery"]
    assert "follow_through_diff" not in results["control"]
    assert got["follow_through_diff"] == pytest.approx(mine["follow_through"] - base["follow_through"], abs=1e-6)
    (l1, u1), (l2, u2) = _wilson(mine["followed"], mine["lists"]), _wilson(base["followed"], base["lists"])
    p1, p2 = mine["follow_through"], base["follow_through"]
    low, high = got["follow_through_diff_ci"]
    assert low == pytest.approx(p1 - p2 - math.hypot(p1 - l1, u2 - p2), abs=2e-6)
    assert high == pytest.approx(p1 - p2 + math.hypot(u1 - p1, p2 - l2), abs=2e-6)
    a, b = mine["per_user"], base["per_user"]
    diff = statistics.fmean(a) - statistics.fmean(b)
    half = 1.96 * math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    assert got["listening_minutes_diff"] == pytest.approx(diff, abs=1e-6)
    assert got["listening_minutes_diff_ci"] == pytest.approx([diff - half, diff + half], abs=1e-5)


def test_a_results_request_reads_the_same_whatever_the_history(store, settings, post_events):
    """Reading the results sends the same commands for 20 lists as for 400: nothing grows with the history."""
    from ingestion.services import user_ensure_many

    settings.EXPERIMENTS = SPEC
    settings.SERVED_LOG_FLUSH_SECONDS = 0  # inline
    user_ensure_many(user_ids=[f"api:h{i}" for i in range(400)], source="api")
    shapes = []
    for n in (20, 400):
        recs = [_serve(f"api:h{i}") for i in range(n)]
        post_events([{"user": r["user"], "kind": "play", "track": TRACK, "rec_id": r["rec_id"], "ms_played": 60_000}
                   for r in recs])
        with store_commands() as commands:
            experiment_results(name="rerank")
        shapes.append(sorted(commands.counts().items()))
    assert shapes[0] == shapes[1]
