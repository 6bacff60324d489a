#!/usr/bin/env python
"""Throughput of ``ingest_mpd`` next to a raw pymongo ``insert_many`` of the same documents, in one run.

    .venv/bin/python bench/ingest.py [--data PATH] [--repeat N] [--json PATH] [--profile]

Contenders, on the same data and the same server, each in its own fresh database:

1. ``ingest_mpd, first run``: ``mpd_ingest`` with everything new (validation, playlists, users, catalogue);
2. ``ingest_mpd, second run``: the same files again, all skipped by sha256;
3. ``parse+validate only``: read + JSON decode + ``validate_playlist``, no database (what 4 and 5 leave out);
4. ``raw insert_many playlists``: the playlist documents exactly as ``validate_playlist`` produces them;
5. ``raw insert_many playlists+tracks``: the same plus one track document per distinct track URI, counted
   in Python (the counting is inside the timing): what a hand-written loader would do;
6. ``raw insert_many playlists+tracks, indexed``: 5 into a database that has the project's indexes
   (``ensure_indexes()``, as ingest_mpd's database has), to separate the server's index upkeep from the rest.

Contenders 4 to 6 write into databases without other collections: no users, artists or run bookkeeping.

``--zip-slices 4,16`` adds the scale check: for each size, that many 1,000-playlist demo slices
(``make_demo_data``, seed 0) are zipped like the official ``spotify_million_playlist_dataset.zip`` and ingested
in place by ``manage.py ingest_mpd`` in a child process, each into its own empty database; the table gives the
child's peak RSS (``getrusage``), seconds and playlists/s, so memory and per-playlist cost can be read against
the input size. ``--zip-only`` skips the real-sample contenders.

Unless ``MONGO_URI`` is set, an embedded SecantusDB is started on a free port with its storage in a
temporary directory, and stopped at the end (also on error or Ctrl-C). The table goes to stdout, the
same numbers as JSON to ``var/bench/ingest.json`` (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mpd-real"
DEFAULT_JSON = REPO / "var" / "bench" / "ingest.json"
PLAYLIST_BATCH = 1000  # one MPD slice, as ingest_mpd writes one bulk per file
TRACK_BATCH = 10_000

FIRST, SECOND, PARSE, RAW_P, RAW_PT, RAW_PTI = (
    "ingest_mpd, first run",
    "ingest_mpd, second run (all skipped)",
    "parse+validate only (no DB)",
    "raw insert_many playlists",
    "raw insert_many playlists+tracks",
    "raw insert_many playlists+tracks, indexed",
)
ORDER = [FIRST, SECOND, PARSE, RAW_P, RAW_PT, RAW_PTI]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder of mpd.slice.*.json files (default: {DEFAULT_DATA})")
    parser.add_argument("--repeat", type=int, default=1, help="run every contender N times (default 1); "
                        "the table shows the median, the JSON every run")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write JSON (default: {DEFAULT_JSON})")
    parser.add_argument("--profile", action="store_true",
                        help="also run mpd_ingest under cProfile (once, in its own database, not timed) and print "
                        "the top functions; stats go next to the JSON as ingest.prof")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--zip-slices", default="", metavar="N,M,...",
                        help="also ingest zips of N, M, ... demo slices in a child process and report its peak RSS")
    parser.add_argument("--zip-only", action="store_true", help="only the --zip-slices runs")
    args = parser.parse_args()
    try:
        args.zip_sizes = [int(x) for x in args.zip_slices.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--zip-slices takes whole numbers separated by commas, got {args.zip_slices!r}")
    if any(n < 1 for n in args.zip_sizes):
        parser.error("--zip-slices: every size must be at least 1")
    if args.zip_only and not args.zip_sizes:
        parser.error("--zip-only needs --zip-slices")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def setup_django() -> None:
    _common.setup_django("recsys_site.settings.local")


# --- databases ---------------------------------------------------------------------------------------------------
def use_db(name: str, *, indexes: bool) -> Any:
    from django.conf import settings

    from recsys_site.mongo import close_clients, ensure_indexes, get_db

    settings.MONGO_DB = name
    close_clients()
    if indexes:
        ensure_indexes()
    return get_db()


def doc_counts(db: Any) -> dict[str, int]:
    return {name: db[name].count_documents({}) for name in sorted(db.list_collection_names())}


def created(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.values()) - sum(before.values())


# --- data --------------------------------------------------------------------------------------------------------
def load(sources: list[Any], *, progress: bool) -> tuple[list[dict[str, Any]], int, float]:
    """Read + decode + validate every slice as ingest_mpd does; return (good docs, rejected, seconds)."""
    from tqdm import tqdm

    from ingestion.mpd import Problem, decode_slice, validate_playlist

    docs: list[dict[str, Any]] = []
    rejected = 0
    started = time.perf_counter()
    for source in tqdm(sources, desc="parse+validate", unit="file", disable=not progress):
        raw_playlists = decode_slice(source.read(), name=source.name)
        for index, raw in enumerate(raw_playlists):
            doc = validate_playlist(raw, file=source.name, index=index)
            if isinstance(doc, Problem):
                rejected += 1
            else:
                docs.append(doc)
    return docs, rejected, time.perf_counter() - started


def track_docs(playlists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One document per distinct track URI with the same counts and fields as ingest_mpd's catalogue."""
    from ingestion.services import TRACK_META_FIELDS

    num_playlists: Counter = Counter()
    num_occurrences: Counter = Counter()
    meta: dict[str, dict[str, Any]] = {}
    for playlist in playlists:
        uris = set()
        for track in playlist["tracks"]:
            num_occurrences[track["uri"]] += 1
            meta[track["uri"]] = track
            uris.add(track["uri"])
        num_playlists.update(uris)
    out = []
    for uri, track in meta.items():
        doc = {"_id": uri, "num_playlists": num_playlists[uri], "num_occurrences": num_occurrences[uri]}
        doc.update({k: track[k] for k in TRACK_META_FIELDS if k in track})
        out.append(doc)
    return out


