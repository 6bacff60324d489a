"""The listening simulator end to end (issue 16): ``manage.py simulate_listeners`` as a real process against a real
gunicorn serving the API, with a real Celery worker refreshing picks after feedback, on a small demo store.

The simulated users are demo playlists of the same generated world that were held out of the ingest (the store
does not hold them; their tracks are in the catalogue). Checked: the follows of day 1 changed day 2's picks for
those users; the run's figures equal what the store holds; two runs with the same seed make the same decisions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from recsys_site.embedded import free_port
from tests.conftest import FAST
from tests.processes import ROOT, celery_worker, stop, web_server

HELD_OUT = 40  # playlists of the demo world left out of the ingest: the simulated users come from them
EXPERIMENT = "sim_ab"
SPEC = {EXPERIMENT: {"applies_to": ["playlists"], "variants": {
    "control": {"weight": 0.5}, "discovery": {"weight": 0.5, "playlist_weights": {"discovery": 3.0}}}}}
USERS, DAYS, SEED = 30, 2, 11


def _env(settings, model_dir, tmp: Path) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.local", "VAR_DIR": str(tmp),
            "DATABASE_URL": f"sqlite:///{tmp / 'django.sqlite3'}", "MONGO_URI": settings.MONGO_URI,
            "MONGO_DB": settings.MONGO_DB, "MODEL_DIR": str(model_dir), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PICKS_CACHE_URL": settings.PICKS_CACHE_URL, "EXPERIMENTS": json.dumps(SPEC), "LOG_LEVEL": "WARNING",
            # Another web worker's few-second local copy of a user's picks would outlive the follow that changed them.
            "PICKS_CACHE_LOCAL_SECONDS": "0", "API_PUBLIC_READS": "false"}


def _manage(env, *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def world(module_store, model_dir, tmp_path_factory):
    """A demo world of 400 + HELD_OUT playlists, all but the last slice ingested; a trained, promoted model and
    buddies (what the weekly job leaves behind)."""
    from ingestion.demo import write_demo_slices
    from ingestion.services import mpd_ingest
    from pairing.services import buddies_compute
    from ranker.training.selectors import live_model_clear
    from ranker.training.services import model_promote, ranker_train

    out = tmp_path_factory.mktemp("sim-demo")
    paths = write_demo_slices(out, playlists=400 + HELD_OUT, seed=3, slice_size=HELD_OUT)
    report = mpd_ingest(paths=[str(p) for p in paths[:-1]])  # the ingest takes a list of files
    assert report.ok and report.summary()["new"] == 400, report.summary()
    model = ranker_train(params=FAST)
    model_promote(version=model.version)
    live_model_clear()
    buddies_compute(k=10)
    yield {"users_file": paths[-1]}
    live_model_clear()


@pytest.fixture(scope="module")
def site(world, model_dir, tmp_path_factory):
    """gunicorn (2 workers) and a Celery worker on the module's store; a staff token for results and jobs."""
    from django.conf import settings

    tmp = tmp_path_factory.mktemp("sim-site")
    env = _env(settings, model_dir, tmp)
    _manage(env, "migrate", "--noinput")
    staff = _manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
                    "from rest_framework.authtoken.models import Token; "
                    "print(Token.objects.create(user=User.objects.create_user('ana', is_staff=True)).key)").split()[-1]
    port = free_port()
    web = web_server(env, port, tmp / "web.log")
    worker = celery_worker(settings, model_dir, "sim")
    base = f"http://127.0.0.1:{port}"
    try:
        yield {"url": base, "env": env, "staff": staff, "tmp": tmp, "worker": worker}
    finally:
        stop(worker)
        stop(web)


def _simulate(site, world, *, app: str, prefix: str, out: Path, extra: tuple[str, ...] = ()) -> tuple[dict, str]:
    printed = _manage(site["env"], "simulate_listeners", *extra, "--url", site["url"], "--create-token", "--app", app,
                      "--staff-token", site["staff"], "--mpd", str(world["users_file"]), "--users", str(USERS),
                      "--days", str(DAYS), "--seed", str(SEED), "--prefix", prefix, "--experiment", EXPERIMENT,
                      "--active", "0.9", "--open-playlist", "0.9", "--follow-threshold", "0.2",
                      "--out", str(out), "--trace", "--no-progress")
    return json.loads(out.read_text()), printed


@pytest.fixture(scope="module")
def first_run(site, world):
    # Between the days a job is started with the staff token and followed to its end (the buddies: the same
    # model gives the same buddies, so the second run below, which retrains nothing, is shown the same picks).
    report, printed = _simulate(site, world, app="simulator", prefix="one", out=site["tmp"] / "one.json",
                                extra=("--retrain-daily", "--retrain-job", "compute_buddies"))
    return {"report": report, "printed": printed}


def _user_days(report: dict, day: int) -> dict[int, dict]:
    return {d["pid"]: d for d in report["trace"][str(day)] if d["active"] and d["error"] is None}


def test_the_follows_of_day_one_change_day_twos_picks(first_run):
    report = first_run["report"]
    assert report["users_created"] == USERS and not report["refused"], report["refused"]
    one, two = _user_days(report, 1), _user_days(report, 2)
    followers = [pid for pid, d in one.items() if d["followed"] and pid in two]
    assert len(followers) >= 3, f"too few users followed on day 1 and came back on day 2: {followers}"
    for pid in followers:
        followed = set(one[pid]["followed"])
        assert followed <= set(one[pid]["picks"])  # they followed what they were shown
        assert not followed & set(two[pid]["picks"]), (pid, followed, two[pid]["picks"])  # ... and it is gone
        assert two[pid]["picks"] != one[pid]["picks"]
    assert all(not d["error"] for day in report["trace"].values() for d in day)


