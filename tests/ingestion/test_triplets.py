"""Triplet ingestion (Taste Profile and HetRec Last.fm) against a real MongoDB-wire server."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import call_command

from ingestion import listens as listens_service
from ingestion import selectors, triplets
from ingestion.listens import triplets_ingest
from ingestion.triplets import parse_file, parse_tasteprofile, parse_user_artist

USERS = [f"{n:040x}" for n in (0xA1, 0xB2, 0xC3)]
SONGS = ["SOAKIMP12A8C130995", "SOBBMDR12A8C13253B", "SOBXHDL12A81C204C0", "SOBYHAJ12A6701BF1D"]
UA_HEADER = "userID\tartistID\tweight"
UF_HEADER = "userID\tfriendID"
AR_HEADER = "id\tname\turl\tpictureURL"


def write_tp(path: Path, rows: list[tuple], raw: list[str] = ()) -> Path:
    """A Taste Profile file: no header, LF line ends; ``raw`` lines are appended as they are."""
    lines = ["\t".join(str(v) for v in row) for row in rows] + list(raw)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_dat(path: Path, header: str, rows: list[tuple | str], encoding: str = "utf-8") -> Path:
    """A HetRec file: header line, tab-separated, CRLF line ends; str rows are written as they are."""
    lines = [header] + [r if isinstance(r, str) else "\t".join(str(v) for v in r) for r in rows]
    path.write_bytes(b"".join(line.encode(encoding) + b"\r\n" for line in lines))
    return path


def listens(db, source: str | None = None) -> dict[str, int]:
    query = {"source": source} if source else {}
    return {d["_id"]: d["weight"] for d in db.listens.find(query)}


TP_ROWS = [(u, s, 1 + i + 3 * j) for j, u in enumerate(USERS) for i, s in enumerate(SONGS[: 2 + j])]


def expected_tp(rows) -> dict[str, int]:
    return {f"tp:{u}|echonest:song:{s}": c for u, s, c in rows}


# --- parsing (no database) ---------------------------------------------------------------------------------------
def test_parsers_name_the_field():
    assert parse_tasteprofile(f"{USERS[0]}\t{SONGS[0]}\t3") == {
        "_id": f"tp:{USERS[0]}|echonest:song:{SONGS[0]}", "user": f"tp:{USERS[0]}",
        "item": f"echonest:song:{SONGS[0]}", "kind": "song", "weight": 3}
    assert parse_tasteprofile(f"{USERS[0]}\t{SONGS[0]}") == "expected 3 tab-separated fields, got 2"
    assert parse_tasteprofile(f"{USERS[0]}\t{SONGS[0]}\t0") == "count: expected a positive integer, got '0'"
    assert parse_tasteprofile(f"abc\t{SONGS[0]}\t1").startswith("user: expected a 40-character hex id")
    assert parse_tasteprofile(f"{USERS[0]}\tSO X\t1") == "song: expected an id without whitespace, got 'SO X'"
    assert parse_user_artist("2\t51\tx") == "weight: expected a non-negative integer, got 'x'"
    assert parse_user_artist("2\t51\t0")["weight"] == 0
    assert parse_user_artist("2\t-51\t5") == "artistID: expected a non-negative integer, got '-51'"


def test_parse_file_streams_crlf_and_mixed_encodings(tmp_path):
    path = tmp_path / "artists.dat"
    path.write_bytes(b"id\tname\turl\tpictureURL\r\n1\tBj\xc3\xb6rk\tu1\t\r\n2\tBeyonc\xe9\tu2\tp\r\n")
    rows = list(parse_file(path, triplets.ROLES["artists"]))
    assert [(n, d["name"], d["url"]) for n, d in rows] == [(2, "Björk", "u1"), (3, "Beyoncé", "u2")]


# --- Taste Profile -----------------------------------------------------------------------------------------------
def test_tasteprofile_ingest_then_reingest(store, tmp_path):
    path = write_tp(tmp_path / "train_triplets.txt", TP_ROWS)
    first = triplets_ingest(paths=[str(path)], fmt="tasteprofile")
    assert first.ok and (first.files, first.listens_new, first.users_new, first.rows) == (1, 9, 3, 9)
    assert listens(store) == expected_tp(TP_ROWS)
    assert selectors.listen_count(source="tasteprofile:train_triplets.txt") == 9
    doc = store.listens.find_one({"_id": f"tp:{USERS[0]}|echonest:song:{SONGS[0]}"})
    assert (doc["user"], doc["item"], doc["kind"], doc["run_id"]) == (
        f"tp:{USERS[0]}", f"echonest:song:{SONGS[0]}", "song", first.run_id)
    assert {u["_id"] for u in store.users.find({"source": "tasteprofile"})} == {f"tp:{u}" for u in USERS}
    again = triplets_ingest(paths=[str(path)], fmt="tasteprofile")
    assert (again.files_skipped, again.skipped, again.changed, again.ok) == (1, [str(path)], False, True)
    assert listens(store) == expected_tp(TP_ROWS)
    run = store.ingest_runs.find_one({"_id": again.run_id})
    assert run["kind"] == "triplets" and run["status"] == "succeeded"


def test_changed_file_updates_weights_and_removes_vanished_rows(store, tmp_path, monkeypatch):
    monkeypatch.setattr(listens_service, "BATCH", 4)  # several batches even on a small file
    other = write_tp(tmp_path / "other.txt", [(USERS[0], "SOOTHER", 7)])
    path = write_tp(tmp_path / "train_triplets.txt", TP_ROWS)
    triplets_ingest(paths=[str(other), str(path)], fmt="tasteprofile")
    changed = [(u, s, c * 10 if i == 0 else c) for i, (u, s, c) in enumerate(TP_ROWS) if i != 4]
    changed.append((USERS[2], "SONEW", 2))
    write_tp(path, changed)
    report = triplets_ingest(paths=[str(path)], fmt="tasteprofile", allow_removals=True)  # 1 of 9 rows: > 10 %
    assert report.ok, report.problems
    assert (report.listens_new, report.listens_updated, report.listens_unchanged, report.listens_removed) == (
        1, 1, 7, 1)
    assert listens(store, "tasteprofile:train_triplets.txt") == expected_tp(changed)
    assert listens(store, "tasteprofile:other.txt") == {f"tp:{USERS[0]}|echonest:song:SOOTHER": 7}
    assert triplets_ingest(paths=[str(path)], fmt="tasteprofile").files_skipped == 1


def test_changed_file_with_a_row_twice_keeps_the_first(store, tmp_path, monkeypatch):
    monkeypatch.setattr(listens_service, "BATCH", 3)
    path = write_tp(tmp_path / "train_triplets.txt", TP_ROWS)
    triplets_ingest(paths=[str(path)], fmt="tasteprofile")
    u, s, c = TP_ROWS[1]  # unchanged, so not rewritten: a later copy must still count as a duplicate
    write_tp(path, [*TP_ROWS[:8], (u, s, c), (u, s, c + 1)])
    report = triplets_ingest(paths=[str(path)], fmt="tasteprofile", allow_removals=True)
    assert [(p.line, "listed twice" in p.reason) for p in report.problems] == [(10, True)]
    assert (report.listens_unchanged, report.listens_removed) == (8, 1)
    assert listens(store) == expected_tp(TP_ROWS[:8])


def test_bad_lines_are_reported_and_good_lines_stored(store, tmp_path):
    good = TP_ROWS[:3]
    bad = {
        4: (f"{USERS[0]}\t{SONGS[0]}", "expected 3 tab-separated fields, got 2"),
        5: (f"nothex\t{SONGS[0]}\t1", "user: expected a 40-character hex id, got 'nothex'"),
        6: (f"{USERS[0]}\t\t1", "song: empty"),
        7: (f"{USERS[0]}\tSO BAD\t1", "song: expected an id without whitespace, got 'SO BAD'"),
        8: (f"{USERS[1]}\t{SONGS[3]}\tx", "count: expected a positive integer, got 'x'"),
        9: (f"{USERS[1]}\t{SONGS[3]}\t0", "count: expected a positive integer, got '0'"),
        10: (f"{USERS[1]}\t{SONGS[3]}\t-2", "count: expected a positive integer, got '-2'"),
        11: (f"{USERS[1]}\t{SONGS[3]}\t1\textra", "expected 3 tab-separated fields, got 4"),
    }
    late_good = (*TP_ROWS[4][:2], 50)
    path = write_tp(tmp_path / "t.txt", good, raw=[line for line, _ in bad.values()] + ["\t".join(map(str, late_good))])
    report = triplets_ingest(paths=[str(path)], fmt="tasteprofile")
    assert {(p.file, p.line, p.reason) for p in report.problems} == {(str(path), n, r) for n, (_, r) in bad.items()}
    assert report.rejected == len(bad) and not report.ok
    assert listens(store) == expected_tp([*good, late_good])


def test_same_pair_twice_with_different_counts_keeps_the_first(store, tmp_path, monkeypatch):
    monkeypatch.setattr(listens_service, "BATCH", 2)  # duplicates within a batch and across batches
    u, s = USERS[0], SONGS[0]
    rows = [(u, s, 3), (u, s, 3), (u, s, 4), (u, SONGS[1], 1), (USERS[1], s, 1), (u, s, 5)]
    path = write_tp(tmp_path / "t.txt", rows)
    report = triplets_ingest(paths=[str(path)], fmt="tasteprofile")
    assert [(p.line, p.file) for p in report.problems] == [(3, str(path)), (6, str(path))]
    assert "listed twice in this file" in report.problems[0].reason and "weight 3" in report.problems[0].reason
    assert listens(store)[f"tp:{u}|echonest:song:{s}"] == 3
    assert (report.listens_new, report.rejected) == (3, 2)


def test_missing_path_is_reported_and_the_run_goes_on(store, tmp_path):
    path = write_tp(tmp_path / "t.txt", TP_ROWS[:2])
    report = triplets_ingest(paths=[str(tmp_path / "nope.txt"), str(path)], fmt="tasteprofile")
    assert [str(p) for p in report.problems] == [f"{tmp_path / 'nope.txt'}: no such file or folder"]
    assert (report.files_failed, report.listens_new) == (1, 2)


# --- HetRec ------------------------------------------------------------------------------------------------------
UA_ROWS = [(2, 51, 13883), (2, 52, 11690), (3, 51, 0), (3, 53, 7), (4, 52, 1)]
UF_ROWS = [(2, 3), (3, 2), (2, 4), (4, 2), (5, 2)]  # user 5 only appears as a friend


def write_hetrec(folder: Path, ua=UA_ROWS, uf=UF_ROWS, artists: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_dat(folder / "user_artists.dat", UA_HEADER, ua)
    write_dat(folder / "user_friends.dat", UF_HEADER, uf)
    if artists:
        (folder / "artists.dat").write_bytes(
            (AR_HEADER + "\r\n51\tBjörk\thttp://www.last.fm/music/Bj%C3%B6rk\t\r\n").encode()
            + "52\tBeyoncé\thttp://www.last.fm/music/Beyonce\tpic\r\n".encode("latin-1")
            + b"53\tMALICE MIZER\thttp://www.last.fm/music/MALICE+MIZER\t\r\n")
    return folder


def test_hetrec_folder_ingest_then_reingest(store, tmp_path):
    folder = write_hetrec(tmp_path / "hetrec")
    report = triplets_ingest(paths=[str(folder)], fmt="hetrec")
    assert report.ok, report.problems
    assert (report.files, report.listens_new, report.friendships_new, report.items_new, report.users_new) == (
        3, 5, 5, 3, 4)
    assert listens(store) == {f"lastfm:{u}|lastfm:artist:{a}": w for u, a, w in UA_ROWS}
    doc = store.listens.find_one({"_id": "lastfm:3|lastfm:artist:51"})
    assert (doc["weight"], doc["kind"], doc["source"]) == (0, "artist", "hetrec:user_artists.dat")
    pairs = {(f["user"], f["friend"]) for f in store.friendships.find()}
    assert pairs == {(f"lastfm:{u}", f"lastfm:{f}") for u, f in UF_ROWS}
    assert store.friendships.find_one({"_id": "lastfm:5|lastfm:2"})["source"] == "hetrec:user_friends.dat"
    assert {u["_id"] for u in store.users.find({"source": "lastfm"})} == {f"lastfm:{n}" for n in (2, 3, 4, 5)}
    assert selectors.listen_item_get(item="lastfm:artist:52")["name"] == "Beyoncé"  # latin-1 line
    assert selectors.listen_item_get(item="lastfm:artist:51")["name"] == "Björk"  # utf-8 line
    again = triplets_ingest(paths=[str(folder)], fmt="hetrec")
    assert (again.files_skipped, again.changed, again.ok) == (3, False, True)
    assert selectors.friendship_count() == 5 and selectors.listen_count() == 5


def test_hetrec_single_files_and_changes(store, tmp_path, settings):
    settings.TRIPLETS_MAX_REMOVED_SHARE = 0.5  # the change below removes 2 of the 5 friendships stored
    folder = write_hetrec(tmp_path / "hetrec", artists=False)
    triplets_ingest(paths=[str(folder / "user_friends.dat")], fmt="hetrec")
    assert selectors.friendship_count() == len(UF_ROWS) and selectors.listen_count() == 0
    write_dat(folder / "user_friends.dat", UF_HEADER, [*UF_ROWS[:3], (6, 2)])
    report = triplets_ingest(paths=[str(folder)], fmt="hetrec")
    assert (report.friendships_new, report.friendships_removed, report.listens_new) == (1, 2, 5)
    assert selectors.friendship_count() == 4


def test_hetrec_bad_lines(store, tmp_path):
    folder = write_hetrec(tmp_path / "hetrec", ua=[UA_ROWS[0], "2\t52\tx", "3\t51", UA_ROWS[3]],
                          uf=[(2, 3), (2, 2), "2\tfriend"], artists=False)
    report = triplets_ingest(paths=[str(folder)], fmt="hetrec")
    ua, uf = str(folder / "user_artists.dat"), str(folder / "user_friends.dat")
    assert [str(p) for p in report.problems] == [
        f"{ua}: line 3: weight: expected a non-negative integer, got 'x'",
        f"{ua}: line 4: expected 3 tab-separated fields, got 2",
        f"{uf}: line 3: friendID: same as userID (2)",
        f"{uf}: line 4: friendID: expected a non-negative integer, got 'friend'",
    ]
    assert (report.listens_new, report.friendships_new, report.rejected) == (2, 1, 4)


def test_wrong_header_rejects_the_file_and_the_run_goes_on(store, tmp_path):
    folder = write_hetrec(tmp_path / "hetrec", artists=False)
    write_dat(folder / "user_artists.dat", "user\tartist\tweight", UA_ROWS)
    report = triplets_ingest(paths=[str(folder)], fmt="hetrec")
    [problem] = report.problems
    assert problem.file == str(folder / "user_artists.dat") and problem.line is None
    assert problem.reason.startswith("wrong header: expected 'userID\\tartistID\\tweight'")
    assert (report.files_failed, report.listens_new, report.friendships_new) == (1, 0, len(UF_ROWS))
    write_dat(folder / "user_artists.dat", UA_HEADER, UA_ROWS)  # fixed: it was not recorded as done
    fixed = triplets_ingest(paths=[str(folder)], fmt="hetrec")
    assert (fixed.listens_new, fixed.files_skipped) == (len(UA_ROWS), 1)


def test_missing_hetrec_file_and_unknown_file(store, tmp_path):
    folder = tmp_path / "hetrec"
    folder.mkdir()
    write_dat(folder / "user_artists.dat", UA_HEADER, UA_ROWS)
    stray = write_dat(tmp_path / "tags.dat", "tagID\ttagValue", [(1, "metal")])
    report = triplets_ingest(paths=[str(folder), str(stray)], fmt="hetrec")
    assert [p.file for p in report.problems] == [str(folder / "user_friends.dat"), str(stray)]
    assert "not a HetRec file" in report.problems[1].reason
    assert report.listens_new == len(UA_ROWS)


# --- the command -------------------------------------------------------------------------------------------------
def run_command(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ingest_triplets", *args, "--no-progress", stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_command_exit_status_and_messages(store, tmp_path):
    path = write_tp(tmp_path / "t.txt", TP_ROWS[:2], raw=[f"{USERS[0]}\t{SONGS[3]}\tx"])
    code, out, err = run_command(str(path), "--format", "tasteprofile")
    assert code == 1
    assert f"rejected {path}: line 3: count: expected a positive integer, got 'x'" in err
    assert "listens: 2 new" in out and "1 rejected" in out
    code, out, err = run_command(str(path), "--format", "tasteprofile")
    assert code == 0 and f"skipped {path}: already ingested" in out and "nothing new" in out and not err


# --- issue 15: a re-ingest that would remove much stops before deleting -------------------------------------------
def test_a_truncated_file_removes_nothing_unless_removals_are_allowed(store, tmp_path):
    path = write_tp(tmp_path / "train_triplets.txt", TP_ROWS)  # 9 rows
    assert triplets_ingest(paths=[str(path)], fmt="tasteprofile").listens_new == len(TP_ROWS)
    write_tp(path, TP_ROWS[:3])  # truncated, same name: 6 of the 9 stored rows are no longer in it
    report = triplets_ingest(paths=[str(path)], fmt="tasteprofile")
    assert not report.ok and (report.listens_removed, report.files_failed, report.removals) == (0, 1, [])
    [problem] = report.problems
    assert problem.file == str(path) and problem.line is None
    assert "would remove 6 of the 9 rows stored from tasteprofile:train_triplets.txt" in problem.reason
    assert "rerun with --allow-removals" in problem.reason
    assert listens(store) == expected_tp(TP_ROWS)  # nothing deleted
    assert store.ingest_runs.find_one({"_id": report.run_id})["problems"][0]["file"] == str(path)
    code, out, err = run_command(str(path), "--format", "tasteprofile")  # not recorded as done: refused again
    assert code == 1 and f"skipped {path}" not in out and "would remove 6 of the 9 rows" in err
    assert listens(store) == expected_tp(TP_ROWS)
    code, out, err = run_command(str(path), "--format", "tasteprofile", "--allow-removals")
    assert code == 0, err
    assert f"removed 6 rows from listens: stored from {path}, no longer in it" in out and "6 removed" in out
    assert listens(store) == expected_tp(TP_ROWS[:3])
    assert triplets_ingest(paths=[str(path)], fmt="tasteprofile").files_skipped == 1  # now recorded as done


def test_a_small_removal_goes_through_and_is_reported_per_file(store, tmp_path):
    rows = [(USERS[i % 3], f"SO{i:04d}", 1 + i) for i in range(20)]
    path = write_tp(tmp_path / "big.txt", rows)
    triplets_ingest(paths=[str(path)], fmt="tasteprofile")
    write_tp(path, rows[:-1])  # 1 of 20 stored rows left the file: 5 %, under the 10 % that needs the flag
    report = triplets_ingest(paths=[str(path)], fmt="tasteprofile")
    assert report.ok, report.problems
    assert (report.listens_removed, report.removals) == (1, [(str(path), "listens", 1)])
    assert listens(store) == expected_tp(rows[:-1])


# --- real data ---------------------------------------------------------------------------------------------------
@pytest.mark.real_data
@pytest.mark.slow
def test_real_hetrec_lastfm(store, hetrec):
    report = triplets_ingest(paths=[str(hetrec)], fmt="hetrec")
    assert report.ok, report.problems[:5]
    assert (report.listens_new, report.friendships_new, report.users_new) == (92_834, 25_434, 1_892)
    assert report.items_new == 17_632
    assert selectors.listen_count(source="hetrec:user_artists.dat") == 92_834
    assert selectors.friendship_count() == 25_434
    assert store.users.count_documents({"source": "lastfm"}) == 1_892
    assert len(store.listens.distinct("item")) == 17_632
    weights = Counter()
    with open(hetrec / "user_artists.dat") as fh:
        next(fh)
        for line in fh:
            weights[int(line.split("\t")[0])] += int(line.split("\t")[2])
    stored = Counter()
    for doc in store.listens.find({}, {"user": 1, "weight": 1}):
        stored[int(doc["user"].removeprefix("lastfm:"))] += doc["weight"]
    assert stored == weights
    again = triplets_ingest(paths=[str(hetrec)], fmt="hetrec")
    assert (again.files_skipped, again.changed, again.ok) == (3, False, True)
