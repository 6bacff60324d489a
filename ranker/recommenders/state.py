"""Sparse matrices as plain arrays, for the states that model artifacts save (``.npz``, no pickle)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def csr_state(key: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    """``m`` as the arrays ``{key}_data``, ``{key}_indices``, ``{key}_indptr`` and ``{key}_shape``."""
    return {f"{key}_data": m.data, f"{key}_indices": m.indices, f"{key}_indptr": m.indptr,
            f"{key}_shape": np.asarray(m.shape)}


def csr_from_state(state: dict[str, np.ndarray], key: str) -> sp.csr_matrix:
    """The matrix ``csr_state(key, …)`` saved."""
    return sp.csr_matrix((state[f"{key}_data"], state[f"{key}_indices"], state[f"{key}_indptr"]),
                         shape=tuple(int(s) for s in state[f"{key}_shape"]))
