#!/usr/bin/env python
"""The shape of MPD slices: demo data (``make_demo_data``) side by side with the real sample.

    .venv/bin/python bench/data_shape.py [--real PATH] [--playlists N] [--seed S] [--demo PATH] [--json PATH]

Four statistics, each computed the same way on every data set:

1. **playlist-length histogram**: share of playlists per length bin (``LENGTH_BINS``);
2. **track-popularity power law**: the exponent ``a`` of ``count ~ rank^-a`` fitted by least squares on the
   log-log rank-frequency curve (count = playlists holding the track), at ``FIT_POINTS`` log-spaced ranks from
   1 to the last rank held by at least two playlists (the singletons' flat plateau is left out), plus the share
   of playlist-track entries that the top 1 % of tracks hold;
3. **distinct tracks per playlist**: median and mean, and the share of entries that repeat a track already in
   the same playlist;
4. **artists per playlist**: median and mean distinct artists, and their ratio to distinct tracks.

Importable: ``shape(paths)`` takes slice files or folders and returns the statistics as a dict, so another
benchmark (a scale run) can call it; ``table(columns)`` prints several side by side. The power-law exponent
and the artist counts depend on the number of playlists, so compare data sets of about the same size (by
default the demo is generated with as many playlists as the real sample has).

Without ``--demo``, the script generates the demo slices into a temporary folder and removes them after.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "mpd-real"
DEFAULT_JSON = REPO / "var" / "bench" / "data_shape.json"
LENGTH_BINS = (5, 10, 20, 30, 50, 75, 100, 150, 200, 251)  # [lo, next lo) ; the MPD holds 5..250 tracks
FIT_POINTS = 60


def _slice_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.glob("mpd.slice.*.json"))
            if not found:
                raise ValueError(f"{path}: no mpd.slice.*.json files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return files


def powerlaw_exponent(counts: list[int], points: int = FIT_POINTS) -> float:
    """``a`` in ``count ~ rank^-a``: least squares on log-log at log-spaced ranks, singletons' plateau excluded."""
    freq = sorted(counts, reverse=True)
    last = sum(1 for f in freq if f >= 2)
    if last < 3:
        return float("nan")
    ranks = sorted({max(1, round(math.exp(i * math.log(last) / (points - 1)))) for i in range(points)})
    xs = [math.log(r) for r in ranks]
    ys = [math.log(freq[r - 1]) for r in ranks]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return -slope


