"""End to end in a real headless Chromium (Debian's, driven by Playwright): log in as staff, open every page, see
its main chart drawn with no console errors, use each interactive page's control (on the explorer: a user's picks,
a seed track found by type-ahead and its continuation, a mood search), save screenshots; and from the
Jobs page start a weekly refresh that a real Celery worker runs to "succeeded" while the page follows it.

The site is real too: gunicorn serving ``recsys_site.wsgi`` (Django + the Dash app) on the test's SecantusDB,
Redis and model directory, with a SQLite file for Django's users.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recsys_site.embedded import free_port
from tests.processes import stop, web_server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "staff-pass-123"


def _env(settings, model_dir, tmp: Path) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.local", "VAR_DIR": str(tmp),
            "DATABASE_URL": f"sqlite:///{tmp / 'django.sqlite3'}",
            "MONGO_URI": settings.MONGO_URI, "MONGO_DB": settings.MONGO_DB, "MODEL_DIR": str(model_dir),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "PICKS_CACHE_URL": settings.PICKS_CACHE_URL,
            "JOB_LOCK_TTL_SECONDS": "30", "LOG_LEVEL": "WARNING"}


def _manage(env, *args: str) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True).stdout


def _dated_traffic(base: str, token: str, users: list[str]) -> None:
    """Pick lists served through the API two and one days ago (``?ts=``) and answered by dated events, as the
    listening simulator sends them: the Engagement page has per-variant curves to draw."""

    def call(method: str, path: str, body=None):
        request = urllib.request.Request(f"{base}{path}", method=method, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    for back in (2, 1):
        at = (datetime.now(UTC) - timedelta(days=back)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for n, user in enumerate(users):
            picks = call("GET", f"/api/v1/users/{user}/playlists/recommended?k=5&ts={at}")
            events = [{"user": user, "kind": "play", "track": "spotify:track:" + "D" * 22, "ms_played": 90_000,
                       "rec_id": picks["rec_id"], "ts": at},
                      {"user": user, "kind": "skip", "track": "spotify:track:" + "E" * 22, "rec_id": picks["rec_id"],
                       "ts": at}]
            if n % 2:
                events.append({"user": user, "kind": "follow", "playlist": picks["playlists"][0]["pid"],
                               "rec_id": picks["rec_id"], "ts": at})
            call("POST", "/api/v1/events", events)


@pytest.fixture(scope="module")
def site(live, model_dir, tmp_path_factory):
    """gunicorn (2 workers) and a Celery worker over the module's live world; yields the base URL."""
    from django.conf import settings

    from ranker.training.services import ranker_train
    from tests.conftest import FAST

    ranker_train(params=FAST)  # a second, not promoted, version: the Models page has two to switch between
    tmp = tmp_path_factory.mktemp("site")
    env = _env(settings, model_dir, tmp)
    _manage(env, "migrate", "--noinput")
    _manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
            f"User.objects.create_user('ana', password='{PASSWORD}', is_staff=True); "
            f"User.objects.create_user('bob', password='{PASSWORD}')")
    port = free_port()
    web = web_server(env, port, tmp / "web.log", ready_path="/admin/login/")
    log = (tmp / "worker.log").open("w")
    worker = subprocess.Popen([str(BIN / "celery"), "-A", "celery_app", "worker", "--pool", "solo", "--queues",
                               "default,gpu", "--loglevel", "WARNING", "--hostname", f"dash-{os.getpid()}@%h"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        token = _manage(env, "create_credential", "--app", "simulator", "--scopes", "events:write,picks:read",
                        "--any-user").split()[-1]
        _dated_traffic(base, token, [str(u) for u in live.user_ids[:16]])
        yield base
    finally:
        stop(worker)
        stop(web)


def _wait_text(tab, selector: str, text: str, timeout: float = 60_000) -> None:
    tab.wait_for_function("([sel, text]) => { const e = document.querySelector(sel); "
                          "return e !== null && e.innerText.includes(text); }", arg=[selector, text], timeout=timeout)


def _pick(tab, dropdown: str, option: str | int) -> str:
    """Open a dcc.Dropdown and choose an option by its label (str) or position (int)."""
    tab.click(dropdown)
    options = tab.get_by_role("option")
    chosen = options.filter(has_text=option).first if isinstance(option, str) else options.nth(option)
    label = chosen.inner_text()
    chosen.click()
    return label


def _overview(tab) -> str:
    tab.check("#overview-kind input[value='triplets']")
    _wait_text(tab, "#overview-runs-chart", "No ingestion runs")  # the demo store has MPD runs only
    return "runs filtered to listening triplets: none"


def _catalogue(tab) -> str:
    label = _pick(tab, "#catalogue-min-followers", 1)
    _wait_text(tab, "#catalogue-summary", "with ≥")  # the unfiltered summary says "all playlists"
    return f"min followers {label}: {tab.inner_text('#catalogue-summary')}"


def _models(tab) -> str:
    version = _pick(tab, "#models-version", 1)
    _wait_text(tab, "#models-curves", version.split()[0])
    return f"switched to version {version}"


def _buddies(tab, user: str = "mpd:5") -> str:
    tab.fill("#buddies-user", user)
    tab.press("#buddies-user", "Enter")
    _wait_text(tab, "#buddies-summary", user)
    return f"user {user}: {tab.inner_text('#buddies-summary')[:80]}"


def _explorer(tab, user: str = "mpd:7") -> str:
    from ingestion.selectors import playlist_search, track_top

    tab.fill("#explorer-user", user)
    tab.press("#explorer-user", "Enter")
    tab.wait_for_selector("#explorer-tracks .ag-row", timeout=60_000)
    picks = f"picks of {user}: {tab.locator('#explorer-tracks .ag-row').count()} track rows shown"
    # A seed track found by typing the start of its title, then the continuation from it.
    track = track_top(limit=1)[0]
    tab.click("#explorer-track-lookup")
    # Into the open dropdown's search box, as an analyst types once it shows. Keys sent the instant the dropdown is
    # clicked go partly to its button and partly to the box as focus moves (Dash 4's dropdown): "Trap" became "Tap".
    tab.locator("input.dash-dropdown-search:visible").fill(track["name"][:4])
    option = tab.get_by_role("option").filter(has_text=track["name"]).first
    option.wait_for(timeout=30_000)
    option.click()
    tab.click("#explorer-continue")
    _wait_text(tab, "#explorer-unknown", "Every seed is known")
    tab.wait_for_selector("#explorer-continuation .ag-row", timeout=60_000)
    # Mood search: a catalogue playlist's name as free text, answered by the search service.
    docs, _ = playlist_search(text="", page_size=1)
    tab.fill("#explorer-mood", docs[0]["name"])
    tab.press("#explorer-mood", "Enter")
    tab.wait_for_selector("#explorer-mood-table .ag-row", timeout=60_000)
    return (f"{picks}; continuation of “{track['name']}” found by type-ahead; mood search “{docs[0]['name']}”: "
            f"{tab.locator('#explorer-mood-table .ag-row').count()} tracks")


def _variant_curves(tab, traffic: str) -> None:
    """Wait for the per-variant daily curves of ``traffic``: a line per variant in each of the three panels."""
    tab.wait_for_function(
        """(traffic) => { const g = document.querySelector('#engagement-variant-days');
                         return g !== null && g.textContent.includes(traffic)
                                && g.querySelectorAll('.scatterlayer .trace').length >= 6
                                && g.textContent.includes('control') && g.textContent.includes('learned'); }""",
        arg=traffic, timeout=60_000)


def _engagement(tab) -> str:
    _pick(tab, "#engagement-experiment", "playlist_ranker")
    tab.wait_for_selector("#engagement-ab-table .ag-row", timeout=60_000)
    _variant_curves(tab, "all traffic")
    tab.check("#engagement-traffic input[value='simulated']")
    _variant_curves(tab, "simulated only")
    return "experiment playlist_ranker: A/B table and per-variant daily curves (all, then simulated only) shown"


def _start_refresh_and_watch_it_succeed(tab) -> str:
    tab.click("#jobs-start")
    tab.wait_for_function("() => document.querySelector('#jobs-start-message').innerText.startsWith('Started')",
                          timeout=30_000)
    message = tab.inner_text("#jobs-start-message")
    run = re.search(r"run (\w{8})", message).group(1)
    # The page polls; no reload. The newest run is ours, and it must reach "succeeded".
    tab.wait_for_function(
        f"""() => {{ const s = document.querySelector('#jobs-current-status');
                    return s && s.innerText.includes('{run}') && s.dataset.status === 'succeeded'; }}""",
        timeout=420_000, polling=1000)
    return f"{message} → succeeded"


ACTIONS = {"/": _overview, "/catalogue": _catalogue, "/models": _models, "/buddies": _buddies,
           "/explorer": _explorer, "/engagement": _engagement, "/jobs": _start_refresh_and_watch_it_succeed}


@pytest.mark.slow
def test_staff_see_every_page_render_without_console_errors(site, tmp_path, request):
    from dashboard.app import PAGES
    from dashboard.browser_check import report, visit_all

    out = Path(os.environ.get("DASHBOARD_SCREENSHOTS", tmp_path))
    visits = visit_all(site, username="ana", password=PASSWORD, out_dir=out, actions=ACTIONS,
                       timeout_ms=60_000)
    print(report(visits))
    assert [v.path for v in visits] == [page.PATH for page in PAGES]
    for visit in visits:
        assert visit.screenshot.stat().st_size > 10_000, visit  # a real picture, not a blank page
        assert visit.console_errors == [], (visit.path, visit.console_errors)
    assert {v.path for v in visits if v.action} == set(ACTIONS)


def test_non_staff_and_anonymous_visitors_are_sent_to_login(site):
    from playwright.sync_api import sync_playwright

    from dashboard.browser_check import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.goto(f"{site}/dashboard/models")
            assert tab.url == f"{site}/admin/login/?next=/dashboard/models"
            tab.fill("#id_username", "bob")
            tab.fill("#id_password", PASSWORD)
            tab.click("input[type=submit]")
            # Django's admin refuses non-staff at its login form; the dashboard never opens.
            assert "/admin/login/" in tab.url
            tab.goto(f"{site}/dashboard/")
            assert "/admin/login/" in tab.url and tab.locator(".main-chart").count() == 0
        finally:
            browser.close()
