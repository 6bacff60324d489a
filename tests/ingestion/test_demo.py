"""The demo MPD generator: format, determinism, and the structure the recommenders rely on.

Plain pytest: no Django, no database.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ingestion.demo import GROUP_NAMES, VERSION, _playlist_groups, write_demo_slices

N, SLICE, SEED = 2500, 1000, 7
URI = {kind: re.compile(rf"^spotify:{kind}:[0-9A-Za-z]{{22}}$") for kind in ("track", "artist", "album")}
PLAYLIST_KEYS = {
    "name", "collaborative", "pid", "modified_at", "num_tracks", "num_albums", "num_followers",
    "num_edits", "duration_ms", "num_artists", "tracks",
}
TRACK_KEYS = {
    "pos", "artist_name", "track_uri", "artist_uri", "track_name", "album_uri", "duration_ms", "album_name",
}
Generated = tuple[list[Path], list[dict], dict[str, int]]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    out = tmp_path_factory.mktemp("demo")
    stats: dict[str, int] = {}
    paths = write_demo_slices(out, playlists=N, seed=SEED, slice_size=SLICE, stats=stats)
    playlists = [p for path in paths for p in json.loads(path.read_text())["playlists"]]
    return paths, playlists, stats


@pytest.fixture(scope="module")
def playlists(generated: Generated) -> list[dict]:
    return generated[1]


def _bytes(paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in paths]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = write_demo_slices(tmp_path / "a", playlists=150, seed=3, slice_size=50)
    b = write_demo_slices(tmp_path / "b", playlists=150, seed=3, slice_size=50)
    assert [p.name for p in a] == [p.name for p in b]
    assert _bytes(a) == _bytes(b)


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    a = write_demo_slices(tmp_path / "a", playlists=150, seed=3, slice_size=50)
    b = write_demo_slices(tmp_path / "b", playlists=150, seed=4, slice_size=50)
    for x, y in zip(_bytes(a), _bytes(b), strict=True):
        assert x != y
    uris_a = {t["track_uri"] for p in json.loads(a[0].read_text())["playlists"] for t in p["tracks"]}
    uris_b = {t["track_uri"] for p in json.loads(b[0].read_text())["playlists"] for t in p["tracks"]}
    assert not uris_a & uris_b


def test_playlists_do_not_depend_on_slice_size(tmp_path: Path) -> None:
    a = write_demo_slices(tmp_path / "a", playlists=120, seed=5, slice_size=1000)
    b = write_demo_slices(tmp_path / "b", playlists=120, seed=5, slice_size=7)
    assert len(b) == 18
    from_a = json.loads(a[0].read_text())["playlists"]
    from_b = [p for path in b for p in json.loads(path.read_text())["playlists"]]
    assert from_a == from_b


def test_files_slices_and_pids(generated: Generated) -> None:
    paths, playlists, stats = generated
    names = ["mpd.slice.0-999.json", "mpd.slice.1000-1999.json", "mpd.slice.2000-2999.json"]
    assert [p.name for p in paths] == names
    last = json.loads(paths[-1].read_text())
    assert last["info"]["slice"] == "2000-2999"
    assert last["info"]["version"] == VERSION
    assert last["info"]["seed"] == SEED
    assert isinstance(last["info"]["generated_on"], str)
    assert len(last["playlists"]) == 500
    assert [p["pid"] for p in playlists] == list(range(N))
    assert stats["files"] == 3
    assert stats["playlists"] == N
    assert stats["distinct_tracks"] == len({t["track_uri"] for p in playlists for t in p["tracks"]})


def test_playlist_fields_and_counts_are_consistent(playlists: list[dict]) -> None:
    for p in playlists:
        assert PLAYLIST_KEYS <= p.keys() <= PLAYLIST_KEYS | {"description"}
        assert isinstance(p["name"], str) and p["name"].strip()
        assert p["collaborative"] in ("true", "false")
        assert isinstance(p["modified_at"], int) and 1_262_304_000 <= p["modified_at"] <= 1_512_086_400
        tracks = p["tracks"]
        assert p["num_tracks"] == len(tracks)
        assert p["num_albums"] == len({t["album_uri"] for t in tracks})
        assert p["num_artists"] == len({t["artist_uri"] for t in tracks})
        assert p["duration_ms"] == sum(t["duration_ms"] for t in tracks)
        assert p["num_followers"] >= 1 and p["num_edits"] >= 1
        assert [t["pos"] for t in tracks] == list(range(len(tracks)))
        for t in tracks:
            assert t.keys() == TRACK_KEYS
            assert t["track_name"] and t["artist_name"] and t["album_name"]
            assert 30_000 <= t["duration_ms"] <= 900_000


def test_uris_look_real_and_are_consistent(playlists: list[dict]) -> None:
    track_to = {}
    for p in playlists:
        for t in p["tracks"]:
            for kind in ("track", "artist", "album"):
                assert URI[kind].match(t[f"{kind}_uri"]), t[f"{kind}_uri"]
            facts = (t["track_name"], t["artist_uri"], t["artist_name"], t["album_uri"], t["duration_ms"])
            assert track_to.setdefault(t["track_uri"], facts) == facts


# Deciles of the real sample's playlist lengths (../shared/data/mpd-real, 7,065 playlists), which the generator's
# length law was fitted to; test_shape_matches_the_real_sample compares with the files themselves.
REAL_LENGTH_DECILES = (21, 35, 51, 68, 87, 108, 132, 162, 200)


def test_mpd_like_marginals(playlists: list[dict]) -> None:
    lengths = np.array([p["num_tracks"] for p in playlists])
    assert lengths.min() >= 5 and lengths.max() <= 250
    deciles = np.quantile(lengths, np.arange(1, 10) / 10)
    assert np.all(np.abs(deciles - REAL_LENGTH_DECILES) <= 0.12 * np.array(REAL_LENGTH_DECILES) + 3), deciles
    assert lengths.mean() > np.median(lengths)  # right-skewed
    followers = np.array([p["num_followers"] for p in playlists])
    assert 0.6 <= (followers == 1).mean() <= 0.95 and followers.max() >= 50
    edits = np.array([p["num_edits"] for p in playlists])
    assert np.corrcoef(edits, lengths)[0, 1] > 0.4
    described = sum("description" in p for p in playlists) / len(playlists)
    assert 0.05 <= described <= 0.15
    assert len({p["name"].lower() for p in playlists}) > 200


def test_catalogue_size_scales_with_playlists(generated: Generated, tmp_path: Path) -> None:
    stats = generated[2]
    small: dict[str, int] = {}
    write_demo_slices(tmp_path, playlists=N // 5, seed=SEED, stats=small)
    assert 4 <= stats["catalogue_tracks"] / small["catalogue_tracks"] <= 6
    # Most tracks are found in one playlist only, so distinct tracks grow nearly as fast as playlists ...
    assert 3 <= stats["distinct_tracks"] / small["distinct_tracks"] <= 5
    assert stats["distinct_tracks"] < stats["catalogue_tracks"]
    assert stats["distinct_artists"] < stats["distinct_tracks"] / 2


def test_a_few_entries_repeat_a_track_as_in_the_mpd(playlists: list[dict]) -> None:
    entries = sum(len(p["tracks"]) for p in playlists)
    distinct = [len({t["track_uri"] for t in p["tracks"]}) for p in playlists]
    repeats = entries - sum(distinct)
    assert 0.005 * entries <= repeats <= 0.03 * entries
    with_repeats = sum(d < len(p["tracks"]) for d, p in zip(distinct, playlists, strict=True)) / len(playlists)
    assert 0.2 <= with_repeats <= 0.55  # real sample: 38 %


def test_popularity_is_skewed(playlists: list[dict]) -> None:
    entries = Counter(t["track_uri"] for p in playlists for t in p["tracks"])
    counts = np.sort(np.array(list(entries.values())))[::-1]
    top = counts[: max(1, len(counts) // 100)].sum() / counts.sum()
    assert top > 0.08, f"top 1% of tracks hold only {top:.1%} of entries"


def _jaccard(playlists: list[dict]) -> np.ndarray:
    index: dict[str, int] = {}
    rows = [[index.setdefault(t["track_uri"], len(index)) for t in p["tracks"]] for p in playlists]
    x = np.zeros((len(rows), len(index)), dtype=np.float32)
    for i, row in enumerate(rows):
        x[i, row] = 1.0
    inter = x @ x.T
    size = x.sum(axis=1)
    jac = inter / (size[:, None] + size[None, :] - inter)
    np.fill_diagonal(jac, np.nan)
    return jac


def test_taste_groups_are_learnable(playlists: list[dict]) -> None:
    sample = playlists[:600]
    jac = _jaccard(sample)
    main, _second = _playlist_groups(N, SEED)
    groups = main[: len(sample)]
    same = groups[:, None] == groups[None, :]
    np.fill_diagonal(same, False)
    different = ~same
    np.fill_diagonal(different, False)
    assert np.nanmean(jac[same]) > 3 * np.nanmean(jac[different])
    # Label-free view of the same thing: a playlist's nearest neighbour is far closer than a random one,
    # and it usually shares the main taste.
    nearest = np.nanargmax(jac, axis=1)
    assert np.nanmax(jac, axis=1).mean() > 4 * np.nanmean(jac)
    assert (groups[nearest] == groups).mean() > 0.7


def test_names_follow_the_main_taste(playlists: list[dict]) -> None:
    main, _second = _playlist_groups(N, SEED)
    christmas = GROUP_NAMES.index("christmas")
    names = [p["name"].lower() for p in playlists if main[p["pid"]] == christmas]
    assert names
    hits = sum(any(w in n for w in ("christmas", "xmas", "holiday", "winter", "santa", "snow", "jingle",
                                    "december")) for n in names)
    assert hits / len(names) > 0.8


def test_small_and_invalid_arguments(tmp_path: Path) -> None:
    paths = write_demo_slices(tmp_path, playlists=1, seed=0, slice_size=1000)
    assert [p.name for p in paths] == ["mpd.slice.0-999.json"]
    only = json.loads(paths[0].read_text())["playlists"]
    assert len(only) == 1 and only[0]["pid"] == 0 and 5 <= only[0]["num_tracks"] <= 250
    with pytest.raises(ValueError):
        write_demo_slices(tmp_path, playlists=0)
    with pytest.raises(ValueError):
        write_demo_slices(tmp_path, playlists=10, slice_size=0)
    with pytest.raises(ValueError):
        write_demo_slices(tmp_path, playlists=10, seed=-1)


@pytest.mark.real_data
@pytest.mark.slow
def test_shape_matches_the_real_sample(tmp_path: Path) -> None:
    """The four shape statistics of bench/data_shape.py, demo against the real sample, at the same size."""
    import importlib.util

    from tests.conftest import MPD_REAL, require_shared

    require_shared(MPD_REAL)
    spec = importlib.util.spec_from_file_location("data_shape", Path(__file__).parents[2] / "bench" / "data_shape.py")
    data_shape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data_shape)
    real = data_shape.shape([MPD_REAL])
    write_demo_slices(tmp_path, playlists=real["playlists"], seed=0)
    demo = data_shape.shape([tmp_path])
    hist_gap = sum(abs(real["length_hist"][k] - demo["length_hist"][k]) for k in real["length_hist"])
    assert hist_gap < 0.08, (real["length_hist"], demo["length_hist"])
    assert abs(demo["powerlaw_exponent"] - real["powerlaw_exponent"]) < 0.06
    assert abs(demo["top1pct_share"] - real["top1pct_share"]) < 0.03
    assert abs(demo["singleton_share"] - real["singleton_share"]) < 0.04
    assert abs(demo["distinct_tracks"] / real["distinct_tracks"] - 1) < 0.1
    for key in ("distinct_per_playlist_median", "artists_per_playlist_median"):
        assert abs(demo[key] / real[key] - 1) < 0.08, key
    assert abs(demo["repeat_share"] - real["repeat_share"]) < 0.004
