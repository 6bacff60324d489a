"""The overview page against a real store: its counts are the store's (counted here with pymongo), the live model and
its age, the last weekly refresh with its status and error, ingestion runs with their rows and problems, the kind
filter, and an empty store that says so instead of failing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ingestion import collections as c
from tests.dashboard.layout import annotation_text, cards_of, find, rows_of, text_of


def _callback_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows a callback returns for the runs table (positional fields) as {column title: shown value}."""
    from dashboard.pages.overview import RUN_COLUMNS

    return [{col: row[f"c{i}"] for i, col in enumerate(RUN_COLUMNS)} for row in rows]


def _trace(figure: Any, name: str) -> list[int]:
    return list(next(t for t in figure.data if t.name == name).y)


def _record_events(db, n: int) -> None:
    from ingestion.feedback.services import event_record_many

    track = db[c.TRACKS].find_one({})["_id"]
    event_record_many(events=[{"user": f"viewer-{i % 3}", "kind": "like", "track": track} for i in range(n)])


# --- the live world: demo playlists, a promoted model, buddies ---------------------------------------------------

def test_counts_model_and_refresh_match_the_store(live, demo_store):
    from dashboard.components import MAIN_CHART
    from dashboard.pages import overview
    from ranker.collections import MODEL_LIVE, MODELS

    page = overview.layout()
    cards = cards_of(page)
    for label, coll in (("Playlists", c.PLAYLISTS), ("Tracks", c.TRACKS), ("Artists", c.ARTISTS),
                        ("Users", c.USERS), ("Events", c.EVENTS)):
        assert cards[label] == f"{demo_store[coll].count_documents({}):,}", label

    version = demo_store[MODEL_LIVE].find_one({})["version"]
    model = demo_store[MODELS].find_one({"_id": version})
    panel = text_of(find(page, "overview-model"))
    assert find(page, "overview-model-version").children == version == live.version
    assert f"live since {model['promoted_at']:%Y-%m-%d %H:%M} UTC" in panel
    assert f"trained {model['created_at']:%Y-%m-%d %H:%M} UTC" in panel

    refresh = find(page, "overview-refresh-status")
    assert refresh.to_plotly_json()["props"]["data-status"] == "never"

    # The demo ingest is the one run: its rows are the chart's bars and the table's row.
    run = demo_store[c.INGEST_RUNS].find_one({})
    chart = find(page, "overview-runs-chart")
    assert chart.className == MAIN_CHART
    assert _trace(chart.figure, "new") == [run["summary"]["new"]] == [demo_store[c.PLAYLISTS].count_documents({})]
    assert _trace(chart.figure, "rejected") == [0] and _trace(chart.figure, "problems") == [0]
    rows = rows_of(find(page, "overview-runs-table"))
    assert [(r["kind"], r["status"], r["new"]) for r in rows] == [("mpd", run["status"], f"{run['summary']['new']:,}")]
    assert "No problems" in text_of(find(page, "overview-problems"))


def test_events_are_counted_live_on_top_of_the_statistics(live, demo_store):
    from dashboard.cache import clear_all
    from dashboard.pages import overview
    from ingestion.selectors import catalogue_stats_get
    from ingestion.services import catalogue_stats_compute

    before = demo_store[c.EVENTS].count_documents({})
    _record_events(demo_store, 7)
    clear_all()
    stored = catalogue_stats_get()["counts"]["events"]
    assert stored < before + 7  # the statistics predate these events ...
    assert cards_of(overview.layout())["Events"] == f"{before + 7:,}"  # ... which the page still counts

    catalogue_stats_compute()  # now they are in the document: not counted twice
    clear_all()
    assert catalogue_stats_get()["counts"]["events"] == before + 7
    assert cards_of(overview.layout())["Events"] == f"{demo_store[c.EVENTS].count_documents({}):,}"


# --- runs of a fresh store ---------------------------------------------------------------------------------------

@pytest.fixture
def slices_with_problems(tmp_path) -> Path:
    """Two demo slices, one with a playlist that has no name, and a truncated file."""
    from ingestion.demo import write_demo_slices

    files = sorted(write_demo_slices(tmp_path, playlists=40, seed=11, slice_size=20))
    data = json.loads(files[0].read_text())
    data["playlists"][3]["name"] = None
    files[0].write_text(json.dumps(data))
    (tmp_path / "mpd.slice.40-59.json").write_text('{"info": {}, "playlists": [{"pid": 40, "name": "cut')
    return tmp_path


