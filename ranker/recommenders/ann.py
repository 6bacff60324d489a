"""A FAISS inner-product index over rows of vectors: exact (flat) up to ``exact_max`` rows, IVF above.

A flat index scans every row per query: right for the real sample, linear per query and so quadratic per batch of
queries at MPD scale (1M playlists, 2.26M tracks). IVF clusters the rows into lists of about ``per_list`` and scans
``nprobe`` of them, so a query costs the same however many rows there are. IVF, not HNSW: every worker builds its
indexes once per model version, and HNSW took minutes on 571k tracks where IVF's k-means on a sample takes seconds
(docs/SCALING.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

EXACT_MAX = 200_000  # rows: above this, IVF (approximate) instead of flat (exact)
PER_LIST = 1000  # rows per IVF list
NPROBE = 8  # lists scanned per query
TRAIN_PER_LIST = 40  # k-means sample: this many rows per list (FAISS's own advice is 30 to 256)


def inner_product_index(vectors: np.ndarray, *, exact_max: int = EXACT_MAX, per_list: int = PER_LIST,
                        nprobe: int = NPROBE) -> Any:
    """A FAISS index holding ``vectors`` (rows × dim) for inner-product search; its ids are the row numbers."""
    import faiss  # lazy: faiss takes 0.5 s to import (measured); only search needs it

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n <= exact_max:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(min(max(n // per_list, 64), 16384))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        sample = np.random.default_rng(0).choice(n, size=min(n, TRAIN_PER_LIST * nlist), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = nprobe
    index.add(vectors)
    return index
