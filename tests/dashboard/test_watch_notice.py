"""The degradation watch's notice above every dashboard page: shown with its figures while a signal is degraded (as
the watch recorded it from lists served and follows posted here), gone once it recovers."""

from __future__ import annotations

import pytest

from tests.dashboard.layout import find, text_of, walk
from tests.ranker.test_watch import _follow, _serve

pytestmark = pytest.mark.django_db


@pytest.fixture
def watched(store, settings):
    settings.SERVED_LOG_FLUSH_SECONDS = 0
    settings.WATCH_MIN_SERVED = 10
    settings.WATCH_FOLLOW_THROUGH_MIN = 0.3
    settings.WATCH_WINDOW_HOURS = 6.0
    settings.WATCH_DRIFT_KL_MAX = 100.0
    settings.WATCH_RETRAIN = False
    return store


def _notices(component) -> list:
    return [c for c in walk(component) if getattr(c, "className", None) == "degraded"]


def test_the_app_has_a_notice_slot_filled_at_each_navigation():
    from dashboard.app import create_app

    app = create_app()
    assert find(app.layout, "watch-notice") is not None
    callback = app.callback_map["watch-notice.children"]
    assert [i["id"] for i in callback["inputs"]] == ["url"]


def test_a_degraded_signal_shows_its_figures_until_it_recovers(watched, settings):
    from dashboard.app import route, watch_notice
    from ranker.watch.services import watch_check

    assert watch_notice("/dashboard/") is None  # nothing checked yet: no notice
    served = _serve(40)
    _follow(served[:3])
    assert watch_check()["follow_through"]["crossed"] == "degraded"
    notice = watch_notice("/dashboard/engagement")
    [banner] = _notices(notice)
    text = text_of(banner)
    assert text.startswith("Degraded:")
    assert f"online follow-through {3 / 40:.2%}" in text and "(3 of 40 playlist pick lists" in text
    assert f"below the threshold {settings.WATCH_FOLLOW_THROUGH_MIN:.2%}" in text and "last 6 h" in text
    assert "drift" not in text  # only the degraded signal is shown
    assert route("/dashboard/") is not None and not _notices(route("/dashboard/"))  # the page itself is untouched

    _follow(served[3:20])
    assert watch_check()["follow_through"]["crossed"] == "recovered"
    assert watch_notice("/dashboard/") is None


def test_the_notice_says_which_retrain_started(watched, settings):
    from dashboard.app import watch_notice
    from ranker.watch.selectors import watch_alerts_open
    from ranker.watch.services import watch_check
    from recsys_site.jobs import run_cancel

    settings.WATCH_RETRAIN = True
    _serve(20)
    watch_check()
    [alert] = watch_alerts_open()
    retrain = alert["retrain"]
    assert f"Retrain started: {retrain['job']} run {retrain['run_id']}." in text_of(watch_notice())
    run_cancel(run_id=retrain["run_id"])