def insert_batches(collection: Any, docs: list[dict[str, Any]], batch: int, bar: Any) -> None:
    for start in range(0, len(docs), batch):
        part = docs[start : start + batch]
        collection.insert_many(part, ordered=False)
        bar.update(len(part))


# --- one repetition ----------------------------------------------------------------------------------------------
def run_once(rep: int, paths: list[str], sources: list[Any], tag: str, *, progress: bool,
             dbs: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    from tqdm import tqdm

    from ingestion.services import mpd_ingest

    results: list[dict[str, Any]] = []

    # (1) and (2): the service, twice on the same database.
    name = f"{tag}_r{rep}_ingest"
    dbs.append(name)
    db = use_db(name, indexes=True)
    before = doc_counts(db)
    started = time.perf_counter()
    first = mpd_ingest(paths=paths, show_progress=progress)
    seconds = time.perf_counter() - started
    after = doc_counts(db)
    results.append({"contender": FIRST, "seconds": seconds, "documents": created(before, after),
                    "detail": {"report": first.summary(), "problems": len(first.problems), "collections": after}})
    before = after
    started = time.perf_counter()
    second = mpd_ingest(paths=paths, show_progress=progress)
    seconds = time.perf_counter() - started
    after = doc_counts(db)
    results.append({"contender": SECOND, "seconds": seconds, "documents": created(before, after),
                    "detail": {"report": second.summary(), "files_skipped": second.files_skipped}})
    if second.files_skipped != len(sources):
        print(f"warning: the second run skipped {second.files_skipped} of {len(sources)} files", file=sys.stderr)

    # (3) parse + validate, outside any timing of the raw inserts.
    docs, rejected, seconds = load(sources, progress=progress)
    rows = sum(len(d["tracks"]) for d in docs)
    results.append({"contender": PARSE, "seconds": seconds, "documents": 0, "detail": {"rejected": rejected}})
    if len(docs) != first.new:
        print(f"warning: validate_playlist kept {len(docs)} playlists, ingest_mpd stored {first.new} new",
              file=sys.stderr)

    # (4) raw playlists.
    name = f"{tag}_r{rep}_raw_playlists"
    dbs.append(name)
    db = use_db(name, indexes=False)
    with tqdm(total=len(docs), desc="raw playlists", unit="playlist", disable=not progress) as bar:
        started = time.perf_counter()
        insert_batches(db["playlists"], docs, PLAYLIST_BATCH, bar)
        seconds = time.perf_counter() - started
    results.append({"contender": RAW_P, "seconds": seconds, "documents": sum(doc_counts(db).values()),
                    "detail": {}})

    # (5) and (6): raw playlists + derived tracks (counting in Python is part of the timing), without and
    # with the project's indexes.
    tracks: list[dict[str, Any]] = []
    for contender, suffix, indexed in ((RAW_PT, "raw_tracks", False), (RAW_PTI, "raw_tracks_indexed", True)):
        name = f"{tag}_r{rep}_{suffix}"
        dbs.append(name)
        db = use_db(name, indexes=indexed)
        before = doc_counts(db)
        started = time.perf_counter()
        tracks = track_docs(docs)
        count_seconds = time.perf_counter() - started
        with tqdm(total=len(docs) + len(tracks), desc=contender.removeprefix("raw insert_many "), unit="doc",
                  disable=not progress) as bar:
            insert_batches(db["playlists"], docs, PLAYLIST_BATCH, bar)
            insert_batches(db["tracks"], tracks, TRACK_BATCH, bar)
            seconds = time.perf_counter() - started
        results.append({"contender": contender, "seconds": seconds, "documents": created(before, doc_counts(db)),
                        "detail": {"count_tracks_seconds": round(count_seconds, 3), "tracks": len(tracks)}})
    data = {"playlists": len(docs), "rows": rows, "rejected": rejected, "distinct_tracks": len(tracks)}
    return results, data


def profile_ingest(paths: list[str], tag: str, out: Path, dbs: list[str]) -> str:
    from ingestion.services import mpd_ingest

    name = f"{tag}_profile"
    dbs.append(name)
    use_db(name, indexes=True)
    profiler = cProfile.Profile()
    profiler.runcall(mpd_ingest, paths=paths, show_progress=False)
    profiler.dump_stats(out)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)
    return text.getvalue()


