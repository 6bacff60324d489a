"""Validation of single playlists and slices (no database)."""

import json

import pytest

from ingestion.mpd import Problem, SliceError, decode_slice, iter_sources, normalize_name, validate_playlist

from .conftest import make_playlist, uri


def test_valid_playlist_is_normalised_with_owner_and_artist_key():
    doc = validate_playlist(make_playlist(7, [1, 2, 2]), file="f.json", index=0)
    assert not isinstance(doc, Problem)
    assert doc["_id"] == 7 and doc["owner"] == "mpd:7"
    assert [t["uri"] for t in doc["tracks"]] == [uri("track", 1), uri("track", 2), uri("track", 2)]
    assert doc["tracks"][0]["artist_key"] == "name:artist 1"
    assert doc["num_tracks"] == 3


def test_optional_official_fields_are_kept_and_typed():
    raw = make_playlist(1, [1], collaborative="true", modified_at=1500000000, num_albums=1, description="hi")
    raw["tracks"][0].update(artist_uri=uri("artist", 1), album_uri=uri("album", 1), album_name="A", duration_ms=1000)
    doc = validate_playlist(raw, file="f", index=0)
    assert doc["collaborative"] is True and doc["modified_at"] == 1500000000 and doc["description"] == "hi"
    assert doc["tracks"][0]["artist_key"] == uri("artist", 1)
    assert doc["tracks"][0]["duration_ms"] == 1000


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p.pop("pid"), "pid: required field missing"),
        (lambda p: p.update(pid="12"), "pid: expected an integer"),
        (lambda p: p.pop("name"), "name: required field missing"),
        (lambda p: p.update(name=5), "name: expected a string"),
        (lambda p: p.update(num_followers="many"), "num_followers: expected an integer"),
        (lambda p: p.update(tracks="nope"), "tracks: expected a list"),
        (lambda p: p.pop("tracks"), "tracks: required field missing"),
        (lambda p: p["tracks"][1].update(track_uri="spotify:track:short"), "tracks[1].track_uri: malformed URI"),
        (lambda p: p["tracks"][0].pop("artist_name"), "tracks[0].artist_name: required field missing"),
        (lambda p: p["tracks"][0].update(track_name=None), "tracks[0].track_name: required field missing"),
        (lambda p: p["tracks"][0].update(artist_uri="spotify:album:x"), "tracks[0].artist_uri: malformed URI"),
        (lambda p: p.update(num_tracks=99), "num_tracks: says 99"),
        (lambda p: p.update(collaborative="maybe"), "collaborative: expected"),
    ],
)
def test_each_broken_playlist_is_rejected_with_field_and_pid(mutate, expected):
    raw = make_playlist(42, [1, 2, 3])
    mutate(raw)
    problem = validate_playlist(raw, file="slice.json", index=3)
    assert isinstance(problem, Problem)
    assert expected in problem.reason
    assert str(problem).startswith("slice.json")
    if isinstance(raw.get("pid"), int):
        assert problem.pid == 42 and "pid 42" in str(problem)


def test_truncated_json_names_the_file_and_position():
    data = json.dumps({"playlists": [make_playlist(1, [1, 2])]}).encode()[:-20]
    with pytest.raises(SliceError, match=r"^a\.json: invalid JSON at line 1 column \d+.*truncated"):
        decode_slice(data, name="a.json")


def test_non_slice_json_is_refused():
    with pytest.raises(SliceError, match="not an MPD slice"):
        decode_slice(b'{"info": {}}', name="b.json")


def test_sources_expand_folders_in_pid_order_and_report_missing_paths(tmp_path, slice_writer):
    slice_writer(1000, [])
    slice_writer(0, [])
    (tmp_path / "mpd" / "notes.json").write_text("{}")
    items = list(iter_sources([tmp_path / "mpd", tmp_path / "missing"]))
    names = [getattr(i, "name", None) for i in items[:2]]
    assert names == [str(tmp_path / "mpd" / "mpd.slice.0-999.json"), str(tmp_path / "mpd" / "mpd.slice.1000-1999.json")]
    assert isinstance(items[2], Problem) and "no such file" in items[2].reason


def test_normalize_name():
    assert normalize_name("  Café   Vibes!! 🎉 ") == "cafe vibes"


# --- issue 15: URIs matched in full, pids outside the MPD's range, integers MongoDB cannot store ------------------

def test_a_uri_with_a_trailing_newline_is_rejected_everywhere():
    from ingestion.mpd import URI_RE

    good = uri("track", 1)
    assert URI_RE["track"].match(good) and URI_RE["track"].fullmatch(good)
    # ``$`` would match before the final newline: every user of the patterns (``match``, ``search`` as DRF's
    # RegexField does, ``fullmatch``) must refuse it
    for method in ("match", "search", "fullmatch"):
        assert getattr(URI_RE["track"], method)(good + "\n") is None, method
    raw = make_playlist(1, [1])
    raw["tracks"][0]["track_uri"] += "\n"
    problem = validate_playlist(raw, file="f", index=0)
    assert isinstance(problem, Problem) and "tracks[0].track_uri: malformed URI" in problem.reason
    raw = make_playlist(1, [1])
    raw["tracks"][0]["artist_uri"] = uri("artist", 1) + "\n"
    problem = validate_playlist(raw, file="f", index=0)
    assert isinstance(problem, Problem) and "tracks[0].artist_uri: malformed URI" in problem.reason


@pytest.mark.parametrize("pid", [1_000_000_000, 1_000_000_001, 2**63 - 1, 2**63, 2**64 + 5])
def test_a_pid_in_the_range_reserved_for_the_api_is_rejected_with_the_pid(pid):
    problem = validate_playlist(make_playlist(pid, [1]), file="f.json", index=3)
    assert isinstance(problem, Problem), problem
    assert problem.pid == pid and problem.file == "f.json"
    assert "reserved for playlists created through the API" in problem.reason and str(pid) in problem.reason
    import bson

    bson.encode(problem.to_doc())  # the run that rejects it can record it, whatever its size


def test_the_largest_mpd_pid_is_accepted():
    from ingestion.mpd import API_PID_START

    doc = validate_playlist(make_playlist(API_PID_START - 1, [1]), file="f", index=0)
    assert not isinstance(doc, Problem) and doc["_id"] == API_PID_START - 1


def test_an_integer_field_too_large_for_mongodb_is_rejected():
    raw = make_playlist(1, [1], num_followers=2**63)
    problem = validate_playlist(raw, file="f", index=0)
    assert isinstance(problem, Problem) and "num_followers" in problem.reason and "too large" in problem.reason
    raw = make_playlist(1, [1])
    raw["tracks"][0]["duration_ms"] = 2**64
    problem = validate_playlist(raw, file="f", index=0)
    assert isinstance(problem, Problem) and "duration_ms" in problem.reason and "too large" in problem.reason
