"""The degradation watch on a real store: pick lists served through the served log, follows posted as
``POST /api/v1/events`` stores them, model versions with score histograms; each crossing is recorded once, recovery
too, the gauges at /metrics follow the stored state, and a retrain starts when ``WATCH_RETRAIN`` is on."""

from __future__ import annotations

import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.processes import celery_worker, stop, wait_until


@pytest.fixture
def watch(store, settings):
    settings.SERVED_LOG_FLUSH_SECONDS = 0  # each served list written inline
    settings.WATCH_MIN_SERVED = 10
    settings.WATCH_FOLLOW_THROUGH_MIN = 0.3
    settings.WATCH_WINDOW_HOURS = 1.0
    settings.WATCH_DRIFT_KL_MAX = 100.0  # no drift unless a test asks for it
    settings.WATCH_RETRAIN = False
    return store


def _serve(n: int, kind: str = "playlists") -> list[str]:
    from ranker.experiments.assign import served_record

    rec_ids = [uuid.uuid4().hex for _ in range(n)]
    for i, rec_id in enumerate(rec_ids):
        served_record(rec_id=rec_id, user=f"listener{i}", kind=kind, experiment=None, variant="control",
                      model_version=None, source="model", items=[1, 2, 3])
    return rec_ids


def _follow(rec_ids: list[str], *, kind: str = "follow") -> None:
    from ingestion.feedback.services import event_record_many

    event_record_many(events=[{"user": f"listener{i}", "kind": kind, "playlist": 7, "rec_id": r}
                              for i, r in enumerate(rec_ids)])


def _scrape(client, settings) -> dict[str, float]:
    """The watch's gauges as /metrics exports them, by (name, signal)."""
    settings.METRICS_PUBLIC = True
    body = client.get("/metrics").content.decode()
    return {(m[1], m[2]): float(m[3]) for m in
            re.finditer(r'^(buddies_degraded|buddies_watch_value|buddies_watch_threshold)\{signal="(\w+)"\} (\S+)$',
                        body, re.M)}


def test_a_follow_through_crossing_is_recorded_once_and_its_recovery_too(watch, client, settings):
    from ranker.watch.selectors import watch_alerts_list, watch_alerts_open, watch_states
    from ranker.watch.services import watch_check
    from recsys_site.metrics import WATCH_DEGRADED

    served = _serve(20)
    _follow(served[:8])
    _follow(served[:3])  # a second follow of the same list counts the list once
    _follow(_serve(5, kind="tracks"))  # follows of track lists and of no list are not playlist follow-through
    _follow([None])
    first = watch_check()["follow_through"]
    assert first["status"] == "ok" and first["crossed"] is None
    assert first["value"] == pytest.approx(8 / 20)
    assert watch_alerts_list() == [] and watch_states()["follow_through"]["degraded"] is False

    served += _serve(30)  # none of these is followed: 8 of 50
    went_bad = watch_check()["follow_through"]
    assert went_bad["status"] == "degraded" and went_bad["crossed"] == "degraded"
    [alert] = watch_alerts_open()
    assert alert["_id"] == went_bad["alert"] and alert["signal"] == "follow_through" and alert["kind"] == "degraded"
    assert alert["value"] == pytest.approx(8 / len(served)) and alert["threshold"] == settings.WATCH_FOLLOW_THROUGH_MIN
    assert (alert["served"], alert["followed"]) == (len(served), 8) and alert["window_hours"] == 1.0
    assert alert["model_version"] is None and alert["retrain"] is None  # nothing live; WATCH_RETRAIN off
    assert abs(alert["at"].replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    WATCH_DEGRADED.labels("follow_through").set(0)  # what the scrape shows comes from the stored state
    gauges = _scrape(client, settings)
    assert gauges[("buddies_degraded", "follow_through")] == 1.0
    assert gauges[("buddies_watch_value", "follow_through")] == pytest.approx(8 / len(served))
    assert gauges[("buddies_watch_threshold", "follow_through")] == settings.WATCH_FOLLOW_THROUGH_MIN
    assert gauges[("buddies_degraded", "drift")] == 0.0

    still_bad = watch_check()["follow_through"]  # checks while it stays bad record nothing more
    assert still_bad["status"] == "degraded" and still_bad["crossed"] is None and len(watch_alerts_list()) == 1

    _follow(served[8:28])  # 28 of 50 followed
    back = watch_check()["follow_through"]
    assert back["crossed"] == "recovered" and back["value"] == pytest.approx(28 / len(served))
    recovered, opened = watch_alerts_list()
    assert recovered["kind"] == "recovered" and recovered["open"] is False and recovered["opened_by"] == alert["_id"]
    assert recovered["degraded_since"] == opened["at"] and recovered["followed"] == 28
    assert opened["_id"] == alert["_id"] and opened["open"] is False and opened["closed_by"] == recovered["_id"]
    assert watch_alerts_open() == []
    assert _scrape(client, settings)[("buddies_degraded", "follow_through")] == 0.0
    watch_check()
    assert len(watch_alerts_list()) == 2


def test_too_few_lists_served_leaves_the_state_as_it_was(watch, settings):
    from ranker.watch.selectors import watch_alerts_list, watch_states
    from ranker.watch.services import watch_check

    _serve(settings.WATCH_MIN_SERVED - 1)  # none followed, but too few to judge
    result = watch_check()["follow_through"]
    assert result["status"] == "unknown" and result["crossed"] is None and result["value"] == 0.0
    assert watch_states()["follow_through"]["degraded"] is False and watch_alerts_list() == []


def test_checks_racing_record_a_crossing_once(watch):
    from ranker.watch.selectors import watch_alerts_list
    from ranker.watch.services import watch_check

    _serve(20)
    results, barrier = [], threading.Barrier(4)

    def check():
        barrier.wait()
        results.append(watch_check()["follow_through"])

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["crossed"] or "" for r in results) == ["", "", "", "degraded"]
    assert [a["kind"] for a in watch_alerts_list()] == ["degraded"]