def test_ingestion_runs_show_rows_rejections_and_problems(store, slices_with_problems):
    from dashboard.pages import overview
    from ingestion.services import mpd_ingest

    first = mpd_ingest(paths=[str(slices_with_problems)])
    assert not first.ok
    mpd_ingest(paths=[str(slices_with_problems)])  # again: files skipped, the bad one fails again
    runs = list(store[c.INGEST_RUNS].find({}).sort("started_at", 1))
    page = overview.layout()
    figure = find(page, "overview-runs-chart").figure
    assert _trace(figure, "new") == [r["summary"]["new"] for r in runs] == [first.new, 0]
    assert _trace(figure, "rejected") == [r["summary"]["rejected"] for r in runs]
    assert _trace(figure, "problems") == [r["problem_count"] for r in runs]
    assert first.rejected == 1 and runs[0]["problem_count"] == 2

    table = rows_of(find(page, "overview-runs-table"))
    assert [row["status"] for row in table] == [r["status"] for r in reversed(runs)]
    assert [row["problems"] for row in table] == [f"{r['problem_count']:,}" for r in reversed(runs)]

    problems = rows_of(find(page, "overview-problems-table"))
    stored = [p for r in reversed(runs) for p in r["problems"]]
    assert [(row["pid"], row["reason"]) for row in problems] == [
        (None if p["pid"] is None else f"{p['pid']:,}", p["reason"]) for p in stored]
    assert any("name" in row["reason"] for row in problems) and any("truncated" in row["reason"] for row in problems)
    assert "changed the store finished after" not in find(page, "overview-stats-note").children


def test_kind_filter_picks_the_runs_shown(store, tmp_path):
    from dashboard.pages import overview
    from ingestion.demo import write_demo_slices
    from ingestion.listens import triplets_ingest
    from ingestion.services import mpd_ingest

    mpd_ingest(paths=[str(p) for p in write_demo_slices(tmp_path / "mpd", playlists=20, seed=2, slice_size=20)])
    triplets = tmp_path / "triplets.txt"
    triplets.write_text("".join(f"{i:040x}\tSOSONG{i % 4}\t{i + 1}\n" for i in range(12)) + "not a triplet\n")
    triplets_ingest(paths=[str(triplets)], fmt="tasteprofile")
    listens = store[c.LISTENS].count_documents({})
    assert listens == 12

    figure, rows, _problems = overview.runs_view("triplets")
    rows = _callback_rows(rows)
    assert [r["kind"] for r in rows] == ["triplets"] and _trace(figure, "new") == [listens]
    assert _trace(figure, "rejected") == [1]
    figure, rows, _problems = overview.runs_view("mpd")
    rows = _callback_rows(rows)
    assert [r["kind"] for r in rows] == ["mpd"] and _trace(figure, "new") == [20]
    figure, rows, _problems = overview.runs_view("all")
    rows = _callback_rows(rows)
    assert [r["kind"] for r in rows] == ["triplets", "mpd"] and len(figure.data[0].x) == 2
    assert [r["kind"] for r in rows_of(find(overview.layout(kind="triplets"), "overview-runs-table"))] == [
        "triplets"]

    # The statistics were computed after the MPD ingest; the later triplet run is flagged as not in them yet.
    assert "changed the store finished after" in find(overview.layout(), "overview-stats-note").children


def test_last_weekly_refresh_with_its_status_and_error(store):
    from dashboard.pages import overview
    from recsys_site.jobs import fail_run, get_job, run_create

    older = run_create(job=get_job("weekly_refresh"), params={}, trigger="test")
    fail_run(run_id=older["_id"], error="train: RuntimeError: out of memory")
    page = overview.layout()
    status = find(page, "overview-refresh-status")
    assert status.to_plotly_json()["props"]["data-status"] == "failed" == status.children
    assert "out of memory" in text_of(find(page, "overview-refresh"))

    newer = run_create(job=get_job("weekly_refresh"), params={}, trigger="test")
    status = find(overview.layout(), "overview-refresh-status")
    assert status.children == "queued" and newer["_id"][:8] in text_of(find(overview.layout(), "overview-refresh"))


def test_empty_store_says_there_is_nothing_yet(store):
    from dashboard.pages import overview

    page = overview.layout()
    assert set(cards_of(page).values()) == {"0"}
    assert "No ingestion runs yet" in annotation_text(find(page, "overview-runs-chart").figure)
    assert "No model is live yet" in text_of(find(page, "overview-model"))
    assert find(page, "overview-refresh-status").to_plotly_json()["props"]["data-status"] == "never"
    assert rows_of(find(page, "overview-runs-table")) == []
    figure, rows, problems = overview.runs_view("mpd")
    assert "No ingestion runs yet" in annotation_text(figure) and rows == []
