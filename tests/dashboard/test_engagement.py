"""The Engagement page against a real store: pick lists served through ``ranker.picks``, feedback with their rec_ids
stored and composed as ``POST /api/v1/events`` does (``event_record_many``, ``picks_after_feedback``), and a second
model version for the score drift. Every figure is checked against numbers computed here from what was posted or
recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from tests.conftest import FAST
from tests.dashboard.layout import find, rows_of, text_of

pytestmark = pytest.mark.django_db

SPEC = {"rerank": {"applies_to": ["playlists"], "variants": {
    "control": {"weight": 0.5}, "discovery": {"weight": 0.5, "playlist_weights": {"discovery": 5.0}}}}}
USERS = 12
TRACK_OF_DEMO = "spotify:track:" + "C" * 22  # events need a well-formed URI, not a known track


def _organic_ms(n: int) -> int:
    return 60_000 + 1_000 * n


@pytest.fixture(scope="module")
def world(live, django_db_setup, django_db_blocker):
    """Twelve users served playlist and track picks, with feedback on them and elsewhere; then a newer version."""
    from django.conf import settings

    from ingestion.feedback.services import event_record_many
    from ranker.picks.precompute import picks_after_feedback
    from ranker.picks.serve import serve_playlist_picks, serve_track_picks
    from ranker.training.services import ranker_train

    previous = settings.EXPERIMENTS
    settings.EXPERIMENTS = SPEC
    users = [str(u) for u in live.user_ids[:USERS]]
    with django_db_blocker.unblock():  # experiments may also be defined in the admin (Django's database)
        lists = {u: serve_playlist_picks(user=u, k=3) for u in users}
        tracks = {u: serve_track_picks(user=u, k=5) for u in users}
    events: list[dict[str, Any]] = []
    for n, user in enumerate(users):
        picks, track_picks = lists[user], tracks[user]
        track = track_picks["tracks"][0]["uri"]
        if n % 2 == 1:  # a play of a track of an organic playlist pick
            events.append({"user": user, "kind": "play", "track": track, "ms_played": _organic_ms(n),
                           "rec_id": picks["rec_id"]})
        if n % 3 == 0:
            events.append({"user": user, "kind": "follow", "playlist": picks["playlists"][0]["pid"],
                           "rec_id": picks["rec_id"]})
        if n % 4 == 0:
            events.append({"user": user, "kind": "skip", "track": track, "rec_id": picks["rec_id"]})
        events.append({"user": user, "kind": "play", "track": track, "ms_played": 45_000,
                       "rec_id": track_picks["rec_id"]})
        events.append({"user": user, "kind": "play", "track": track, "ms_played": 20_000})  # no rec_id: elsewhere
        events.append({"user": user, "kind": "skip", "track": track})
    stored = event_record_many(events=events).docs  # what POST /api/v1/events does, but the refreshes
    picks_after_feedback(users=[e["user"] for e in stored], events=stored, refresh=False)
    newer = ranker_train(params=FAST, random_state=1)
    yield {"users": users, "lists": lists, "tracks": tracks, "events": events, "newer": newer.version,
           "old": live.version}
    settings.EXPERIMENTS = previous


@pytest.fixture
def experiments_spec(settings, world):
    settings.EXPERIMENTS = SPEC


def test_listening_on_organic_picks_against_the_rest(world, experiments_spec):
    from dashboard.pages.engagement import layout

    plays = [e for e in world["events"] if e["kind"] == "play"]
    playlist_recs = {b["rec_id"] for b in world["lists"].values()}
    track_recs = {b["rec_id"] for b in world["tracks"].values()}
    organic = [e["ms_played"] for e in plays if e.get("rec_id") in playlist_recs]
    picks = [e["ms_played"] for e in plays if e.get("rec_id") in track_recs]
    other = [e["ms_played"] for e in plays if not e.get("rec_id")]
    assert organic and picks and other
    page = layout()
    rows = {r["group"]: r for r in rows_of(find(page, "engagement-listening-table"))}
    assert rows["organic playlist picks"]["plays"] == str(len(organic))
    assert float(rows["organic playlist picks"]["minutes"]) == pytest.approx(sum(organic) / 60_000, abs=1e-3)
    assert float(rows["track picks"]["minutes"]) == pytest.approx(sum(picks) / 60_000, abs=1e-3)
    assert float(rows["other playlists"]["minutes"]) == pytest.approx(sum(other) / 60_000, abs=1e-3)
    assert float(rows["other playlists"]["minutes_per_play"]) == pytest.approx(20_000 / 60_000, abs=1e-3)
    bars = find(page, "engagement-listening").figure.data[0]
    assert list(bars.y) == pytest.approx([sum(organic) / 60_000, sum(picks) / 60_000, sum(other) / 60_000],
                                         abs=1e-3)
    share = sum(organic) / sum(e["ms_played"] for e in plays)
    assert f"{share:,.4f}" in text_of(page)  # the organic share stat card


def test_skip_and_follow_rates_per_day(world, experiments_spec):
    from dashboard.components import MAIN_CHART
    from dashboard.pages.engagement import layout

    today = f"{datetime.now(UTC):%Y-%m-%d}"
    kinds = [e["kind"] for e in world["events"]]
    followed = {e["rec_id"] for e in world["events"] if e["kind"] == "follow"}
    chart = find(layout(), "engagement-rates")
    assert chart.className == MAIN_CHART
    skip, follow = chart.figure.data
    assert skip.name == "skip rate" and list(skip.x) == [today]
    assert skip.y[0] == pytest.approx(kinds.count("skip") / (kinds.count("skip") + kinds.count("play")))
    # Four of the twelve playlist pick lists served today got a follow.
    assert follow.name == "follow rate" and list(follow.x) == [today]
    assert follow.y[0] == pytest.approx(len(followed) / USERS) and len(followed) == 4


def test_summary_is_cached_not_recomputed_per_view(world, experiments_spec):
    from dashboard.pages.engagement import engagement_summary
    from ingestion.feedback.services import event_record_many

    before = engagement_summary()
    user = world["users"][0]
    event_record_many(events=[{"user": user, "kind": "skip", "track": world["tracks"][user]["tracks"][0]["uri"]}])
    assert engagement_summary() is before  # within the minute: the same summary, no new scan
    engagement_summary.cache_clear()
    assert engagement_summary()["totals"]["skip"] == before["totals"]["skip"] + 1


def test_ab_results_per_variant_with_intervals(world, experiments_spec):
    from dashboard.pages.engagement import ab_update, layout

    page = layout()
    dropdown = find(page, "engagement-experiment")
    assert [o["value"] for o in dropdown.options] == ["rerank"] and dropdown.value == "rerank"
    figure, data = ab_update("rerank")
    grid = find(page, "engagement-ab-table")
    assert data == grid.rowData
    rows = {r["variant"]: r for r in rows_of(grid)}
    # Click-through per variant computed here: a list counts when it got a play or a follow.
    clicked = {e["rec_id"] for e in world["events"] if e["kind"] in ("play", "follow") and e.get("rec_id")}
    bars = figure.data[0]
    for variant in ("control", "discovery"):
        mine = [b for b in world["lists"].values() if b["variant"] == variant]
        assert rows[variant]["picks_served"] == str(len(mine))
        expected = sum(b["rec_id"] in clicked for b in mine) / len(mine)
        index = list(bars.x).index(variant)
        assert bars.y[index] == pytest.approx(expected, abs=1e-6)
        low, high = (float(x) for x in rows[variant]["click_through_ci"].split(", "))
        assert bars.y[index] + bars.error_y.array[index] == pytest.approx(high, abs=1e-4)
        assert bars.y[index] - bars.error_y.arrayminus[index] == pytest.approx(low, abs=1e-4)
        assert low <= expected <= high


def test_unknown_or_unserved_experiment_says_so(world, settings):
    from dashboard.pages.engagement import ab_view

    settings.EXPERIMENTS = {**SPEC, "fresh": {"variants": {"a": {"weight": 1}, "b": {"weight": 1}}}}
    figure, rows = ab_view("fresh")
    assert "No pick lists served in experiment fresh yet" in figure.layout.annotations[0].text
    assert {r["variant"] for r in rows} == {"a", "b"} and all(r["picks_served"] == 0 for r in rows)
    assert "No experiment gone is configured" in ab_view("gone")[0].layout.annotations[0].text


def test_score_drift_is_kl_of_the_two_newest_histograms(world, experiments_spec):
    from dashboard.pages.engagement import drift_view, layout
    from recsys_site.mongo import get_db

    docs = {d["_id"]: d["score_histogram"] for d in get_db()["models"].find({}, {"score_histogram": 1})}
    new, old = np.asarray(docs[world["newer"]]["counts"], float), np.asarray(docs[world["old"]]["counts"], float)
    assert new.sum() > 0 and old.sum() > 0 and len(new) == len(old) == 20
    # Each sampled user's 50 served scores are counted: at most users × k.
    assert 0 < new.sum() <= docs[world["newer"]]["users"] * docs[world["newer"]]["k"]
    p, q = (new + 1) / (new + 1).sum(), (old + 1) / (old + 1).sum()
    expected = float(np.sum(p * np.log(p / q)))
    figure, text, kl = drift_view()
    assert kl == pytest.approx(expected, rel=1e-9) and kl > 0
    assert f"{expected:.6f}" in text and world["newer"] in text and world["old"] in text
    old_bars, new_bars = figure.data
    assert world["newer"] in new_bars.name and world["old"] in old_bars.name
    assert list(new_bars.y) == pytest.approx(list(new / new.sum()))
    assert list(old_bars.y) == pytest.approx(list(old / old.sum()))
    assert text_of(find(layout(), "engagement-drift-kl")) == text


def test_empty_store_says_there_is_nothing_yet(store, settings):
    from dashboard.pages.engagement import drift_view, layout

    settings.EXPERIMENTS = SPEC
    page = layout()
    assert "No feedback events yet" in text_of(find(page, "engagement-empty"))
    assert "No feedback events yet" in find(page, "engagement-rates").figure.layout.annotations[0].text
    assert "No plays recorded yet" in find(page, "engagement-listening").figure.layout.annotations[0].text
    assert "No pick lists served in experiment rerank yet" in \
        find(page, "engagement-ab").figure.layout.annotations[0].text
    figure, text, kl = drift_view()
    assert kl is None and "needs two model versions" in text and "0 so far" in text
    settings.EXPERIMENTS = {}
    assert "No A/B experiment is configured" in find(layout(), "engagement-ab").figure.layout.annotations[0].text


def test_per_variant_daily_curves_from_dated_picks_and_events(world, experiments_spec, settings):
    """Issue 16: lists served through the API on two past days (``?ts=``), answered by dated events (``ts``) from a
    simulated app's token and a real one's; the curves per variant and day are computed here from what was sent."""
    import redis

    from dashboard.pages.engagement import layout, variant_days, variant_days_update
    from ranker.experiments.served_log import SERVED_LOG
    from tests.conftest import app_client

    settings.SIMULATED_CREDENTIALS = ["app:simulator"]
    clients = {True: app_client("picks:read", "events:write", app="simulator"),
               False: app_client("picks:read", "events:write", app="player")}
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queued = broker.llen("refresh")
    bad = clients[True].get(f"/api/v1/users/{world['users'][0]}/playlists/recommended", {"k": 3, "ts": "soon"})
    assert bad.status_code == 400 and "ts" in bad.json()["fields"]
    now = datetime.now(UTC)
    sent = []  # (simulated, variant, day, user, followed, [play ms], skips)
    for back in (3, 2):
        at = now - timedelta(days=back)
        for n, user in enumerate(world["users"]):
            simulated = n % 3 != 0
            shown = clients[simulated].get(f"/api/v1/users/{user}/playlists/recommended",
                                           {"k": 3, "ts": at.isoformat()})
            assert shown.status_code == 200, shown.content
            picks = shown.json()
            SERVED_LOG.flush()
            plays = [(n + 1) * 7_000 + back] * (1 + (n + back) % 2)
            skips = (n + back) % 3
            follow = (n + back) % 4 == 0
            events = [{"user": user, "kind": "play", "track": TRACK_OF_DEMO, "ms_played": ms} for ms in plays]
            events += [{"user": user, "kind": "skip", "track": TRACK_OF_DEMO}] * skips
            if follow:
                events.append({"user": user, "kind": "follow", "playlist": picks["playlists"][0]["pid"]})
            for e in events:
                e |= {"rec_id": picks["rec_id"], "ts": (at + timedelta(minutes=5)).isoformat()}
            assert clients[simulated].post("/api/v1/events", events, format="json").status_code == 201
            sent.append((simulated, picks["variant"], f"{at:%Y-%m-%d}", user, follow, plays, skips))
    if (extra := broker.llen("refresh") - queued) > 0:  # the refreshes the events queued: no worker here
        broker.lpop("refresh", extra)
    days = sorted({s[2] for s in sent})

    def expected(keep) -> dict:
        out = {}
        for variant in ("control", "discovery"):
            for day in days:
                mine = [s for s in sent if keep(s[0]) and s[1] == variant and s[2] == day]
                if not mine:
                    continue
                plays, skips = sum(len(s[5]) for s in mine), sum(s[6] for s in mine)
                users = len({s[3] for s in mine})
                out[(variant, day)] = {"follow_through": sum(s[4] for s in mine) / len(mine),
                                       "minutes_per_user": sum(sum(s[5]) for s in mine) / 60_000 / users,
                                       "skip_rate": skips / (plays + skips)}
        return out

    def drawn(figure) -> dict:
        out: dict = {}
        for trace in figure.data:
            metric = {"y": "follow_through", "y2": "minutes_per_user", "y3": "skip_rate"}[trace.yaxis]
            for x, y in zip(trace.x, trace.y, strict=True):
                if x in days:
                    out.setdefault((trace.name, x), {})[metric] = y
        return out

    variant_days.cache_clear()
    page_figure = find(layout(experiment="rerank"), "engagement-variant-days").figure
    for traffic, keep in (("all", lambda s: True), ("real", lambda s: not s), ("simulated", lambda s: s)):
        want = expected(keep)
        assert len(want) >= 3, traffic
        got = drawn(variant_days_update("rerank", traffic))
        assert set(got) == set(want), traffic
        for key, figures in want.items():
            for metric, value in figures.items():
                assert got[key][metric] == pytest.approx(value), (traffic, key, metric)
        if traffic == "all":
            assert drawn(page_figure) == got  # the page draws the same on load
    assert {t.name for t in page_figure.data} == {"control", "discovery"}
