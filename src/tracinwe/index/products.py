"""Float64 matrix products of a search, through torch.

A query's capture has just run torch's threads; NumPy's ``@`` would start
OpenBLAS's own pool beside them, and on a machine with few cores the two
contend (measured on 2 cores, 20 queries over 50,000 texts: the pruned search
right after its capture took 1.7x its time alone). torch's BLAS runs on torch's
threads, so the search and the capture share one pool.
"""

from __future__ import annotations

import numpy as np
import torch


def product64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float64 (a matrix times a matrix or a vector)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only memory (a float64 memory map)
        a = a.copy()
    if not b.flags.writeable:
        b = b.copy()
    return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()
