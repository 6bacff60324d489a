"""The ``train_playlist_ranker`` job: its own beat schedule, and a run through a real Celery worker whose new
playlist ranker version then serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import celery_worker, stop, wait_until
from tests.ranker.test_playlist_ranker import _clear_feedback, _pids_where, _serve_and_follow

ROOT = Path(__file__).resolve().parents[2]


def _beat(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.test", **env_extra}
    code = ("import django; django.setup(); from celery_app import app; s = app.conf.beat_schedule;"
            "t = s['train_playlist_ranker']; c = t['schedule'];"
            "print(t['task'], t['args'], sorted(c.minute), sorted(c.hour), len(c.day_of_week), 'weekly_refresh' in s)")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_beat_holds_the_daily_playlist_ranker_beside_the_weekly_refresh():
    default = _beat({})
    assert default.stdout.split() == ["recsys_site.start_job", "['train_playlist_ranker']", "[30]", "[3]", "7",
                                      "True"], default.stderr
    custom = _beat({"PLAYLIST_RANKER_CRONTAB": "0 */6 * * *"})
    assert custom.stdout.split() == ["recsys_site.start_job", "['train_playlist_ranker']", "[0]", "[0,", "6,",
                                     "12,", "18]", "7", "True"], custom.stderr
    bad = _beat({"PLAYLIST_RANKER_CRONTAB": "daily"})
    assert bad.returncode != 0 and "PLAYLIST_RANKER_CRONTAB='daily': expected 5 fields" in bad.stderr


@pytest.mark.slow
@pytest.mark.django_db
def test_the_job_trains_on_a_real_worker_and_its_version_serves(live, model_dir, settings):
    """Not enough feedback first: the run succeeds saying so, and nothing serves. Then, with feedback, a run through
    a real worker (on the gpu queue) makes a version live whose figures and weights are in the run's result, and
    playlist picks of the learned variant are ranked by it; the stored playlist picks are re-ranked by it too (their
    track picks untouched), so a user's page is served precomputed."""
    from ranker import collections as c
    from ranker.picks.precompute import picks_precompute
    from ranker.picks.serve import recommend_playlists, serve_playlist_picks
    from ranker.playlist_ranking.selectors import (
        playlist_ranker_get,
        playlist_ranker_live,
        playlist_ranker_live_clear,
        playlist_ranker_live_version,
    )
    from recsys_site.jobs import job_start, run_get
    from recsys_site.mongo import get_db

    settings.EXPERIMENTS = {}
    settings.SERVED_LOG_FLUSH_SECONDS = 0
    settings.PICKS_CACHE_URL = ""
    _clear_feedback()
    before = playlist_ranker_live_version()
    worker = celery_worker(settings, model_dir, "playlist-ranker")

    def finished(run_id):
        current = run_get(run_id=run_id)
        return current if current["status"] in ("succeeded", "failed", "cancelled") else None

    try:
        empty = job_start(name="train_playlist_ranker", params={"ranker": {"epochs": 3}}, trigger="test")
        assert empty["steps"][0]["queue"] == "gpu"
        final = wait_until(lambda: finished(empty["_id"]), 240, "the run without feedback to finish")
        assert final["status"] == "succeeded", final.get("traceback")
        result = final["metrics"]["train_playlist_ranker"]
        assert result["trained"] is False and "not enough feedback: 0 follows" in result["reason"]
        assert playlist_ranker_live_version() == before
        assert final["steps"][1]["name"] == "playlist_picks" and final["metrics"]["playlist_picks"]["reranked"] == 0

        follows = _serve_and_follow([str(u) for u in live.user_ids[:300]], _pids_where(lambda p: p["pid"] % 3 == 0))
        assert follows >= settings.PLAYLIST_RANKER_MIN_FOLLOWS
        picks_precompute(model=live)  # ranked by the ranker live before this run (or by hand: none yet)
        stored_before = {d["_id"]: d for d in get_db()[c.PICKS].find({}, {"tracks": 1, "playlists_ranker": 1})}
        run = job_start(name="train_playlist_ranker", params={"ranker": {"epochs": 5}}, trigger="beat")
        final = wait_until(lambda: finished(run["_id"]), 300, "the run to finish")
    finally:
        stop(worker)
    assert final["status"] == "succeeded", final.get("traceback")
    assert final["worker"] and final["steps"][0]["status"] == "succeeded"
    result = final["metrics"]["train_playlist_ranker"]
    assert result["trained"] and result["follows"] == follows and result["device"] == "cpu"
    assert {"learned", "hand", "playlist_bpr"} <= set(result["evaluation"]) and result["evaluation"]["pairs"] > 0
    version = result["version"]
    assert final["playlist_ranker_version"] == version != before
    assert playlist_ranker_live_version() == version and playlist_ranker_get(version=version)["weights"] == \
        result["weights"]
    playlist_ranker_live_clear()
    assert playlist_ranker_live().version == version
    picks = recommend_playlists(user=str(live.user_ids[-1]), k=10, changes={"playlist_ranker": "learned"})
    assert picks.ranker == f"learned:{version}" and all("playlist_bpr" in p["why"] for p in picks.playlists)

    # The stored picks: every one re-ranked by the new version, its track half as it was.
    assert {d["playlists_ranker"] for d in stored_before.values()} == {f"learned:{before}" if before else "hand"}
    stored = {d["_id"]: d for d in get_db()[c.PICKS].find({}, {"tracks": 1, "playlists_ranker": 1})}
    assert stored.keys() == stored_before.keys() and len(stored) == len(live.user_ids)
    assert {d["playlists_ranker"] for d in stored.values()} == {f"learned:{version}"}
    followers = {str(u) for u in live.user_ids[:300]}  # their follows' refreshes recompute whole documents
    assert all(stored[u]["tracks"] == d["tracks"] for u, d in stored_before.items() if u not in followers)
    assert final["metrics"]["playlist_picks"]["reranked"] == len(stored)
    assert final["steps"][1]["shards"] >= 1 and final["steps"][1]["status"] == "succeeded"
    user = str(live.user_ids[-1])
    served = serve_playlist_picks(user=user, k=5, record=False)
    assert served["source"] == "precomputed", served
