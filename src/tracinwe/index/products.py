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