def _median(values: list[int]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def shape(paths: Iterable[str | Path]) -> dict[str, Any]:
    """The four shape statistics of the playlists in these slice files or folders.

    Reads one slice at a time; holds one counter entry per distinct track. ``ValueError`` names a path that
    does not exist, a folder without slices, or a file that is not an MPD slice.
    """
    files = _slice_files(paths)
    lengths: list[int] = []
    distinct: list[int] = []
    artists: list[int] = []
    popularity: Counter = Counter()
    entries = 0
    for file in files:
        try:
            doc = json.loads(file.read_bytes())
            playlists = doc["playlists"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{file}: not an MPD slice ({exc})") from exc
        for p in playlists:
            uris = [t["track_uri"] for t in p["tracks"]]
            unique = set(uris)
            lengths.append(len(uris))
            distinct.append(len(unique))
            artists.append(len({t.get("artist_uri") or t["artist_name"].strip().lower() for t in p["tracks"]}))
            popularity.update(unique)
            entries += len(uris)
    n = len(lengths)
    if not n:
        raise ValueError(f"no playlists in {', '.join(map(str, files))}")
    hist = Counter()
    for length in lengths:
        for lo, hi in zip(LENGTH_BINS, LENGTH_BINS[1:], strict=False):
            if lo <= length < hi:
                hist[f"{lo}-{hi - 1}"] += 1
                break
        else:
            hist["other"] += 1
    freq = sorted(popularity.values(), reverse=True)
    top = freq[: max(1, len(freq) // 100)]
    return {
        "files": len(files),
        "playlists": n,
        "entries": entries,
        "distinct_tracks": len(freq),
        "length_median": _median(lengths),
        "length_mean": sum(lengths) / n,
        "length_hist": {k: hist[k] / n for k in [f"{lo}-{hi - 1}" for lo, hi in zip(LENGTH_BINS, LENGTH_BINS[1:],
                                                                                    strict=False)] + ["other"]},
        "powerlaw_exponent": powerlaw_exponent(freq),
        "top1pct_share": sum(top) / max(1, sum(freq)),
        "singleton_share": sum(1 for f in freq if f == 1) / len(freq),
        "distinct_per_playlist_median": _median(distinct),
        "distinct_per_playlist_mean": sum(distinct) / n,
        "repeat_share": 1 - sum(distinct) / max(1, entries),
        "artists_per_playlist_median": _median(artists),
        "artists_per_playlist_mean": sum(artists) / n,
        "artists_per_distinct_track": sum(artists) / max(1, sum(distinct)),
    }


def rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) pairs of one data set, in table order."""
    out = [("playlists", f"{stats['playlists']:,}"), ("distinct tracks", f"{stats['distinct_tracks']:,}"),
           ("length median / mean", f"{stats['length_median']:.0f} / {stats['length_mean']:.1f}")]
    out += [(f"  length {k}", f"{v:.1%}") for k, v in stats["length_hist"].items() if k != "other" or v]
    out += [
        ("popularity exponent a", f"{stats['powerlaw_exponent']:.2f}"),
        ("  top 1% tracks' share", f"{stats['top1pct_share']:.1%}"),
        ("  tracks in 1 playlist", f"{stats['singleton_share']:.1%}"),
        ("distinct tracks/playlist med/mean", f"{stats['distinct_per_playlist_median']:.0f} / "
                                              f"{stats['distinct_per_playlist_mean']:.1f}"),
        ("  repeated entries", f"{stats['repeat_share']:.2%}"),
        ("artists/playlist med/mean", f"{stats['artists_per_playlist_median']:.0f} / "
                                      f"{stats['artists_per_playlist_mean']:.1f}"),
        ("  artists per distinct track", f"{stats['artists_per_distinct_track']:.2f}"),
    ]
    return out


def table(columns: dict[str, dict[str, Any]]) -> str:
    """Several data sets' statistics side by side; ``columns`` maps a column title to ``shape()``'s result."""
    labels = [label for label, _ in rows(next(iter(columns.values())))]
    cells = {title: dict(rows(stats)) for title, stats in columns.items()}
    head = ["statistic", *columns]
    body = [[label, *(cells[t].get(label, "") for t in columns)] for label in labels]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                               strict=True)))

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *(fmt(line) for line in body)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help=f"real slices (default: {DEFAULT_REAL})")
    parser.add_argument("--playlists", type=int, default=None,
                        help="demo playlists to generate (default: as many as the real sample has)")
    parser.add_argument("--seed", type=int, default=0, help="demo seed (default 0)")
    parser.add_argument("--demo", type=Path, action="append", default=[],
                        help="existing demo slices (file or folder) instead of generating; repeat for more columns")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"JSON output (default: {DEFAULT_JSON})")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    columns: dict[str, dict[str, Any]] = {}
    if args.real.exists():
        columns[f"real ({args.real.name})"] = shape([args.real])
    else:
        print(f"bench/data_shape.py: no real sample at {args.real}; showing the demo only", file=sys.stderr)
    n = args.playlists or (columns[next(iter(columns))]["playlists"] if columns else 7065)
    seconds = None
    if args.demo:
        for path in args.demo:
            columns[f"demo {path.name}"] = shape([path])
    else:
        from ingestion.demo import write_demo_slices

        with tempfile.TemporaryDirectory(prefix="buddies-shape-") as tmp:
            started = time.perf_counter()
            write_demo_slices(tmp, playlists=n, seed=args.seed)
            seconds = time.perf_counter() - started
            columns[f"demo (seed {args.seed})"] = shape([tmp])
    print(table(columns))
    if seconds is not None:
        print(f"\ndemo: {n:,} playlists generated in {seconds:.1f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "bench/data_shape.py", "generate_seconds": seconds,
                                     "columns": columns}, indent=2) + "\n")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
