#!/usr/bin/env python
"""Cosine top-K taste buddies: FAISS exact, scikit-learn brute force, FAISS IVF and FAISS HNSW, in one run per size.

    .venv/bin/python bench/pairing.py [--sizes 10000 100000] [--dim 64] [--k 50] [--threads 2] [--queries N]
                                      [--device cpu|cuda] [--json PATH]

Data: synthetic taste vectors, seeded: each user is one of 300 unit "genre" centres (Zipf-popular, as genres
are), plus 0.4 of a second random genre, plus Gaussian noise of norm about 1, L2-normalised. Every user is a
query and the self match is dropped, as in ``pairing.knn``. Contenders at each size:

1. ``faiss exact``: ``pairing.knn.exact_topk`` (``IndexFlatIP``, batches of 8,192): the reference for recall;
2. ``sklearn brute``: ``NearestNeighbors(metric="cosine", algorithm="brute", n_jobs=threads).kneighbors``. When a
   probe on 2,000 seeded queries predicts more than ``--sklearn-budget`` seconds for all of them (or with
   ``--queries N``), it runs on that seeded subset only and its seconds are scaled to all users (marked ``~``);
3. ``faiss ivf``: ``pairing.knn.ann_topk(method="ivf")`` (nlist about 4·sqrt(n), ``--nprobe``);
4. ``faiss hnsw``: ``pairing.knn.ann_topk(method="hnsw")`` (``--hnsw-m``, ``--ef-search``; CPU only).

FAISS and the BLAS/OpenMP pools under scikit-learn get the same ``--threads``. The table goes to stdout, the same
numbers as JSON to ``var/bench/pairing.json`` (or ``--json PATH``).
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
DEFAULT_JSON = REPO / "var" / "bench" / "pairing.json"
PROBE = 2000
SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="users (default 10000 100000)")
    parser.add_argument("--dim", type=int, default=64, help="taste vector dimensions (default 64)")
    parser.add_argument("--k", type=int, default=50, help="buddies per user (default 50)")
    parser.add_argument("--queries", type=int, help="run scikit-learn on this many seeded queries and scale its "
                        "seconds (default: all users, unless the probe predicts more than --sklearn-budget)")
    parser.add_argument("--sklearn-budget", type=float, default=180.0,
                        help="seconds scikit-learn may take on all users before it runs on the probe only (180)")
    parser.add_argument("--threads", type=int, default=2, help="threads for FAISS and scikit-learn (default 2)")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per query (default 16)")
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node (default 32)")
    parser.add_argument("--ef-search", type=int, default=128, help="HNSW search candidates (default 128)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where FAISS exact and IVF search (HNSW stays on the CPU; needs faiss-gpu for cuda)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write JSON (default: {DEFAULT_JSON})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if min(args.sizes) <= args.k or args.k < 1 or args.threads < 1 or (args.queries is not None and args.queries < 1):
        parser.error("--k, --threads and --queries must be positive and every size larger than --k")
    return args


def sklearn_topk(vectors: Any, k: int, rows: Any, threads: int) -> tuple[Any, float, float]:
    """(ids of the k buddies of ``rows`` with self dropped, fit seconds, kneighbors seconds)."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    model, fit_s = _common.timed(lambda: NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute",
                                                  n_jobs=threads).fit(vectors))
    ids, search_s = _common.timed(lambda: model.kneighbors(vectors[rows], return_distance=False))
    keep = np.argsort(ids == rows[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, keep, 1), fit_s, search_s


def run_size(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    import numpy as np

    from pairing.knn import Neighbours, ann_topk, exact_topk, recall_at_k

    progress = not args.no_progress
    vectors = _common.taste_data(n, args.dim, SEED)
    common = {"batch_size": 8192, "show_progress": progress}
    results = []

    def row(contender: str, found: Neighbours, total_s: float, recall: float, settings: str) -> dict[str, Any]:
        return {"contender": contender, "users": n, "queries": n, "seconds": total_s,
                "search_seconds": found.search_seconds, "queries_per_s": n / found.search_seconds,
                "recall": recall, "settings": settings, "scaled": False}

    exact, seconds = _common.timed(lambda: exact_topk(vectors, args.k, device=args.device, **common))
    results.append(row("faiss exact (IndexFlatIP)", exact, seconds, 1.0, f"{args.device}, reference"))

    rng = np.random.default_rng(SEED)
    probe = np.sort(rng.choice(n, size=min(n, args.queries or PROBE), replace=False))
    ids, fit_s, search_s = sklearn_topk(vectors, args.k, probe, args.threads)
    scaled = args.queries is not None or search_s * n / len(probe) > args.sklearn_budget
    if not scaled and len(probe) < n:
        probe = np.arange(n)
        ids, fit_s, search_s = sklearn_topk(vectors, args.k, probe, args.threads)
    scale = n / len(probe)
    reference = Neighbours(exact.ids[probe], exact.scores[probe])
    recall = recall_at_k(Neighbours(ids, np.zeros(ids.shape, np.float32)), reference)
    note = f"{len(probe):,} seeded queries, seconds ×{scale:.0f}" if scaled else "all queries"
    results.append({"contender": "sklearn brute (cosine)", "users": n, "queries": len(probe),
                    "seconds": fit_s + search_s * scale, "search_seconds": search_s * scale,
                    "queries_per_s": len(probe) / search_s, "recall": recall, "settings": note, "scaled": scaled})

    nlist = min(int(4 * np.sqrt(n)), n // 39)  # ann_topk's default, passed so that the table shows what ran
    ivf, seconds = _common.timed(lambda: ann_topk(vectors, args.k, method="ivf", nlist=nlist, nprobe=args.nprobe,
                                          device=args.device, **common))
    results.append(row("faiss ivf (IVFFlat)", ivf, seconds, recall_at_k(ivf, exact),
                       f"{args.device}, nlist {nlist}, nprobe {args.nprobe}"))

    hnsw, seconds = _common.timed(lambda: ann_topk(vectors, args.k, method="hnsw", hnsw_m=args.hnsw_m,
                                           ef_search=args.ef_search, **common))
    results.append(row("faiss hnsw (HNSWFlat)", hnsw, seconds, recall_at_k(hnsw, exact),
                       f"cpu, M {args.hnsw_m}, efSearch {args.ef_search}"))
    return results


def table(rows: list[dict[str, Any]], k: int) -> str:
    head = ("contender", "users", "queries", "build+search s", "search s", "queries/s", f"recall@{k}", "settings")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * 6 + ["---"]) + "|"]
    for r in rows:
        mark = "~" if r["scaled"] else ""
        cells = (r["contender"], f"{r['users']:,}", f"{r['queries']:,}", f"{mark}{r['seconds']:.2f}",
                 f"{mark}{r['search_seconds']:.2f}", f"{r['queries_per_s']:,.0f}", f"{r['recall']:.4f}", r["settings"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_facts() -> dict[str, Any]:
    import faiss
    import numpy as np
    import sklearn

    return {**_common.machine_facts(), "numpy": np.__version__, "faiss": faiss.__version__,
            "sklearn": sklearn.__version__}


def main() -> int:
    args = parse_args()
    # Before numpy, scipy or faiss load their BLAS and OpenMP runtimes, which read these once.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    sys.path.insert(0, str(REPO))
    import faiss
    from threadpoolctl import threadpool_limits

    from pairing.knn import faiss_threads

    if args.device == "cuda" and not hasattr(faiss, "StandardGpuResources"):
        sys.exit("bench/pairing.py: --device cuda needs faiss-gpu; this faiss is a CPU-only build")
    faiss_threads(args.threads)
    facts = machine_facts()
    rows = []
    with threadpool_limits(args.threads):
        for n in args.sizes:
            print(f"--- {n:,} users", file=sys.stderr)
            rows.extend(run_size(n, args))
    out = {
        "benchmark": "bench/pairing.py",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "data": {"sizes": args.sizes, "dim": args.dim, "genres": _common.GENRES, "seed": SEED},
        "machine": facts,
        "settings": {"k": args.k, "threads": args.threads, "device": args.device, "nprobe": args.nprobe,
                     "hnsw_m": args.hnsw_m, "ef_search": args.ef_search, "sklearn_budget": args.sklearn_budget},
        "results": rows,
    }
    _common.write_json(args.json, out)

    print(f"\ndata: synthetic {args.dim}-d taste vectors around {_common.GENRES} genres (seed {SEED}); top-{args.k}, "
          f"self excluded; every user is a query")
    print(f"machine: {facts['cores']} cores ({facts['cpu']}), {args.threads} threads, Python {facts['python']}, "
          f"numpy {facts['numpy']}, faiss {facts['faiss']}, scikit-learn {facts['sklearn']}")
    print("queries/s from search seconds; ~ = measured on the seeded queries shown, scaled to all users\n")
    print(table(rows, args.k))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
