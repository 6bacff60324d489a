"""MPD ingestion against a real MongoDB-wire server: idempotence, updates, counts, bad input, zip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import call_command

from ingestion import selectors
from ingestion.services import catalogue_mark, catalogue_rebuild, mpd_ingest

from .conftest import make_playlist, uri

ROOT = Path(__file__).resolve().parents[2]


def stored_counts(db) -> dict[str, tuple[int, int]]:
    return {t["_id"]: (t["num_playlists"], t["num_occurrences"]) for t in db.tracks.find()}


def expected_counts(playlists: list[dict]) -> dict[str, tuple[int, int]]:
    per_playlist, occurrences = Counter(), Counter()
    for p in playlists:
        uris = [t["track_uri"] for t in p["tracks"]]
        occurrences.update(uris)
        per_playlist.update(set(uris))
    return {u: (per_playlist[u], occurrences[u]) for u in occurrences}


def test_ingest_then_reingest_is_idempotent(store, slice_writer):
    playlists = [make_playlist(pid, [pid, pid + 1, 100, 100]) for pid in range(20)]
    path = slice_writer(0, playlists)
    first = mpd_ingest(paths=[str(path)])
    assert (first.new, first.updated, first.rejected, first.files) == (20, 0, 0, 1)
    assert stored_counts(store) == expected_counts(playlists)
    assert store.users.count_documents({"source": "mpd"}) == 20
    again = mpd_ingest(paths=[str(path)])
    assert (again.new, again.updated, again.files_skipped) == (0, 0, 1)
    assert again.skipped == [str(path)]
    assert stored_counts(store) == expected_counts(playlists)


def test_changed_file_updates_by_pid_and_keeps_counts_right(store, slice_writer):
    original = [make_playlist(pid, [pid, 50]) for pid in range(10)]
    path = slice_writer(0, original)
    mpd_ingest(paths=[str(path)])
    changed = [make_playlist(pid, [pid, 60, 61]) if pid < 3 else p for pid, p in enumerate(original)]
    path.write_text(json.dumps({"playlists": changed}))
    for _ in range(3):  # the second and third runs see the same sha256 and skip
        report = mpd_ingest(paths=[str(path)])
    assert store.playlists.find_one({"_id": 1})["tracks"][1]["uri"] == uri("track", 60)
    counts = stored_counts(store)
    for track, expected in expected_counts(changed).items():
        assert counts[track] == expected
    assert counts[uri("track", 50)] == (7, 7)  # three playlists no longer hold it
    assert report.files_skipped == 1


def test_bad_playlist_among_good_ones_rejects_only_it(store, slice_writer):
    good = [make_playlist(pid, [pid]) for pid in range(5)]
    bad = make_playlist(99, [1])
    bad["tracks"][0]["track_uri"] = "spotify:track:oops"
    path = slice_writer(0, [*good[:2], bad, *good[2:]])
    report = mpd_ingest(paths=[str(path)])
    assert report.new == 5 and report.rejected == 1 and not report.ok
    [problem] = report.problems
    assert problem.file == str(path) and problem.pid == 99 and "malformed URI" in problem.reason
    assert store.playlists.find_one({"_id": 99}) is None
    assert store.playlists.count_documents({}) == 5


def test_truncated_file_does_not_stop_the_run(store, slice_writer):
    ok = slice_writer(0, [make_playlist(1, [1])])
    broken = slice_writer(1000, [], raw=json.dumps({"playlists": [make_playlist(1001, [1])]})[:-30])
    report = mpd_ingest(paths=[str(broken.parent)])
    assert report.files_failed == 1 and report.new == 1
    assert str(broken) in str(report.problems[0]) and "invalid JSON" in report.problems[0].reason
    assert selectors.playlist_get(pid=1) is not None
    # The broken file was not recorded as ingested: fixing it and re-running ingests it.
    broken.write_text(json.dumps({"playlists": [make_playlist(1001, [1])]}))
    fixed = mpd_ingest(paths=[str(ok.parent)])
    assert (fixed.new, fixed.files_skipped) == (1, 1)


def test_same_pid_twice_with_different_content_is_reported(store, slice_writer):
    a = slice_writer(0, [make_playlist(5, [1, 2])])
    b = slice_writer(1000, [make_playlist(5, [3]), make_playlist(6, [3])])
    report = mpd_ingest(paths=[str(a), str(b)])
    [problem] = report.problems
    assert problem.pid == 5 and problem.file == str(b) and str(a) in problem.reason
    assert [t["uri"] for t in selectors.playlist_get(pid=5)["tracks"]] == [uri("track", 1), uri("track", 2)]
    assert report.new == 2


def test_zip_is_read_in_place(store, tmp_path):
    archive = tmp_path / "spotify_million_playlist_dataset.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/mpd.slice.0-999.json", json.dumps({"playlists": [make_playlist(1, [1, 2])]}))
        z.writestr("data/mpd.slice.1000-1999.json", json.dumps({"playlists": [make_playlist(1001, [2])]}))
        z.writestr("README.md", "not a slice")
    report = mpd_ingest(paths=[str(archive)])
    assert report.new == 2 and report.ok
    assert store.tracks.find_one({"_id": uri("track", 2)})["num_playlists"] == 2
    assert mpd_ingest(paths=[str(archive)]).files_skipped == 2
    assert not any(p.name.endswith(".json") for p in tmp_path.iterdir())  # nothing unzipped to disk


def test_interrupted_run_is_repaired_by_the_next(store, slice_writer):
    playlists = [make_playlist(pid, [pid % 3, 9]) for pid in range(12)]
    mpd_ingest(paths=[str(slice_writer(0, playlists))])
    # Simulate a crash after playlist writes but before the catalogue deltas: counts are wrong, state is dirty.
    store.tracks.update_many({}, {"$set": {"num_playlists": 0, "num_occurrences": 0}})
    catalogue_mark(writer="run:crashed", dirty=True, run_id="crashed")  # a run whose document is gone
    mpd_ingest(paths=[str(slice_writer(1000, []))])
    assert stored_counts(store) == expected_counts(playlists)


def test_rebuild_matches_incremental_counts(store, slice_writer):
    playlists = [make_playlist(pid, [pid % 5, pid % 7, 3, 3]) for pid in range(30)]
    mpd_ingest(paths=[str(slice_writer(0, playlists))])
    incremental = stored_counts(store)
    artists = {a["_id"]: a["num_tracks"] for a in store.artists.find()}
    assert catalogue_rebuild() == {"tracks": len(incremental), "artists": len(artists)}
    assert stored_counts(store) == incremental
    assert {a["_id"]: a["num_tracks"] for a in store.artists.find()} == artists
    assert "num_playlists_-1" in store.tracks.index_information()


def test_command_exit_status_and_messages(store, slice_writer, settings):
    bad = make_playlist(3, [1])
    del bad["name"]
    path = slice_writer(0, [make_playlist(1, [1]), bad])
    env = {**os.environ, "MONGO_DB": settings.MONGO_DB, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.test"}
    cmd = [sys.executable, "manage.py", "ingest_mpd", str(path), "--no-progress"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"rejected {path}: pid 3: name: required field missing" in result.stderr
    assert "1 new" in result.stdout
    clean = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and "already ingested" in clean.stdout and "nothing new" in clean.stdout


def test_command_requires_a_path(store):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="give at least one PATH"):
        call_command("ingest_mpd")


@pytest.mark.real_data
@pytest.mark.slow
class TestRealSample:
    """All 7,065 real MPD playlists from ../shared/data/mpd-real, counts checked against the files."""

    @pytest.fixture(scope="class")
    @classmethod
    def ingested(cls, module_store):
        from tests.conftest import MPD_REAL, require_shared

        require_shared(MPD_REAL)
        report = mpd_ingest(paths=[str(MPD_REAL)])
        return module_store, report

    @pytest.fixture(scope="class")
    @classmethod
    def truth(cls):
        from tests.conftest import MPD_REAL

        playlists = []
        for file in sorted(MPD_REAL.glob("mpd.slice.*.json")):
            playlists.extend(json.loads(file.read_text())["playlists"])
        return playlists

    def test_counts_match_the_files(self, ingested, truth):
        db, report = ingested
        assert report.ok and report.new == 7065 and report.files == 8
        assert db.playlists.count_documents({}) == len(truth) == 7065
        assert selectors.playlist_track_rows() == sum(len(p["tracks"]) for p in truth) == 696_310
        assert db.tracks.count_documents({}) == 201_622
        assert stored_counts(db) == expected_counts(truth)
        artists = {t["artist_name"].strip().lower() for p in truth for t in p["tracks"]}
        assert db.artists.count_documents({}) == len(artists)

    def test_second_run_stores_nothing_new(self, ingested):
        db, _ = ingested
        before = stored_counts(db)
        from tests.conftest import MPD_REAL

        again = mpd_ingest(paths=[str(MPD_REAL)])
        assert (again.new, again.updated, again.files_skipped, again.new_tracks) == (0, 0, 8, 0)
        assert stored_counts(db) == before


def secondary_indexes(db, collection: str) -> set[str]:
    return set(db[collection].index_information()) - {"_id_"}


def test_first_load_builds_secondary_indexes_after_the_data(store, slice_writer):
    declared = secondary_indexes(store, "tracks")
    assert "num_playlists_-1" in declared  # the fixture's ensure_indexes() made them, as ingest_mpd does
    during: list[tuple[str, set[str]]] = []

    def watch(event):
        if event["phase"] == "playlists":
            during.append(("first", secondary_indexes(store, "tracks") | secondary_indexes(store, "artists")))

    first = [make_playlist(pid, [pid, 7]) for pid in range(10)]
    mpd_ingest(paths=[str(slice_writer(0, first))], callback=watch)
    assert during == [("first", set())]  # an empty store is loaded without secondary indexes ...
    assert secondary_indexes(store, "tracks") == declared  # ... which exist again once the run is over
    assert "owner_1" in secondary_indexes(store, "playlists")
    assert store.catalogue_state.find_one({"_id": "deferred_indexes"}) is None

    def watch_again(event):
        if event["phase"] == "playlists":
            during.append(("second", secondary_indexes(store, "tracks")))

    second = [make_playlist(pid, [pid, 7]) for pid in range(1000, 1005)]
    mpd_ingest(paths=[str(slice_writer(1000, second))], callback=watch_again)
    assert during[1:] == [("second", declared)]  # a store that holds data keeps its indexes while it grows
    assert stored_counts(store) == expected_counts(first + second)


def test_a_first_load_that_dies_midway_is_repaired_with_its_indexes(store, slice_writer):
    playlists = [make_playlist(pid, [pid % 4, 11]) for pid in range(30)]
    path = slice_writer(0, playlists)

    def die(event):
        if event["phase"] == "catalogue":
            raise KeyboardInterrupt("killed while writing the catalogue")

    with pytest.raises(KeyboardInterrupt):
        mpd_ingest(paths=[str(path)], callback=die)
    assert "num_playlists_-1" not in secondary_indexes(store, "tracks")
    report = mpd_ingest(paths=[str(path), str(slice_writer(1000, [make_playlist(1000, [11])]))])
    assert report.files_skipped == 1 and report.new == 1  # the first file was recorded before the crash
    assert stored_counts(store) == expected_counts([*playlists, make_playlist(1000, [11])])
    assert "num_playlists_-1" in secondary_indexes(store, "tracks")
    assert "num_tracks_-1" in secondary_indexes(store, "artists")
    assert "owner_1" in secondary_indexes(store, "playlists")
    assert store.catalogue_state.find_one({"_id": "deferred_indexes"}) is None


def test_progress_reports_every_phase_up_to_the_end(store, slice_writer):
    events: list[dict] = []
    lists = [[make_playlist(pid, [pid, pid + 1]) for pid in range(8)],
             [make_playlist(1000 + pid, [pid, 50]) for pid in range(4)]]
    paths = [slice_writer(0, lists[0]), slice_writer(1000, lists[1])]
    mpd_ingest(paths=[str(p) for p in paths], callback=events.append)
    phases = [e["phase"] for e in events]
    assert phases[:2] == ["playlists", "playlists"]
    assert [e["file"] for e in events[:2]] == [str(p) for p in paths]
    assert "indexes" in phases and phases[-1] == "statistics"
    tracks = [e for e in events if e.get("what") == "tracks"]
    assert tracks[-1]["done"] == tracks[-1]["total"] == len(expected_counts(lists[0] + lists[1]))
    artists = [e for e in events if e.get("what") == "artists"]
    assert artists[-1]["done"] == artists[-1]["total"] == store.artists.count_documents({})
    # The catalogue is written before the indexes are built, and both before the statistics.
    assert phases.index("catalogue") < phases.index("indexes") < phases.index("statistics")


def test_catalogue_deltas_flushed_midway_give_the_same_counts(store, slice_writer, monkeypatch):
    from ingestion import services

    monkeypatch.setattr(services, "FLUSH_TRACKS", 5)  # flush after nearly every file
    folder = None
    everything = []
    for start in range(0, 6000, 1000):
        playlists = [make_playlist(start + i, [start // 1000 + i, 3, 3, i * 2]) for i in range(4)]
        everything += playlists
        folder = slice_writer(start, playlists).parent
    events: list[dict] = []
    report = mpd_ingest(paths=[str(folder)], callback=events.append)
    assert report.new == 24 and report.ok
    flushes = [i for i, e in enumerate(events) if e["phase"] == "catalogue"]
    assert flushes[0] < max(i for i, e in enumerate(events) if e["phase"] == "playlists")  # flushed mid-run
    assert stored_counts(store) == expected_counts(everything)
    artists = {a["_id"]: a["num_tracks"] for a in store.artists.find()}
    catalogue_rebuild()
    assert {a["_id"]: a["num_tracks"] for a in store.artists.find()} == artists


def test_first_load_statistics_from_memory_equal_a_recount_from_the_store(store, slice_writer):
    from ingestion.services import catalogue_stats_compute

    playlists = [make_playlist(pid, [pid % 9, pid % 4 + 20, 30, 30], name=f"road trip {pid % 3}", num_followers=pid % 5,
                               num_edits=pid % 7 + 1) for pid in range(60)]
    mpd_ingest(paths=[str(slice_writer(0, playlists[:40])), str(slice_writer(1000, playlists[40:]))])
    skip = {"computed_at", "events_until", "seconds"}
    from_memory = {k: v for k, v in store.catalogue_stats.find_one({}).items() if k not in skip}
    catalogue_stats_compute()  # the usual two passes over the store
    recount = {k: v for k, v in store.catalogue_stats.find_one({}).items() if k not in skip}
    assert from_memory == recount
    assert from_memory["counts"]["tracks"] == len(expected_counts(playlists))


def test_a_copy_of_a_file_later_in_the_same_run_is_skipped(store, slice_writer):
    playlists = [make_playlist(pid, [pid, 5]) for pid in range(6)]
    original = slice_writer(0, playlists, folder="a")
    copy = slice_writer(0, playlists, folder="b")
    report = mpd_ingest(paths=[str(original), str(copy)])
    assert (report.files, report.new, report.files_skipped, report.skipped) == (2, 6, 1, [str(copy)])
    assert report.ok and stored_counts(store) == expected_counts(playlists)


def test_a_failure_while_reading_ahead_fails_the_run_and_records_it(store, slice_writer, monkeypatch):
    from ingestion import services

    good = slice_writer(0, [make_playlist(1, [1])])
    bad = slice_writer(1000, [make_playlist(1001, [2])])
    real_prepare = services._prepare

    def prepare(source):
        if source.name == str(bad):
            raise RuntimeError("disk went away")
        return real_prepare(source)

    monkeypatch.setattr(services, "_prepare", prepare)
    with pytest.raises(RuntimeError, match="disk went away"):
        mpd_ingest(paths=[str(good.parent)])
    [run] = store.ingest_runs.find()
    assert run["status"] == "failed"
    # Slices are handed over in order: the good one was written and recorded before the failure surfaced.
    assert [f["name"] for f in store.ingest_files.find()] == [str(good)]
    monkeypatch.setattr(services, "_prepare", real_prepare)
    again = mpd_ingest(paths=[str(good.parent)])
    assert (again.files_skipped, again.new) == (1, 1)
    assert stored_counts(store) == expected_counts([make_playlist(1, [1]), make_playlist(1001, [2])])


def test_a_track_only_believed_stored_is_still_stored_with_its_artist(store):
    """``stored`` holds hashes: a collision must not lose a new track (the $inc is an upsert)."""
    from ingestion.mpd import validate_playlist
    from ingestion.services import CatalogueDelta, catalogue_apply

    doc = validate_playlist(make_playlist(1, [1, 2, 2]), file="f", index=0)
    delta = CatalogueDelta()
    delta.add(doc["tracks"], +1)
    stored = {hash(uri("track", 2))}  # as if an earlier flush had inserted it; it never did
    assert catalogue_apply(delta, stored=stored) == 2
    assert stored_counts(store) == expected_counts([make_playlist(1, [1, 2, 2])])
    assert store.tracks.find_one({"_id": uri("track", 2)})["name"] == "Song 2"
    assert {a["_id"]: a["num_tracks"] for a in store.artists.find()} == {"name:artist 1": 1, "name:artist 2": 1}
    assert stored == {hash(uri("track", 1)), hash(uri("track", 2))}


# --- issue 15: pids reserved for the API; the catalogue's writers -------------------------------------------------

def api_counted(playlist: dict) -> dict:
    """An API playlist as ``expected_counts`` reads playlists."""
    return {"tracks": [{"track_uri": t["uri"]} for t in playlist["tracks"]]}


def test_mpd_pids_reserved_for_the_api_are_rejected_and_never_replace_an_api_playlist(store, slice_writer):
    from ingestion.services import API_PID_START, user_create, user_playlist_create

    first = [make_playlist(pid, [pid % 3]) for pid in range(3)]
    mpd_ingest(paths=[str(slice_writer(0, first))])
    mine = user_playlist_create(user=user_create(name="owner"), name="mine", tracks=[uri("track", 0)])
    assert mine["_id"] >= API_PID_START
    bad = [make_playlist(mine["_id"], [1, 2], name="intruder"), make_playlist(2**63, [1]),
           make_playlist(2**64, [2])]
    good = [make_playlist(1000 + i, [i, 5]) for i in range(3)]
    path = str(slice_writer(1000, [*bad, *good]))
    report = mpd_ingest(paths=[path])  # the run goes on past every bad pid, 2**63 and beyond included
    assert (report.new, report.rejected) == (3, 3), report.problems
    assert sorted((p.file, p.pid) for p in report.problems) == [(path, mine["_id"]), (path, 2**63), (path, 2**64)]
    assert all("reserved for playlists created through the API" in p.reason for p in report.problems)
    stored = store.playlists.find_one({"_id": mine["_id"]})
    assert (stored["name"], stored["owner"], stored["origin"]) == ("mine", "api:owner", "api")
    run = store.ingest_runs.find_one({"_id": report.run_id})
    assert run["status"] == "succeeded_with_errors" and run["problem_count"] == 3
    assert sorted(str(p["pid"]) for p in run["problems"]) == sorted(str(p) for p in (mine["_id"], 2**63, 2**64))
    assert stored_counts(store) == expected_counts([*first, *good, api_counted(mine)])


def test_an_api_playlist_created_during_an_ingest_leaves_the_ingests_mark(store, slice_writer):
    from ingestion.services import catalogue_is_dirty, user_create, user_playlist_create

    first = [make_playlist(pid, [pid % 3, 9]) for pid in range(6)]
    mpd_ingest(paths=[str(slice_writer(0, first))])
    user = user_create(name="racer")
    second = [make_playlist(1000 + pid, [pid % 3, 20]) for pid in range(4)]
    created: list[dict] = []

    def api_write_then_die(event):
        if event["phase"] == "playlists":  # the ingest has marked the catalogue and written this file's playlists
            created.append(user_playlist_create(user=user, name="mine", tracks=[uri("track", 9), uri("track", 1)]))
            assert catalogue_is_dirty(), "the API's playlist create cleared the running ingest's mark"
            raise KeyboardInterrupt("killed before its catalogue deltas")

    with pytest.raises(KeyboardInterrupt):
        mpd_ingest(paths=[str(slice_writer(1000, second))], callback=api_write_then_die)
    assert catalogue_is_dirty()  # the dead ingest's mark is still there, so the next run repairs
    third = [make_playlist(2000, [9])]
    mpd_ingest(paths=[str(slice_writer(2000, third))])
    assert not catalogue_is_dirty()
    assert stored_counts(store) == expected_counts([*first, *second, api_counted(created[0]), *third])


def test_a_live_writer_is_left_alone_and_one_that_died_is_repaired(store, slice_writer):
    from datetime import datetime

    from ingestion.services import catalogue_is_dirty, catalogue_writers

    playlists = [make_playlist(pid, [pid % 3, 9]) for pid in range(6)]
    mpd_ingest(paths=[str(slice_writer(0, playlists))])
    other = store.ingest_runs.insert_one({"kind": "mpd", "status": "running", "paths": []}).inserted_id
    catalogue_mark(writer=f"run:{other}", dirty=True, run_id=other)  # another ingest, still running
    # counts mid-update, as that run leaves them until its deltas are written
    store.tracks.update_one({"_id": uri("track", 9)}, {"$inc": {"num_playlists": 100}})
    more = [make_playlist(1000, [9])]
    mpd_ingest(paths=[str(slice_writer(1000, more))])
    assert list(catalogue_writers()) == [f"run:{other}"] and catalogue_is_dirty()
    assert store.tracks.find_one({"_id": uri("track", 9)})["num_playlists"] == 107  # not rebuilt under its feet
    # that run is killed outright: its run document still says running, but it is no longer heard of
    long_ago = datetime(2000, 1, 1)
    store.catalogue_state.update_one({"_id": "catalogue"}, {"$set": {f"writers.run:{other}.beat": long_ago}})
    mpd_ingest(paths=[str(slice_writer(2000, []))])
    assert catalogue_writers() == {} and not catalogue_is_dirty()
    assert stored_counts(store) == expected_counts([*playlists, *more])


def test_a_legacy_dirty_flag_is_still_repaired(store, slice_writer):
    playlists = [make_playlist(pid, [pid % 3, 9]) for pid in range(6)]
    mpd_ingest(paths=[str(slice_writer(0, playlists))])
    store.tracks.update_many({}, {"$set": {"num_playlists": 0}})
    store.catalogue_state.update_one({"_id": "catalogue"}, {"$set": {"dirty": True}}, upsert=True)  # old code's mark
    mpd_ingest(paths=[str(slice_writer(1000, []))])
    assert stored_counts(store) == expected_counts(playlists)


def test_an_api_write_that_overlaps_a_rebuild_keeps_its_mark_until_the_next_run_rebuilds(store, slice_writer):
    from ingestion.services import catalogue_is_dirty, catalogue_writers, user_create, user_playlist_create

    playlists = [make_playlist(pid, [pid % 3, 9]) for pid in range(6)]
    mpd_ingest(paths=[str(slice_writer(0, playlists))])
    user = user_create(name="overlap")
    # another process is rebuilding the catalogue right now (started, not done): an API write's deltas may be
    # missed by its scan or counted twice, so the write must not leave the catalogue clean
    store.catalogue_state.update_one({"_id": "catalogue"}, {"$inc": {"rebuilds_started": 1}}, upsert=True)
    mine = user_playlist_create(user=user, name="mine", tracks=[uri("track", 9)])
    assert catalogue_is_dirty() and [w["overlapped"] for w in catalogue_writers().values()] == [True]
    store.tracks.update_one({"_id": uri("track", 9)}, {"$inc": {"num_playlists": 5}})  # what the overlap broke
    mpd_ingest(paths=[str(slice_writer(1000, []))])
    assert not catalogue_is_dirty()
    assert stored_counts(store) == expected_counts([*playlists, api_counted(mine)])


def test_a_writer_whose_deltas_a_rebuild_overlapped_is_repaired(store, slice_writer):
    from ingestion.services import catalogue_is_dirty, catalogue_rebuild

    playlists = [make_playlist(pid, [pid % 3, 9]) for pid in range(6)]
    mpd_ingest(paths=[str(slice_writer(0, playlists))])
    rebuilds = catalogue_mark(writer="api:slow", dirty=True)
    assert rebuilds is not None
    catalogue_rebuild()  # a rebuild between this writer's mark and its last delta
    catalogue_mark(writer="api:slow", dirty=False, rebuilds=rebuilds)
    assert catalogue_is_dirty()
    mpd_ingest(paths=[str(slice_writer(1000, []))])
    assert not catalogue_is_dirty()
    again = catalogue_mark(writer="api:quick", dirty=True)  # no rebuild in between: the writer's own entry goes
    catalogue_mark(writer="api:quick", dirty=False, rebuilds=again)
    assert not catalogue_is_dirty()


def test_users_playlist_tracks_reads_many_users_own_playlists_in_chunks(store, slice_writer):
    """Each user's distinct tracks across their own playlists, across chunk boundaries; a user with none maps to []
    (the playlist ranker's training reads them for every user it learns from)."""
    from ingestion.selectors import users_playlist_tracks
    from ingestion.services import user_create, user_playlist_create

    mpd_ingest(paths=[str(slice_writer(0, [make_playlist(pid, [pid, pid + 1, 9]) for pid in range(5)]))])
    users = [user_create(name=f"reader{i}") for i in range(3)]
    user_playlist_create(user=users[0], name="a", tracks=[uri("track", 0), uri("track", 1)])
    user_playlist_create(user=users[0], name="b", tracks=[uri("track", 1), uri("track", 9)])
    user_playlist_create(user=users[2], name="c", tracks=[uri("track", 4)])
    found = users_playlist_tracks(users=users, chunk=2)
    assert set(found) == set(users)
    assert sorted(found[users[0]]) == sorted([uri("track", 0), uri("track", 1), uri("track", 9)])  # distinct
    assert found[users[1]] == [] and found[users[2]] == [uri("track", 4)]
