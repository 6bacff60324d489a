"""Users and playlists as vectors in a model's track space: the normalised mean of their tracks' factors.

Pairing searches these vectors for taste buddies and playlist picks rank playlists with them, so they live here,
below both.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as a float32 C-contiguous copy (what FAISS wants); zero rows stay zero."""
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    if out.ndim != 2:
        raise ValueError(f"expected a 2-d array, got shape {out.shape}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def taste_vectors(item_factors: np.ndarray, user_items: scipy.sparse.csr_matrix) -> np.ndarray:
    """One unit vector per user (row of ``user_items``): the normalised mean of the factors of the items it has.

    Binary on purpose: play counts are heavy-tailed and one obsessively replayed track would otherwise be the whole
    taste. The mean and the sum point the same way, so the sum is normalised. Users without items get zeros.
    """
    if user_items.shape[1] != item_factors.shape[0]:
        raise ValueError(f"user_items has {user_items.shape[1]} columns but there are {item_factors.shape[0]} items")
    binary = user_items.tocsr(copy=True)
    binary.sum_duplicates()
    binary.eliminate_zeros()  # a stored 0 is not a like
    binary.data = np.ones_like(binary.data, dtype=np.float32)
    return normalize_rows(np.asarray(binary.astype(np.float32) @ np.asarray(item_factors, dtype=np.float32)))
