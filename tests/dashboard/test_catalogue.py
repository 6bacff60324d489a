"""The catalogue page against a real store: what it shows is what the playlists and tracks say (counted here with
pymongo, independently of the statistics document), the followers filter and the top-N slider change the charts,
an empty store gets "no data" figures, and the statistics document is used, refreshed and recomputed correctly."""

from __future__ import annotations

from collections import Counter
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from ingestion import collections as c
from tests.dashboard.layout import annotation_text, cards_of, find

# --- reading figures and counting words --------------------------------------------------------------------------

def _bars(figure: Any) -> dict[Any, int]:
    """x -> y of a figure's first (vertical) bar trace."""
    trace = figure.data[0]
    return dict(zip(trace.x, trace.y, strict=True))


def _word_counts(playlists: list[dict[str, Any]]) -> Counter:
    from ingestion.selectors import NAME_STOP_WORDS

    words: Counter = Counter()
    for p in playlists:
        words.update({w for w in (p.get("name_norm") or "").split() if w not in NAME_STOP_WORDS})
    return words


def _top(counter: Counter, n: int) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


# --- the demo store ----------------------------------------------------------------------------------------------

def test_layout_shows_what_the_store_holds(demo_store):
    from dashboard.components import MAIN_CHART
    from dashboard.pages import catalogue

    page = catalogue.layout()
    playlists = list(demo_store[c.PLAYLISTS].find({}, {"num_tracks": 1, "num_followers": 1, "num_edits": 1,
                                                        "name_norm": 1}))
    cards = cards_of(page)
    assert cards["Playlists"] == f"{demo_store[c.PLAYLISTS].count_documents({}):,}"
    assert cards["Tracks"] == f"{demo_store[c.TRACKS].count_documents({}):,}"
    assert cards["Artists"] == f"{demo_store[c.ARTISTS].count_documents({}):,}"
    assert cards["Playlist-track rows"] == f"{sum(p['num_tracks'] for p in playlists):,}"

    main = find(page, "catalogue-length")
    assert main.className == MAIN_CHART
    assert _bars(main.figure) == Counter(p["num_tracks"] for p in playlists)
    assert _bars(find(page, "catalogue-edits").figure) == Counter(p["num_edits"] for p in playlists)
    assert sum(find(page, "catalogue-followers").figure.data[0].y) == len(playlists)

    words = find(page, "catalogue-words").figure.data[0]
    assert list(zip(words.x, words.y, strict=True)) == _top(_word_counts(playlists), catalogue.TOP_DEFAULT)


def test_top_tracks_and_artists_match_the_track_counts(demo_store):
    from dashboard.pages import catalogue

    page = catalogue.layout()
    tracks = list(demo_store[c.TRACKS].find({}, {"artist_key": 1, "num_playlists": 1, "name": 1, "artist_name": 1}))
    by_uri = {t["_id"]: t for t in tracks}
    shown = find(page, "catalogue-tracks").figure.data[0]
    counts = list(shown.x)[::-1]  # drawn most common at the top, i.e. last
    assert counts == sorted((t["num_playlists"] for t in tracks), reverse=True)[:catalogue.TOP_DEFAULT]
    for uri, n, label in zip(list(shown.customdata)[::-1], counts, list(shown.y)[::-1], strict=True):
        assert by_uri[uri]["num_playlists"] == n and label.startswith(by_uri[uri]["name"])

    per_artist: Counter = Counter()
    for t in tracks:
        per_artist[t["artist_key"]] += t["num_playlists"]
    artists = find(page, "catalogue-artists").figure.data[0]
    assert list(artists.x)[::-1] == [n for _, n in _top(per_artist, catalogue.TOP_DEFAULT)]


def test_followers_filter_narrows_every_playlist_chart(demo_store):
    from dashboard.pages import catalogue

    options = find(catalogue.layout(), "catalogue-min-followers").options
    thresholds = [o["value"] for o in options]
    assert thresholds[0] == 0 and len(thresholds) > 2, options
    everything = demo_store[c.PLAYLISTS].count_documents({})
    sizes = []
    for threshold in thresholds[1:]:
        subset = list(demo_store[c.PLAYLISTS].find({"num_followers": {"$gte": threshold}}))
        summary, length, followers, edits, words, _tracks, _artists = catalogue.update(threshold, 10)
        assert 0 < len(subset) < everything
        assert _bars(length) == Counter(p["num_tracks"] for p in subset)
        assert _bars(edits) == Counter(p["num_edits"] for p in subset)
        assert sum(followers.data[0].y) == len(subset)
        assert list(zip(words.data[0].x, words.data[0].y, strict=True)) == _top(_word_counts(subset), 10)
        assert summary.startswith(f"{len(subset):,} playlists with ≥ {threshold:,} followers")
        sizes.append(len(subset))
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)  # each filter narrows further

    # A threshold between two stored filters means the lower one (at least that many followers holds for it).
    between = thresholds[1] + 1
    assert between < thresholds[2]
    assert _bars(catalogue.update(between, 10)[1]) == _bars(catalogue.update(thresholds[1], 10)[1])


