"""Float64 matrix products of a search, through torch.

A query's capture has just run torch's threads; NumPy's ``@`` would start
OpenBLAS's own pool beside them, and on a machine with few cores the two
contend (on 2 cores, 20 queries over 50,000 texts, `bench_index_query.py`:
``index.query`` took 0.21 s with NumPy's products, 0.12 s with these).
torch's BLAS runs on torch's threads, so the search and the capture share one
pool.
"""

from __future__ import annotations

import numpy as np
import torch

#: Multiply-adds below which NumPy multiplies (OpenBLAS runs such products on the calling thread; torch's call costs
#: more than the product).
SMALL_PRODUCT = 1 << 16


def product64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float64 (a matrix times a matrix or a vector)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[0] * a.shape[1] * (b.shape[1] if b.ndim == 2 else 1) < SMALL_PRODUCT:
        return a @ b
    if not a.flags.writeable:  # torch.from_numpy warns on read-only memory (a float64 memory map)
        a = a.copy()
    if not b.flags.writeable:
        b = b.copy()
    return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()


#: Row pairs multiplied per vectorised step by `row_dots` (their float64 copies bound a search's memory).
ROW_CHUNK = 1 << 13


def row_dots(stored: np.ndarray, at: np.ndarray, query_rows: np.ndarray, q_at: np.ndarray) -> np.ndarray:
    """``stored[at[p]] . query_rows[q_at[p]]`` per p (rows flattened), in float64, `ROW_CHUNK` rows at a time."""
    out = np.empty(at.size)
    for lo in range(0, at.size, ROW_CHUNK):
        hi = min(lo + ROW_CHUNK, at.size)
        left = np.asarray(stored[at[lo:hi]], dtype=np.float64).reshape(hi - lo, -1)
        out[lo:hi] = np.einsum("pd,pd->p", left, query_rows[q_at[lo:hi]].astype(np.float64).reshape(hi - lo, -1))
    return out
