"""The Jobs page's callbacks as plain functions, against the real store and broker."""

from __future__ import annotations

from dashboard.pages import jobs
from recsys_site.jobs import job_start, lock_acquire, lock_release, run_cancel, run_get


def test_a_finished_run_shows_with_its_steps_durations_and_log(live):
    run = job_start(name="compute_buddies", sync=True, trigger="test")
    rows, figure, _current = jobs.runs_view()
    row = next(r for r in rows if r["run_id"] == run["_id"])
    stored = run_get(run_id=run["_id"])
    assert row["status"] == stored["status"] == "succeeded"
    assert row["duration_s"] == stored["duration_s"]
    bar = next(trace for trace in figure.data if trace.name == "buddies")
    label = next(label for label in bar.y if label.startswith(run["_id"][:8]))
    assert bar.x[list(bar.y).index(label)] == stored["steps"][0]["duration_s"]
    detail = str(jobs.run_detail(run["_id"]))
    assert "buddies" in detail and stored["log"][-1] in detail


def test_start_queues_a_run_that_the_page_then_follows(live):
    message = jobs.start(1, "precompute_picks", user="ana")
    rows, _figure, current = jobs.runs_view()
    newest = rows[0]
    try:
        assert message == f"Started precompute_picks as run {newest['run']} (queued)."
        assert newest["job"] == "precompute_picks" and newest["trigger"] == "dashboard:ana"
        assert "queued" in str(current)
    finally:
        run_cancel(run_id=newest["run_id"])  # no worker in this test; the worker path is the browser test's
    status_field = f"c{jobs.COLUMNS.index('status')}"  # grid fields are positional
    assert jobs.poll(1)[0][0][status_field] == "cancelled"


def test_a_second_start_is_refused_with_the_running_run(live):
    lock_acquire(job="train_ranker", run_id="0123456789abcdef")
    try:
        message = jobs.start(1, "train_ranker", user="ana")
        assert message == "Not started: train_ranker is already running as run 01234567."
    finally:
        lock_release(job="train_ranker", run_id="0123456789abcdef")


def test_no_click_starts_nothing_and_an_unknown_run_says_so(live):
    before = len(jobs.runs_view()[0])
    assert jobs.start(0, "weekly_refresh", user="ana") == ""
    assert len(jobs.runs_view()[0]) == before
    assert "No run nope" in str(jobs.run_detail("nope"))


def test_an_empty_store_has_a_clear_empty_chart(store):
    rows, figure, current = jobs.runs_view()
    assert rows == [] and "No job runs yet" in figure.layout.annotations[0].text
    assert "No job has run yet" in str(current)