def test_top_n_slider_sets_how_many_tracks_artists_and_words(demo_store):
    from dashboard.pages import catalogue

    for n in (5, 15, 35):
        _summary, _length, _followers, _edits, words, tracks, artists = catalogue.update(0, n)
        assert len(tracks.data[0].y) == len(artists.data[0].y) == len(words.data[0].x) == n
        assert len(set(tracks.data[0].y)) == n  # same-named tracks stay separate bars
    assert len(catalogue.update(0, 500)[5].data[0].y) == catalogue.TOP_MAX  # clamped, not an error


# --- an empty store ----------------------------------------------------------------------------------------------

def test_empty_store_renders_no_data_figures(store):
    from dashboard.pages import catalogue

    page = catalogue.layout()
    assert cards_of(page)["Playlists"] == "0"
    for figure_id in catalogue.FIGURES:
        figure = find(page, figure_id).figure
        assert not figure.data and "No playlists yet" in annotation_text(figure)
    summary, *figures = catalogue.update(20, 10)
    assert "No playlists yet" in summary
    assert all("No playlists yet" in annotation_text(f) for f in figures)


# --- the statistics document -------------------------------------------------------------------------------------

@pytest.fixture
def two_slices(tmp_path) -> list[Path]:
    from ingestion.demo import write_demo_slices

    return sorted(write_demo_slices(tmp_path, playlists=60, seed=5, slice_size=30))


def test_ingest_stores_the_statistics_and_the_page_reads_them(store, two_slices):
    from dashboard.cache import clear_all
    from dashboard.pages import catalogue
    from ingestion.selectors import catalogue_stats_get
    from ingestion.services import mpd_ingest

    assert catalogue_stats_get() is None
    assert mpd_ingest(paths=[str(two_slices[0])]).ok
    doc = catalogue_stats_get()
    assert doc is not None and doc["counts"]["playlists"] == store[c.PLAYLISTS].count_documents({}) == 30
    assert doc["counts"]["tracks"] == store[c.TRACKS].count_documents({})
    assert "Statistics computed" in find(catalogue.layout(), "catalogue-stats-note").children

    # The page shows the document, not a fresh scan: a changed document changes the page.
    store[c.CATALOGUE_STATS].update_one({"_id": doc["_id"]}, {"$set": {"counts.playlists": 12345}})
    clear_all()
    assert cards_of(catalogue.layout())["Playlists"] == "12,345"

    # The next ingest that writes playlists recomputes it.
    assert mpd_ingest(paths=[str(two_slices[1])]).ok
    clear_all()
    assert cards_of(catalogue.layout())["Playlists"] == f"{store[c.PLAYLISTS].count_documents({}):,}" == "60"
    computed = catalogue_stats_get()["computed_at"]

    # One that writes nothing (both files already ingested) leaves it alone.
    report = mpd_ingest(paths=[str(p) for p in two_slices])
    assert report.files_skipped == 2 and report.new == 0
    assert catalogue_stats_get()["computed_at"] == computed


def test_without_a_document_the_statistics_are_computed_on_the_fly(store, two_slices):
    from dashboard.pages import catalogue
    from ingestion.selectors import catalogue_stats, catalogue_stats_get
    from ingestion.services import catalogue_stats_compute, mpd_ingest

    mpd_ingest(paths=[str(p) for p in two_slices])
    stored = catalogue_stats_compute()
    store[c.CATALOGUE_STATS].delete_many({})
    fresh = catalogue_stats()
    assert fresh["stored"] is False and catalogue_stats_get() is None  # a selector never writes
    assert fresh["counts"] == stored["counts"] and fresh["tiers"] == stored["tiers"]
    page = catalogue.layout()
    assert "No statistics document is stored yet" in find(page, "catalogue-stats-note").children
    assert cards_of(page)["Playlists"] == f"{store[c.PLAYLISTS].count_documents({}):,}"


def test_weekly_metrics_step_refreshes_the_statistics(store, two_slices):
    from ingestion.selectors import catalogue_stats_get
    from ingestion.services import mpd_ingest
    from recsys_site.job_definitions import _metrics
    from recsys_site.jobs import Context, get_job, run_create

    mpd_ingest(paths=[str(p) for p in two_slices])
    store[c.CATALOGUE_STATS].update_one({}, {"$set": {"counts.playlists": -1, "top_tracks": []}})
    run = run_create(job=get_job("weekly_refresh"), params={}, trigger="test")
    summary = _metrics(Context(run, len(run["steps"]) - 1))
    doc = catalogue_stats_get()
    assert doc["counts"]["playlists"] == store[c.PLAYLISTS].count_documents({}) == summary["catalogue"]["playlists"]
    assert len(doc["top_tracks"]) == min(100, store[c.TRACKS].count_documents({}))



def test_ingest_mpd_stats_stores_the_statistics_of_an_older_store(store, two_slices):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from ingestion.selectors import catalogue_stats_get
    from ingestion.services import mpd_ingest

    assert mpd_ingest(paths=[str(p) for p in two_slices]).ok
    store[c.CATALOGUE_STATS].delete_many({})  # as in a store ingested before the statistics existed
    out = StringIO()
    call_command("ingest_mpd", "--stats", stdout=out)
    doc = catalogue_stats_get()
    assert doc is not None and doc["counts"]["playlists"] == store[c.PLAYLISTS].count_documents({}) == 60
    assert "catalogue statistics stored: 60 playlists" in out.getvalue()
    with pytest.raises(CommandError, match="--stats"):
        call_command("ingest_mpd")