# --- zip at scale: memory and rate in a child process ---------------------------------------------------------
def make_zip(folder: Path, slices: int) -> tuple[Path, int]:
    """``slices`` demo slices of 1,000 playlists zipped under ``data/`` like the official MPD zip."""
    import zipfile

    from ingestion.demo import write_demo_slices

    raw = folder / f"slices_{slices}"
    paths = write_demo_slices(raw, playlists=slices * 1000, seed=0, slice_size=1000)
    archive = folder / f"mpd_{slices}_slices.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for path in paths:
            z.write(path, f"data/{path.name}")
            path.unlink()
    raw.rmdir()
    return archive, sum(z.file_size for z in zipfile.ZipFile(archive).infolist())


def ingest_zip_child(archive: Path, db_name: str, uri: str) -> dict[str, Any]:
    """``manage.py ingest_mpd ARCHIVE`` in a child process; its peak RSS, seconds and summary line."""
    import subprocess

    script = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "t = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(r.returncode, t, rss, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-500:],"
        " sep='\\t')\n"
    )
    env = {**os.environ, "MONGO_URI": uri, "MONGO_DB": db_name, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.local",
           "LOG_LEVEL": "WARNING"}
    # A fresh wrapper process per run: RUSAGE_CHILDREN then holds exactly this one ingest's peak.
    out = subprocess.run([sys.executable, "-c", script, sys.executable, str(REPO / "manage.py"), "ingest_mpd",
                          str(archive), "--no-progress"], env=env, capture_output=True, text=True, check=True)
    code, seconds, rss_kb, line = out.stdout.strip().split("\t", 3)
    return {"returncode": int(code), "seconds": float(seconds), "peak_rss_mb": int(rss_kb) / 1024, "summary": line}


