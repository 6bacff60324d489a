#!/usr/bin/env python
"""Playlist-vector search for playlist picks: a flat index against the product's IVF and scikit-learn, per size.

    .venv/bin/python bench/playlist_search.py [--sizes 200000 1000000] [--queries 2000] [--n 100] [--nprobe 8 32]
                                              [--version FOLDER] [--threads 2] [--json PATH]

Playlist picks take each user's ``n`` (100) nearest playlist vectors as candidates
(``ranker.recommenders.playlists.PlaylistSpace.nearest_many``). It searches exactly (a flat index) up to
``SEARCH_EXACT_MAX`` candidate playlists and, above, with ``ranker.recommenders.ann.inner_product_index``'s IVF
(lists of about 1,000, ``SEARCH_NPROBE`` probed), the track candidates' index. A flat search scans every playlist
per user, so picks for every user cost U × N: is that still affordable at the MPD's size? Data: synthetic 64-d taste
vectors (``_common.taste_data``: as many playlists as the size, ``--queries`` users drawn with another seed), or a
stored model version's playlists (``--version``). Contenders at each size:

1. ``faiss flat``: ``inner_product_index`` forced exact: the reference for recall;
2. ``faiss ivf``: ``inner_product_index`` forced IVF, one row per ``--nprobe`` (the product's marked);
3. ``sklearn brute (cosine)``: ``NearestNeighbors(metric="cosine", algorithm="brute")``, the peer.

The table goes to stdout, the same numbers as JSON to ``var/bench/playlist_search.json`` (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "var" / "bench" / "playlist_search.json"
DIM = 64  # the BPR part's factors: a playlist's vector is the mean of its tracks'
SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000], help="playlists")
    parser.add_argument("--queries", type=int, default=2000, help="users searched (default 2000)")
    parser.add_argument("--n", type=int, default=100, help="nearest playlists per user (default 100)")
    parser.add_argument("--nprobe", type=int, nargs="+",
                        help="IVF lists scanned per user, one row each (default: the product's)")
    parser.add_argument("--version", type=Path, help="a model version's folder (var/models/ranker/…): its playlists' "
                        "vectors from its BPR part instead of synthetic ones; the users are its playlists (--sizes is "
                        "ignored)")
    parser.add_argument("--threads", type=int, default=2, help="threads for FAISS and scikit-learn (default 2)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write JSON ({DEFAULT_JSON})")
    args = parser.parse_args()
    if min(args.sizes) <= args.n or min(args.queries, args.n, args.threads) < 1:
        parser.error("--queries, --n and --threads must be positive and every size larger than --n")
    return args


def version_vectors(folder: Path) -> Any:
    """The playlists' taste vectors of a stored model version, as ``PlaylistSpace`` computes them."""
    import json

    import numpy as np
    import scipy.sparse as sp

    from ranker.recommenders.vectors import taste_vectors

    parts = json.loads((folder / "recommender.json").read_text())["components"]
    bpr = next(p["file"] for p in parts if p["file"].endswith(".bpr")).removesuffix(".bpr")  # recommender.N
    with np.load(folder / "data.npz", allow_pickle=False) as d, \
            np.load(folder / f"{bpr}.npz", allow_pickle=False) as m:
        items = sp.csr_matrix((np.ones(len(d["indices"]), dtype=np.float32), d["indices"], d["indptr"]),
                              shape=tuple(d["shape"]))
        return taste_vectors(m["item_factors"], items)


def run_size(size: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    from ranker.recommenders.ann import inner_product_index

    if args.version:
        playlists = version_vectors(args.version)
        size = len(playlists)
        users = playlists[np.random.default_rng(SEED).choice(size, size=min(size, args.queries), replace=False)]
    else:
        playlists = _common.taste_data(size, DIM, SEED)
        users = _common.taste_data(args.queries, DIM, SEED + 1)
    rows = []

    def faiss_row(name: str, exact_max: int, nprobe: int = 1) -> np.ndarray:
        index, build = _common.timed(lambda: inner_product_index(playlists, exact_max=exact_max, nprobe=nprobe))
        (_, ids), search = _common.timed(lambda: index.search(users, args.n))
        settings = (f"nlist {index.nlist}, nprobe {index.nprobe}" if hasattr(index, "nprobe") else "exact")
        rows.append({"contender": name, "playlists": size, "build_s": build, "search_s": search, "ids": ids,
                     "settings": settings})
        return ids

    reference = faiss_row("faiss flat", exact_max=size)
    for nprobe in args.nprobe:
        label = "faiss ivf (product)" if nprobe == args.product_nprobe else "faiss ivf"
        faiss_row(label, exact_max=size - 1, nprobe=nprobe)
    model, build = _common.timed(lambda: NearestNeighbors(n_neighbors=args.n, metric="cosine", algorithm="brute",
                                                  n_jobs=args.threads).fit(playlists))
    ids, search = _common.timed(lambda: model.kneighbors(users, return_distance=False))
    rows.append({"contender": "sklearn brute (cosine)", "playlists": size, "build_s": build, "search_s": search,
                 "ids": ids, "settings": "brute force"})
    for row in rows:
        found = row.pop("ids")
        row["recall"] = float(np.mean([len(set(a) & set(b)) / args.n for a, b in zip(found, reference, strict=True)]))
        row["ms_per_user"] = 1000 * row["search_s"] / len(users)
    return rows


def table(rows: list[dict[str, Any]], n: int) -> str:
    head = ("contender", "playlists", "build s", "search ms/user", f"recall@{n}", "settings")
    lines = ["| " + " | ".join(head) + " |", "|---|--:|--:|--:|--:|---|"]
    for r in rows:
        lines.append(f"| {r['contender']} | {r['playlists']:,} | {r['build_s']:.2f} | {r['ms_per_user']:.3f} | "
                     f"{r['recall']:.4f} | {r['settings']} |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before the runtimes load
        os.environ[name] = str(args.threads)
    sys.path.insert(0, str(REPO))
    import faiss
    import sklearn
    from threadpoolctl import threadpool_limits

    from ranker.recommenders.playlists import SEARCH_NPROBE

    args.product_nprobe = SEARCH_NPROBE
    args.nprobe = args.nprobe or [SEARCH_NPROBE]
    faiss.omp_set_num_threads(args.threads)
    facts = {**_common.machine_facts(), "faiss": faiss.__version__, "sklearn": sklearn.__version__}
    rows = []
    with threadpool_limits(args.threads):
        for size in [0] if args.version else args.sizes:
            print(f"--- {size:,} playlists", file=sys.stderr)
            rows.extend(run_size(size, args))
    _common.write_json(args.json, {
        "benchmark": "bench/playlist_search.py", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": facts,
        "settings": {"queries": args.queries, "n": args.n, "threads": args.threads, "dim": DIM, "seed": SEED},
        "results": rows})
    data = (f"the playlists of {args.version} (BPR taste vectors), {args.queries:,} of them as users"
            if args.version else f"synthetic {DIM}-d taste vectors around {_common.GENRES} genres, {args.queries:,} "
            "users drawn apart")
    print(f"\ndata: {data}; their {args.n} nearest playlists each")
    print(f"machine: {facts['cores']} cores ({facts['cpu']}), {args.threads} threads, faiss {facts['faiss']}, "
          f"scikit-learn {facts['sklearn']}\n")
    print(table(rows, args.n))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
