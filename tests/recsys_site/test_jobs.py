"""Job runs with real parts: the beat schedule, run documents, single-flight locks, a real Celery worker process
on the real Redis and MongoDB servers, and a worker SIGKILLed mid-training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import FAST, WORSE
from tests.processes import celery_worker, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"ranker": FAST}


def _settings_in_subprocess(env_extra: dict[str, str], code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.test", **env_extra}
    return subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_beat_holds_weekly_refresh_at_the_configured_crontab():
    code = ("from celery_app import app; s = app.conf.beat_schedule['weekly_refresh']; c = s['schedule'];"
            "print(s['task'], s['args'], sorted(c.minute), sorted(c.hour), sorted(c.day_of_week))")
    default = _settings_in_subprocess({}, code)
    assert default.stdout.split() == ["recsys_site.start_job", "['weekly_refresh']", "[0]", "[3]", "[1]"], default
    custom = _settings_in_subprocess({"REFRESH_CRONTAB": "15 4 * * 2,5"}, code)
    assert custom.stdout.split() == ["recsys_site.start_job", "['weekly_refresh']", "[15]", "[4]", "[2,", "5]"]


def test_a_bad_crontab_is_a_clear_error():
    bad = _settings_in_subprocess({"REFRESH_CRONTAB": "every monday"}, "pass")
    assert bad.returncode != 0 and "REFRESH_CRONTAB='every monday': expected 5 fields" in bad.stderr


def test_weekly_refresh_in_process_records_every_step(demo_store, model_dir, db):
    from ingestion.selectors import playlist_most_followed
    from ranker.picks.selectors import picks_for_user
    from ranker.training.selectors import live_version
    from recsys_site.jobs import job_start

    run = job_start(name="weekly_refresh", params=PARAMS, sync=True, trigger="test")
    assert run["status"] == "succeeded", run.get("traceback")
    assert run["progress"] == 100.0 and run["duration_s"] > 0
    assert [s["name"] for s in run["steps"]] == ["train", "evaluate", "promote", "buddies", "picks", "metrics",
                                                 "cleanup"]
    assert all(s["status"] == "succeeded" and s["duration_s"] >= 0 for s in run["steps"])
    assert run["model_version"] == live_version() == run["metrics"]["promote"]["live"]
    assert run["metrics"]["train"]["val_hit_rate_50"] is not None and run["device"] == "cpu"
    assert run["metrics"]["picks"]["users"] == run["metrics"]["metrics"]["picks_users"] > 0
    assert any("step train started" in line for line in run["log"])
    owner = playlist_most_followed(limit=1)[0]["owner"]
    picks = picks_for_user(user=owner)
    assert picks["model_version"] == run["model_version"]
    assert len(picks["tracks"]) == 50 and len(picks["playlists"]) == 10


@pytest.mark.slow
def test_every_version_the_refresh_trains_is_evaluated_beside_the_live_recipe(demo_store, model_dir, db):
    """The evaluate step files the new version's RecSys 2018 report, the live recipe's scored on the same cases,
    and the comparison, under the new version; and leaves the verdict on its registry document."""
    from ranker.evaluation.selectors import evaluation_for_version
    from ranker.training.selectors import live_version, model_get
    from recsys_site.jobs import job_start

    first = job_start(name="weekly_refresh", params={**PARAMS, "force": True}, sync=True, trigger="test")
    assert first["status"] == "succeeded", first.get("traceback")
    run = job_start(name="weekly_refresh", params={**PARAMS, "force": True}, sync=True, trigger="test")
    assert run["status"] == "succeeded", run.get("traceback")
    version, live = run["model_version"], first["model_version"]
    evaluated = run["metrics"]["evaluate"]
    assert evaluated["evaluated"] and evaluated["version"] == version and evaluated["against"] == live
    report = evaluation_for_version(version=version)
    assert report["kind"] == "version" and report["live_version"] == live
    assert set(report["methods"]) == {"live", report["served"]}
    for metric in ("r_precision", "ndcg"):
        d = report["comparison"][metric]
        assert d["cases"] == report["split"]["test_size"] == evaluated["cases"] > 0
        assert d["b"] == pytest.approx(report["methods"][report["served"]]["overall"][metric])
        assert d["a"] == pytest.approx(report["methods"]["live"]["overall"][metric])
    assert model_get(version=version)["evaluation"]["comparison"] == report["comparison"]
    assert any(f"evaluated {version} on {evaluated['cases']} test playlists" in line for line in run["log"])
    assert live_version() == version


@pytest.mark.slow
def test_a_recipe_evaluated_worse_than_the_live_one_is_refused_unless_forced(demo_store, model_dir, settings, db):
    from ranker.training.selectors import live_version, model_get
    from recsys_site.jobs import job_start

    settings.RANKER_PROMOTION_TOLERANCE = 1.0  # the validation hit rate lets anything through: the evaluation decides
    live = job_start(name="train_ranker", params={**PARAMS, "force": True}, sync=True, trigger="test")
    assert live_version() == live["model_version"]
    run = job_start(name="train_ranker", params={"ranker": WORSE}, sync=True, trigger="test")
    assert run["status"] == "succeeded", run.get("traceback")
    refused = run["model_version"]
    evaluated = run["steps"][1]["metrics"]
    assert evaluated["against"] == live["model_version"] and "r_precision" in evaluated["worse"]
    assert "not promoted" in run["message"] and "r_precision" in run["message"] and "95 % interval" in run["message"]
    assert model_get(version=refused)["status"] == "rejected" and live_version() == live["model_version"]
    forced = job_start(name="train_ranker", params={"ranker": WORSE, "force": True}, sync=True, trigger="test")
    assert forced["metrics"]["promote"]["live"] == forced["model_version"] == live_version()
    # The usual recipe against the worse one now live: better, promoted without force.
    back = job_start(name="train_ranker", params=PARAMS, sync=True, trigger="test")
    assert "r_precision" in back["metrics"]["evaluate"]["better"]
    assert back["metrics"]["promote"]["live"] == back["model_version"] == live_version()


def test_no_evaluation_when_the_sample_is_zero(demo_store, model_dir, settings, db):
    from ranker.evaluation.selectors import evaluation_for_version
    from ranker.training.selectors import model_get
    from recsys_site.jobs import job_start

    settings.EVAL_SAMPLE_PLAYLISTS = 0
    run = job_start(name="train_ranker", params={**PARAMS, "promote": False}, sync=True, trigger="test")
    assert run["status"] == "succeeded", run.get("traceback")
    assert run["metrics"]["evaluate"] == {"evaluated": False, "reason": "EVAL_SAMPLE_PLAYLISTS=0"}
    assert evaluation_for_version(version=run["model_version"]) is None
    assert "evaluation" not in model_get(version=run["model_version"])
    assert any("not evaluated (EVAL_SAMPLE_PLAYLISTS=0)" in line for line in run["log"])


def test_weekly_refresh_removes_the_versions_nobody_needs(demo_store, model_dir, settings, db):
    """Kept: the live version, the one before it, and a version an experiment pins; an unpinned candidate goes."""
    from ranker.experiments.assign import experiments_clear
    from ranker.training.artifacts import stored_versions
    from ranker.training.selectors import live_version, model_get
    from ranker.training.services import ranker_train
    from recsys_site.jobs import job_start

    settings.MODEL_CLEANUP_MIN_AGE_HOURS = 0
    first = job_start(name="weekly_refresh", params={**PARAMS, "force": True}, sync=True, trigger="test")
    pinned, unpinned = ranker_train(params=FAST).version, ranker_train(params=FAST).version
    settings.EXPERIMENTS = {"pin": {"applies_to": ["tracks"], "variants": {"a": {}, "b": {"model_version": pinned}}}}
    experiments_clear()
    second = job_start(name="weekly_refresh", params={**PARAMS, "force": True}, sync=True, trigger="test")
    assert second["status"] == "succeeded", second.get("traceback")
    cleanup = second["metrics"]["cleanup"]
    assert unpinned in cleanup["removed"] and cleanup["pinned"] == [pinned]
    assert not {first["model_version"], second["model_version"], pinned} & set(cleanup["removed"])
    assert live_version() == second["model_version"]
    assert {first["model_version"], second["model_version"], pinned} <= stored_versions()
    assert unpinned not in stored_versions() and model_get(version=unpinned)["status"] == "deleted"
    assert not (model_dir / "ranker" / unpinned).exists()


def test_a_second_start_is_refused_with_the_running_id_until_cancelled(demo_store):
    from recsys_site.jobs import JobRefused, job_start, run_cancel, run_get

    first = job_start(name="compute_buddies", trigger="test")  # queued: no worker here consumes it
    assert first["status"] == "queued"
    with pytest.raises(JobRefused) as refused:
        job_start(name="compute_buddies", trigger="test")
    assert refused.value.run_id == first["_id"]
    with pytest.raises(CommandError, match=first["_id"]):
        call_command("run_job", "compute_buddies", "--no-wait")
    assert run_cancel(run_id=first["_id"])
    assert run_get(run_id=first["_id"])["status"] == "cancelled"
    second = job_start(name="compute_buddies", trigger="test")
    assert second["_id"] != first["_id"]
    run_cancel(run_id=second["_id"])


def test_unknown_jobs_and_parameters_are_refused(demo_store):
    from recsys_site.jobs import job_start

    with pytest.raises(KeyError, match="unknown job 'nope'"):
        job_start(name="nope")
    with pytest.raises(ValueError, match="unknown parameters"):
        job_start(name="compute_buddies", params={"epochs": 3})
    with pytest.raises(CommandError, match="unknown job"):
        call_command("run_job", "nope", "--sync")


def test_a_failing_step_fails_the_run_with_its_traceback_and_frees_the_job(demo_store, model_dir):
    from recsys_site.jobs import job_start

    run = job_start(name="train_ranker", params={"ranker": {"bpr": {"epochs": -5}}}, sync=True, trigger="test")
    assert run["status"] == "failed"
    assert run["steps"][0]["status"] == "failed" and run["steps"][1]["status"] == "pending"
    assert "Traceback" in run["traceback"] and run["error"].startswith("train:")
    assert "epochs=-5" in run["error"]
    again = job_start(name="train_ranker", params={"ranker": {"bpr": {"epochs": -5}}}, sync=True, trigger="test")
    assert again["status"] == "failed" and again["_id"] != run["_id"]


# -- a real worker ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_worker_runs_the_job_queued_then_running_then_succeeded(demo_store, model_dir, settings):
    from ranker.picks.selectors import picks_for_user
    from recsys_site.jobs import job_start, run_get

    settings.JOB_LOCK_TTL_SECONDS = 5.0
    worker = celery_worker(settings, model_dir, "jobs")
    try:
        params = {"ranker": {**FAST, "bpr": {**FAST["bpr"], "epochs": 60, "patience": 100}}}
        run = job_start(name="weekly_refresh", params=params, trigger="test")
        assert run["status"] == "queued"
        seen = set()

        def finished():
            current = run_get(run_id=run["_id"])
            seen.add((current["status"], 0 < current["progress"] < 100))
            return current if current["status"] in ("succeeded", "failed", "cancelled") else None

        final = wait_until(finished, 300, "the run to finish")
        assert final["status"] == "succeeded", final.get("traceback")
        assert ("running", True) in seen  # progress was reported between 0 and 100 while it ran
        assert final["worker"] and all(s["status"] == "succeeded" for s in final["steps"])

        # Feedback changes that user's picks within seconds, without a retrain.
        from ingestion.feedback.services import event_record_many
        from ranker.picks.precompute import picks_after_feedback

        user = "api:fresh-listener"
        assert picks_for_user(user=user) is None
        top = [t["uri"] for t in picks_for_user(user=final["steps"] and _some_user())["tracks"][:5]]
        event_record_many(events=[{"user": user, "kind": "like", "track": uri} for uri in top])
        picks_after_feedback(users=[user])  # what POST /api/v1/events does after storing them
        picks = wait_until(lambda: picks_for_user(user=user), 30, "the user's refreshed picks")
        assert picks["refreshed"] and picks["liked_tracks"] == 5 and picks["tracks_source"] == "model"
        assert not {t["uri"] for t in picks["tracks"]} & set(top)
        assert picks["playlists_source"] == "model"
    finally:
        stop(worker)


def _some_user() -> str:
    from ranker.training.selectors import live_model

    return str(live_model().user_ids[0])


@pytest.mark.slow
def test_a_worker_killed_mid_training_changes_nothing_served(demo_store, model_dir, settings, db):
    from ranker.picks.selectors import picks_for_user
    from ranker.training.selectors import live_model_clear, live_version
    from recsys_site.jobs import job_runs_reap, job_start, run_get

    settings.JOB_LOCK_TTL_SECONDS = 3.0
    first = job_start(name="weekly_refresh", params=PARAMS, sync=True, trigger="test")  # something to serve
    assert first["status"] == "succeeded"
    user = _some_user()
    before = (live_version(), json.dumps(picks_for_user(user=user), default=str))

    worker = celery_worker(settings, model_dir, "doomed")
    try:
        endless = {"ranker": {**FAST, "bpr": {**FAST["bpr"], "epochs": 100_000, "patience": 100_000}}}
        run = job_start(name="weekly_refresh", params=endless, trigger="test")
        wait_until(lambda: run_get(run_id=run["_id"])["steps"][0]["progress"] > 0, 120, "training to be under way")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        stop(worker)
    live_model_clear()
    assert (live_version(), json.dumps(picks_for_user(user=user), default=str)) == before
    assert run_get(run_id=run["_id"])["status"] == "running"  # nobody has noticed yet
    wait_until(lambda: job_runs_reap() or run_get(run_id=run["_id"])["status"] == "failed", 30, "the lock to expire")
    lost = run_get(run_id=run["_id"])
    assert lost["status"] == "failed" and "worker lost" in lost["error"]

    worker = celery_worker(settings, model_dir, "next")
    try:
        # Forced: an earlier test's longer-trained model may validate better, and this run must go live.
        again = job_start(name="weekly_refresh", params={**PARAMS, "force": True}, trigger="test")
        done = wait_until(lambda: (r := run_get(run_id=again["_id"]))["status"] in ("succeeded", "failed") and r,
                     300, "the next run")
        assert done["status"] == "succeeded", done.get("traceback")
        assert live_version() == done["model_version"] != before[0]
    finally:
        stop(worker)


def test_transient_errors_are_told_from_bad_data(demo_store):
    """The store or broker unreachable is retried by the step task; anything else fails the run at once."""
    from kombu.exceptions import OperationalError
    from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

    from recsys_site.jobs import Job, Step, is_transient, job_start, register, run_list

    assert is_transient(AutoReconnect("primary stepped down")) and is_transient(ServerSelectionTimeoutError("x"))
    assert is_transient(OperationalError("broker gone"))
    assert not is_transient(ValueError("bad playlist")) and not is_transient(KeyError("field"))

    def flaky(ctx):
        raise AutoReconnect("connection reset")

    register(Job("test_flaky", "raises a transient error", (Step("flaky", flaky),)))
    with pytest.raises(AutoReconnect):
        job_start(name="test_flaky", sync=True, trigger="test")
    run = run_list(job="test_flaky")[0]
    assert run["status"] == "failed" and "AutoReconnect" in run["error"]
    with pytest.raises(AutoReconnect):  # not JobRefused: the failed run released its lock
        job_start(name="test_flaky", sync=True, trigger="test")


def test_a_start_with_the_broker_down_fails_the_run_instead_of_leaving_it_queued(demo_store, settings):
    from recsys_site.embedded import free_port
    from recsys_site.jobs import job_start, run_cancel, run_list

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.test", "MONGO_URI": settings.MONGO_URI,
           "MONGO_DB": settings.MONGO_DB, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    started = subprocess.run([sys.executable, "manage.py", "run_job", "precompute_picks", "--no-wait"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode != 0 and "broker is unreachable" in started.stderr
    run = run_list(job="precompute_picks")[0]
    assert run["status"] == "failed" and run["error"].startswith("could not start"), run
    again = job_start(name="precompute_picks", trigger="test")  # the job is free again
    assert again["status"] == "queued"
    run_cancel(run_id=again["_id"])


@pytest.mark.slow
def test_a_refused_candidate_still_recomputes_buddies_and_picks_with_the_live_model(demo_store, model_dir, settings,
                                                                                   monkeypatch, db):
    """The weekly refresh goes on past a refused promotion: the live model keeps serving, its buddies and picks are
    recomputed, and a user created after the last refresh (unknown to the live model) has picks afterwards."""
    from ingestion.selectors import track_top
    from ingestion.services import user_create, user_playlist_create
    from pairing.selectors import buddies_state
    from ranker.picks.selectors import picks_for_user, picks_state
    from ranker.training.selectors import live_model, live_model_clear, live_version, model_get
    from recsys_site.jobs import FINISHED, job_start, run_get

    first = job_start(name="weekly_refresh", params={**PARAMS, "force": True}, sync=True, trigger="test")
    assert first["status"] == "succeeded", first.get("traceback")
    live = live_version()
    buddies_before, picks_before = buddies_state()["computed_at"], picks_state()["computed_at"]
    user = user_create(name="after-the-refresh")
    user_playlist_create(user=user, name="my mix", tracks=[t["_id"] for t in track_top(limit=15)])
    live_model_clear()
    assert user not in live_model().user_index and picks_for_user(user=user) is None

    # A tolerance below -1 asks a candidate for more than twice the live hit rate: the worker refuses it.
    monkeypatch.setenv("RANKER_PROMOTION_TOLERANCE", "-1.5")
    worker = celery_worker(settings, model_dir, "refused")
    try:
        run = job_start(name="weekly_refresh", params=PARAMS, trigger="test")
        final = wait_until(lambda: (r := run_get(run_id=run["_id"]))["status"] in FINISHED and r, 300,
                           "the refused run to finish")
    finally:
        stop(worker)
    assert final["status"] == "succeeded", final.get("traceback") or final.get("error")
    assert [s["status"] for s in final["steps"]] == ["succeeded"] * len(final["steps"])
    promote = final["metrics"]["promote"]
    assert promote["live"] == live == live_version()
    assert promote["refused"] == final["model_version"] != live
    assert "not promoted" in promote["reason"] and model_get(version=promote["refused"])["status"] == "rejected"
    assert any(f"candidate {promote['refused']} refused" in line and "keeps serving" in line for line in final["log"])
    assert buddies_state()["computed_at"] > buddies_before and buddies_state()["model_version"] == live
    state = picks_state()
    assert state["computed_at"] > picks_before and state["model_version"] == live
    assert final["metrics"]["picks"]["unknown_users_folded_in"] == 1
    picks = picks_for_user(user=user)
    assert picks is not None and picks["model_version"] == live
    assert len(picks["tracks"]) == 50 and picks["playlists"]