def zip_runs(sizes: list[int], tag: str, uri: str, dbs: list[str], *, progress: bool) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="buddies-bench-zip-") as tmp:
        for slices in sizes:
            if progress:
                print(f"zip of {slices} demo slices: generating ...", file=sys.stderr)
            archive, uncompressed = make_zip(Path(tmp), slices)
            name = f"{tag}_zip{slices}"
            dbs.append(name)
            if progress:
                print(f"zip of {slices} demo slices: ingesting {archive.stat().st_size / 1e6:.0f} MB ...",
                      file=sys.stderr)
            result = ingest_zip_child(archive, name, uri)
            if result["returncode"] != 0:
                print(f"warning: ingest_mpd exited {result['returncode']}: {result['summary']}", file=sys.stderr)
            rows.append({"slices": slices, "playlists": slices * 1000, "zip_mb": archive.stat().st_size / 1e6,
                         "uncompressed_mb": uncompressed / 1e6, **result,
                         "playlists_per_s": slices * 1000 / result["seconds"]})
            archive.unlink()
    return rows


def zip_table(rows: list[dict[str, Any]]) -> str:
    head = ("slices", "playlists", "zip MB", "JSON MB", "seconds", "playlists/s", "peak RSS MB")
    body = [(str(r["slices"]), f"{r['playlists']:,}", f"{r['zip_mb']:,.0f}", f"{r['uncompressed_mb']:,.0f}",
             f"{r['seconds']:.1f}", f"{r['playlists_per_s']:,.0f}", f"{r['peak_rss_mb']:,.0f}") for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    lines = [head, tuple("-" * w for w in widths), *body]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines)