def _model_with_histogram(db, counts: list[int], created_at: datetime) -> str:
    from ranker.training.artifacts import KIND

    version = f"v{uuid.uuid4().hex[:8]}"
    edges = list(np.linspace(0.0, 1.0, len(counts) + 1))
    db["models"].insert_one({"_id": version, "kind": KIND, "status": "candidate", "created_at": created_at,
                             "score_histogram": {"edges": edges, "counts": counts, "users": 10, "k": 50}})
    return version


def test_a_drift_crossing_names_both_versions_and_recovers(watch, settings):
    from ranker.watch.selectors import watch_alerts_list, watch_alerts_open
    from ranker.watch.services import watch_check

    now = datetime.now(UTC)
    old_counts, new_counts = [50, 30, 10, 5, 5], [5, 5, 10, 30, 50]
    old = _model_with_histogram(watch, old_counts, now - timedelta(hours=2))
    assert watch_check()["drift"]["status"] == "unknown"  # one version: no drift to measure
    new = _model_with_histogram(watch, new_counts, now - timedelta(hours=1))
    p = (np.asarray(new_counts, float) + 1) / (np.asarray(new_counts, float) + 1).sum()
    q = (np.asarray(old_counts, float) + 1) / (np.asarray(old_counts, float) + 1).sum()
    kl = float(np.sum(p * np.log(p / q)))
    settings.WATCH_DRIFT_KL_MAX = kl / 2
    result = watch_check()["drift"]
    assert result["crossed"] == "degraded" and result["value"] == pytest.approx(kl)
    [alert] = watch_alerts_open()
    assert (alert["signal"], alert["model_version"], alert["old_version"]) == ("drift", new, old)
    assert alert["threshold"] == kl / 2 and alert["value"] == pytest.approx(kl)
    _model_with_histogram(watch, new_counts, now)  # a newer version scoring as the last one: KL 0
    assert watch_check()["drift"]["crossed"] == "recovered"
    assert [a["kind"] for a in watch_alerts_list(signal="drift")] == ["recovered", "degraded"]
    assert watch_alerts_open() == []


def test_a_signal_gone_bad_starts_a_retrain_when_asked(watch, settings):
    from ranker.watch.selectors import watch_alerts_open
    from ranker.watch.services import watch_check
    from recsys_site.jobs import REGISTRY, run_cancel, run_get

    settings.WATCH_RETRAIN = True
    _serve(20)
    assert watch_check()["follow_through"]["crossed"] == "degraded"
    [alert] = watch_alerts_open()
    expected = "train_playlist_ranker" if "train_playlist_ranker" in REGISTRY else "train_ranker"
    retrain = alert["retrain"]
    assert retrain["job"] == expected and retrain["started"] is True
    run = run_get(run_id=retrain["run_id"])
    assert run["job"] == expected and run["trigger"] == "watch:follow_through" and run["status"] == "queued"
    run_cancel(run_id=run["_id"])


def test_beat_sends_the_check_that_a_real_worker_runs(watch, settings, model_dir, monkeypatch):
    """The beat entry names the task at WATCH_INTERVAL_SECONDS; sent by name as beat sends it, a real worker runs the
    check on the store, with the thresholds of its own environment."""
    from celery_app import app
    from ranker.watch.selectors import watch_alerts_open, watch_states

    entry = app.conf.beat_schedule["degradation_watch"]
    assert entry["task"] == "ranker.watch_check" and entry["schedule"] == settings.WATCH_INTERVAL_SECONDS
    served = _serve(20)
    _follow(served[:4])
    monkeypatch.setenv("WATCH_MIN_SERVED", "10")
    monkeypatch.setenv("WATCH_FOLLOW_THROUGH_MIN", "0.25")
    worker = celery_worker(settings, model_dir, "watch")
    try:
        app.send_task(entry["task"], ignore_result=True)
        state = wait_until(lambda: watch_states().get("follow_through"), 120, "the worker's check")
    finally:
        stop(worker)
    assert (state["served"], state["followed"], state["threshold"]) == (20, 4, 0.25)
    assert state["degraded"] is True and state["value"] == pytest.approx(4 / 20)
    [alert] = watch_alerts_open()
    assert alert["_id"] == state["alert"] and alert["value"] == pytest.approx(4 / 20)