def test_the_printed_and_written_figures_equal_what_the_store_holds(first_run, module_store, settings):
    report = first_run["report"]
    events = list(module_store.events.find({"credential": "app:simulator"}, {"kind": 1, "ts": 1, "rec_id": 1}))
    kinds = Counter(e["kind"] for e in events)
    totals = report["totals"]
    assert kinds["follow"] == sum(v["follows"] for v in totals.values()) > 0
    assert kinds["play"] == sum(v["all_plays"] for v in totals.values()) > sum(v["plays"] for v in totals.values())
    assert kinds["skip"] == sum(v["all_skips"] for v in totals.values()) > 0
    # Day d's events and lists are dated d days back from the last: the Engagement page draws the run's days.
    dates = [d["date"] for d in report["days"]]
    assert len(set(dates)) == DAYS
    assert {f"{e['ts']:%Y-%m-%d}" for e in events} == set(dates)
    served = list(module_store.served.find({"experiment": EXPERIMENT, "kind": "playlists"},
                                           {"variant": 1, "ts": 1, "followed": 1}))
    for day in report["days"]:
        on_day = Counter(s["variant"] for s in served if f"{s['ts']:%Y-%m-%d}" == day["date"])
        assert on_day == {v: f["playlist_lists"] for v, f in day["variants"].items()}
    # The experiment's results read back at the end count the same lists and follows.
    results = report["results"]["variants"]
    for variant, figures in totals.items():
        assert results[variant]["playlists_served"] == figures["playlist_lists"]
        followed = sum(1 for s in served if s["variant"] == variant and s.get("followed"))
        assert followed == figures["followed_lists"]
        assert results[variant]["follow_through"] == pytest.approx(figures["follow_through"], abs=1e-6)
        assert results[variant]["users"] == figures["active_users"]
    assert "follow_through_diff_ci" in results["discovery"]
    # The Engagement page draws the same figures per variant and day (the simulated traffic alone, or all of it).
    from dashboard.pages.engagement import variant_days

    settings.SIMULATED_CREDENTIALS = ["app:simulator"]
    variant_days.cache_clear()
    curves = variant_days(EXPERIMENT, "simulated")
    for day in report["days"]:
        for variant, figures in day["variants"].items():
            at = curves[variant]["days"].index(day["date"])
            for key in ("follow_through", "minutes_per_user", "skip_rate"):
                assert curves[variant][key][at] == pytest.approx(figures[key], abs=1e-5), (day["day"], variant, key)
            assert curves[variant]["users"][at] == figures["active_users"]
    assert variant_days(EXPERIMENT, "real") == {}
    # What it printed: a table per day with each variant's line, then the results.
    printed = first_run["printed"]
    for day in report["days"]:
        for variant, f in day["variants"].items():
            assert f"{day['day']:>4} {variant:<18} {f['active_users']:>7} {f['playlist_lists']:>6}" in printed
    assert f"experiment {EXPERIMENT} (baseline control)" in printed


def test_two_runs_with_the_same_seed_make_the_same_decisions(first_run, site, world):
    """New users of a second run (another prefix, so that the store takes them) are drawn with the same seed: each
    is active on the same days, and wherever it was shown the same picks it does the same with them."""
    first = first_run["report"]
    second, _ = _simulate(site, world, app="simulator2", prefix="two", out=site["tmp"] / "two.json")
    same_picks = 0
    for day in range(1, DAYS + 1):
        a = {d["pid"]: d for d in first["trace"][str(day)]}
        b = {d["pid"]: d for d in second["trace"][str(day)]}
        assert set(a) == set(b) and {p: d["active"] for p, d in a.items()} == {p: d["active"] for p, d in b.items()}
        for pid, mine in a.items():
            theirs = b[pid]
            if mine["active"] and (mine["picks"], mine["track_picks"]) == (theirs["picks"], theirs["track_picks"]):
                same_picks += 1
                assert mine["decisions"] == theirs["decisions"], (day, pid)
    assert same_picks >= 5, "too few user-days were shown the same picks to compare their decisions"


def test_between_days_the_retrain_job_ran_to_its_end(first_run):
    retrains = first_run["report"]["retrains"]
    assert [r["status"] for r in retrains] == ["succeeded"] * (DAYS - 1), retrains
    assert f"retrain: run {retrains[0]['run']} of compute_buddies: succeeded" in first_run["printed"]


def test_a_user_the_api_refuses_is_skipped_with_the_reason(first_run, site, world):
    from recsys_site.simulation import Api, Params, load_users, user_setup

    token = _manage(site["env"], "create_credential", "--app", "simulator3", "--scopes",
                    "users:write,picks:read,events:write").split()[-1]
    users, problems = load_users([str(world["users_file"])], Params(users=USERS, seed=SEED))
    assert not problems and len(users) == USERS
    api = Api(site["url"], token, timeout=30)
    why = user_setup(api, users[0], "one")  # the first run created one-PID already
    assert why is not None and "409" in why and f"api:one-{users[0].pid}" in why
    assert user_setup(api, users[0], "three") is None and users[0].user_id == f"api:three-{users[0].pid}"


def test_bad_flags_are_refused_before_anything_is_sent():
    from django.core.management import CommandError, call_command

    for flags, says in ((["--active", "1.5"], "--active must be between 0 and 1"),
                        (["--users", "0"], "--users must be at least 1"),
                        (["--days", "40"], "CLIENT_TS_MAX_AGE_DAYS"),
                        (["--retrain-daily"], "--staff-token")):
        with pytest.raises(CommandError, match=says):
            call_command("simulate_listeners", "--mpd", "nowhere", "--token", "t", "--url", "http://127.0.0.1:9",
                         *flags)
