#!/usr/bin/env python
"""Mood search and the text model on the real MPD sample: held-out playlist names as queries.

    .venv/bin/python bench/search.py [--data ../shared/data/mpd-real] [--queries 1000] [--seed 0] [--json PATH]

``--queries`` named playlists with at least 10 tracks are held out, seeded: their names and tracks are removed
before the text model (``ranker.recommenders.text.TextModel``) and today's title fallback (``TitleIndex``) are
fitted on the rest. Each held-out name is then a query:

- **tracks**: 500 tracks for the name (topped up from popularity, as serving does), scored by R-precision, NDCG and
  clicks against the playlist's own tracks (``ranker.evaluation.metrics``), for the text model, the title index and
  popularity alone;
- **playlists**: the 10 nearest-named training playlists against the 10 most-followed: how many of the query
  playlist's tracks they hold (mean per returned playlist, and the share of the query's tracks covered by the ten).

Then a table of example mood queries with their top results, and the in-process latency of one search (k=10).
Reads the slices directly (no store). The tables go to stdout, the numbers as JSON to ``var/bench/search.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import REPO, machine_facts, setup_django  # noqa: E402

EXAMPLES = ("lo-fi for studying", "rainy day sad songs", "workout", "road trip", "chill vibes", "throwback 2000s",
            "country summer", "christmas", "beast mode gym", "sleepy time")


def load(data: Path) -> Any:
    from ingestion.mpd import decode_slice, validate_playlist
    from ranker.training.data import Playlists

    docs = []
    for path in sorted(data.glob("*.json")):
        for i, raw in enumerate(decode_slice(path.read_bytes(), name=path.name)):
            doc = validate_playlist(raw, file=path.name, index=i)
            if isinstance(doc, dict):
                docs.append(doc)
    return Playlists.from_docs(docs), {d["_id"]: d for d in docs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mpd-real"))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(REPO / "var" / "bench" / "search.json"))
    args = parser.parse_args()
    setup_django("recsys_site.settings.test")

    from ranker.evaluation import metrics
    from ranker.evaluation.harness import complete
    from ranker.recommenders import topk
    from ranker.recommenders.text import TextModel
    from ranker.recommenders.title import TitleIndex
    from ranker.training.data import rows_matrix

    started = time.perf_counter()
    pl, docs = load(Path(args.data))
    rng = np.random.default_rng(args.seed)
    sizes = pl.lengths()
    eligible = np.flatnonzero((sizes >= 10) & np.asarray([bool(n) for n in pl.names]))
    held = np.sort(rng.choice(eligible, size=min(args.queries, len(eligible)), replace=False))
    rows = [pl.tracks_of(i) for i in range(len(pl))]
    names = list(pl.names)
    for r in held:
        rows[r] = np.zeros(0, dtype=np.int32)
        names[r] = ""
    train = rows_matrix(rows, pl.n_items)
    t0 = time.perf_counter()
    text = TextModel().fit(names, train, item_names=pl.item_name, item_artists=pl.item_artist_name)
    fit_s = time.perf_counter() - t0
    titles = TitleIndex().fit(names, train)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    by_pop = np.argsort(-popularity, kind="stable")
    truth = {int(r): np.unique(pl.tracks_of(r)) for r in held}
    queries = [pl.names[r] for r in held]

    def score(scores: np.ndarray) -> list[np.ndarray]:
        ids, top = topk(scores, 500)
        return [complete(np.where(t > 0, i, -1), by_pop) for i, t in zip(ids, top, strict=True)]

    ranked: dict[str, list[np.ndarray]] = {"text model": [], "title index (today)": [], "popularity": []}
    for start in range(0, len(held), 100):
        batch = queries[start:start + 100]
        ranked["text model"] += score(text.scores(batch, pl.n_items))
        ranked["title index (today)"] += score(titles.scores(batch, pl.n_items))
        ranked["popularity"] += [by_pop[:500]] * len(batch)
    track_rows = {}
    for method, lists in ranked.items():
        per = [metrics.track_metrics(top.tolist(), truth[int(r)].tolist(), {}) for r, top in zip(held, lists,
                                                                                                  strict=True)]
        track_rows[method] = metrics.mean_metrics(per)

    followed = np.argsort(-pl.followers * (np.asarray([len(r) for r in rows]) > 0), kind="stable")[:10]
    playlist_rows: dict[str, dict[str, float]] = {}
    for method in ("text model (nearest names)", "most followed"):
        shared, covered = [], []
        for r, q in zip(held, queries, strict=True):
            found = [m.index for m in text.search_playlists(q, 10)] if method.startswith("text") else followed
            own = set(truth[int(r)].tolist())
            sets = [set(rows[p].tolist()) for p in found]
            shared.append(np.mean([len(own & s) for s in sets]) if sets else 0.0)
            covered.append(len(own & set().union(*sets)) / len(own) if sets else 0.0)
        playlist_rows[method] = {"shared_tracks_per_playlist": float(np.mean(shared)),
                                 "query_tracks_covered": float(np.mean(covered))}

    examples = []
    for q in EXAMPLES:
        lists = [(pl.names[m.index], round(m.similarity, 2)) for m in text.search_playlists(q, 3)]
        matches, sims = text.search_tracks(q, 3)
        tracks = [f"{pl.item_name[m.index]} — {pl.item_artist_name[m.index]}" for m in matches]
        via = [pl.names[p] for p in text.playlists_holding(matches[0].index, sims, 2)] if matches else []
        examples.append({"query": q, "playlists": lists, "tracks": tracks, "first_track_via": via})

    latency = []
    for q in queries[:200]:
        t = time.perf_counter()
        text.search_tracks(q, 10)
        latency.append(time.perf_counter() - t)
    lat = {"p50_ms": 1000 * float(np.percentile(latency, 50)), "p99_ms": 1000 * float(np.percentile(latency, 99))}

    print(f"{len(pl):,} playlists, {pl.n_items:,} tracks; {len(held)} held-out names as queries; "
          f"text model: {len(text.vocab):,} features, fitted in {fit_s:.1f} s\n")
    print("Tracks for a held-out playlist's name (500, topped up from popularity):\n")
    print("| method | R-precision | NDCG | clicks |\n|---|---|---|---|")
    for method, r in track_rows.items():
        print(f"| {method} | {r['r_precision']:.4f} | {r['ndcg']:.4f} | {r['clicks']:.2f} |")
    print("\nPlaylists for a held-out playlist's name (10):\n")
    print("| method | its tracks held per returned playlist | share of its tracks covered by the 10 |\n|---|---|---|")
    for method, r in playlist_rows.items():
        print(f"| {method} | {r['shared_tracks_per_playlist']:.2f} | {r['query_tracks_covered']:.3f} |")
    print("\nExample mood queries:\n")
    print("| query | top playlists (similarity) | top tracks | first track via |\n|---|---|---|---|")
    for e in examples:
        lists = "; ".join(f"{n} ({s})" for n, s in e["playlists"])
        print(f"| {e['query']} | {lists} | {'; '.join(e['tracks'])} | {'; '.join(e['first_track_via'])} |")
    print(f"\nOne search (tracks, k=10) in process: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; "
          f"done in {time.perf_counter() - started:.0f} s")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_facts("numpy", "scipy"), "queries": len(held), "seed": args.seed,
                               "fit_seconds": fit_s, "features": len(text.vocab), "tracks": track_rows,
                               "playlists": playlist_rows, "examples": examples, "latency": lat}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