# --- report ------------------------------------------------------------------------------------------------------
def summarise(runs: list[list[dict[str, Any]]], data: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for contender in ORDER:
        secs = [r["seconds"] for run in runs for r in run if r["contender"] == contender]
        docs = [r["documents"] for run in runs for r in run if r["contender"] == contender]
        median = statistics.median(secs)
        rows.append({
            "contender": contender,
            "seconds": round(median, 3),
            "seconds_all": [round(s, 3) for s in secs],
            "playlists_per_s": round(data["playlists"] / median, 1),
            "rows_per_s": round(data["rows"] / median, 1),
            "documents_written": docs[0],
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("contender", "seconds", "playlists/s", "rows/s", "documents written")
    body = [(r["contender"], f"{r['seconds']:.2f}", f"{r['playlists_per_s']:,.0f}", f"{r['rows_per_s']:,.0f}",
             f"{r['documents_written']:,}") for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:
        cells = zip(line, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *(fmt(line) for line in body)])


def machine_facts(embedded: bool) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import pymongo

    from recsys_site.mongo import get_client

    info = get_client().server_info()
    facts = {
        **_common.machine_facts(),
        "pymongo": pymongo.version,
        "server_version": info.get("version", "unknown"),
        "server": "embedded SecantusDB (temporary storage)" if embedded else "MONGO_URI",
    }
    with contextlib.suppress(PackageNotFoundError):
        facts["secantusdb_package"] = version("secantusdb")
    return facts


def main() -> int:
    args = parse_args()
    data_path = args.data.expanduser().resolve()
    if not data_path.exists() and not args.zip_only:
        sys.exit(f"bench/ingest.py: no MPD data at {data_path}\n"
                 "  the real sample lives in ../shared/data/mpd-real beside the repository; pass --data PATH")
    setup_django()
    from django.conf import settings

    from ingestion.mpd import Problem, iter_sources
    from recsys_site.embedded import free_port, mongo_server
    from recsys_site.mongo import close_clients, get_client

    items = [] if args.zip_only else list(iter_sources([data_path]))
    problems = [i for i in items if isinstance(i, Problem)]
    if problems:
        sys.exit(f"bench/ingest.py: {problems[0]}")
    sources = items
    progress = not args.no_progress

    # SIGTERM should clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = tmp = None
    dbs: list[str] = []
    embedded = not os.environ.get("MONGO_URI")
    try:
        if embedded:
            tmp = Path(tempfile.mkdtemp(prefix="buddies-bench-"))
            server = mongo_server(tmp, free_port())
            print(f"starting an embedded SecantusDB in {tmp} ...", file=sys.stderr)
            settings.MONGO_URI = server.start()
        else:
            settings.MONGO_URI = os.environ["MONGO_URI"]
        close_clients()
        facts = machine_facts(embedded)
        tag = f"bench_ingest_{uuid.uuid4().hex[:8]}"
        paths = [str(data_path)]
        runs = []
        data: dict[str, int] = {}
        for rep in range(0 if args.zip_only else args.repeat):
            if args.repeat > 1:
                print(f"--- repetition {rep + 1}/{args.repeat}", file=sys.stderr)
            results, data = run_once(rep, paths, sources, tag, progress=progress, dbs=dbs)
            runs.append(results)
        profile_text = None
        if args.profile and not args.zip_only:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            profile_text = profile_ingest(paths, tag, args.json.with_name("ingest.prof"), dbs)
        zips = zip_runs(args.zip_sizes, tag, settings.MONGO_URI, dbs, progress=progress) if args.zip_sizes else []
        rows = summarise(runs, data) if runs else []
        size = sum(s.path.stat().st_size for s in sources)
        out = {
            "benchmark": "bench/ingest.py",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "data": {"path": str(data_path), "files": len(sources), "bytes": size, **data},
            "machine": facts,
            "settings": {"repeat": args.repeat, "playlist_batch": PLAYLIST_BATCH, "track_batch": TRACK_BATCH},
            "results": rows,
            "runs": runs,
            "zip_runs": zips,
        }
        if rows:
            by = {r["contender"]: r for r in rows}
            out["first_run_vs_raw_playlists_tracks"] = round(by[RAW_PT]["seconds"] / by[FIRST]["seconds"], 3)
        _common.write_json(args.json, out)

        print()
        print(f"machine: {facts['cores']} cores ({facts['cpu']}), Python {facts['python']}, "
              f"pymongo {facts['pymongo']}, server {facts['server_version']}"
              + (f" (secantusdb {facts['secantusdb_package']})" if "secantusdb_package" in facts else ""))
        if rows:
            print(f"data: {data_path} ({len(sources)} files, {size / 1e6:.1f} MB): {data['playlists']:,} playlists, "
                  f"{data['rows']:,} playlist-track rows, {data['distinct_tracks']:,} distinct tracks, "
                  f"{data['rejected']:,} rejected")
            print(f"median of {args.repeat} run(s); rows = playlist-track rows\n")
            print(table(rows))
            print(f"\ningest_mpd first run against raw insert_many playlists+tracks, same run: "
                  f"{out['first_run_vs_raw_playlists_tracks']:.2f}x the raw rate")
        if zips:
            print("\nzips of demo slices (seed 0) ingested in place by manage.py ingest_mpd, each into an empty "
                  "database; peak RSS of the child process:\n")
            print(zip_table(zips))
        print(f"\nJSON: {args.json}")
        if profile_text:
            print(f"\nprofile of one mpd_ingest first run ({args.json.with_name('ingest.prof')}):\n{profile_text}")
        return 0
    finally:
        if not embedded and dbs:
            # A server we did not start: leave it as we found it.
            with contextlib.suppress(Exception):
                for name in dbs:
                    get_client().drop_database(name)
        close_clients()
        if server is not None:
            server.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
