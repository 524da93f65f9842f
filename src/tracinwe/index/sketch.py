"""A low-rank sketch of a segment's dense block: bounds tight enough to skip most ``[CLS]``/``[SEP]`` rows.

Every example has dense rows (its ``[CLS]``/``[SEP]`` gradients at every
checkpoint, ``D = C*T*d`` values), and they are strongly low-rank: on real text
under BERT-small, 8 principal directions hold 99.997% of their energy. Per
segment the build fits an orthonormal basis ``B`` (D, p) to them (PCA) and
stores, per example, the sketch ``B^T g`` (float32) and the residual norm
``||g - B B^T g||`` (float32, rounded up). For a query row ``q``::

    g . q = (B^T g) . (B^T q) + (g - B B^T g) . (q - B B^T q)

so the sketch's product is the dense score up to at most ``||r_g|| ||r_q||``
(Cauchy-Schwarz on the residuals), plus the float32 rounding of the stored
sketch: `dense_estimate` returns both. The search ranks with the estimate and
reads the dense rows only where the bound leaves an example in reach of the
top k (`tracinwe.index.pruning`).
"""

from __future__ import annotations

import numpy as np

from tracinwe.index.products import product64

#: Sketch directions per segment (64 bytes per example in float32).
SKETCH_DIM = 16
#: Rows (evenly spaced) the basis is fitted on.
FIT_ROWS = 8192
#: Unit roundoff of float32 (the stored sketch), with a margin.
FLOAT32_UNIT = 1.2 * 2.0**-24
#: Relative slack for float64 rounding and the basis' departure from orthonormality.
FLOAT64_SLACK = 1e-12

SKETCH_ARRAYS = ("dense_basis", "dense_sketch", "dense_residual")


def dense_sketch(stored: np.ndarray, dim: int = SKETCH_DIM, chunk: int = 1 << 15) -> dict[str, np.ndarray]:
    """``{dense_basis (D, p) float64, dense_sketch (n, p) float32, dense_residual (n,) float32}`` of the stored
    dense rows (n, C, T, d); the residual norms are rounded up so that they bound the true ones."""
    n = stored.shape[0]
    flat = stored.reshape(n, int(np.prod(stored.shape[1:])))
    width = flat.shape[1]
    dim = min(dim, width, n)
    basis = np.zeros((width, dim))
    if dim:
        sample = flat[np.unique(np.linspace(0, n - 1, min(n, FIT_ROWS)).astype(np.int64))].astype(np.float64)
        values, vectors = np.linalg.eigh(sample.T @ sample)
        basis = np.ascontiguousarray(vectors[:, np.argsort(values)[::-1][:dim]])
    sketch = np.empty((n, dim), dtype=np.float32)
    residual = np.empty(n, dtype=np.float32)
    for lo in range(0, n, chunk):
        rows = flat[lo:lo + chunk].astype(np.float64)
        projected = rows @ basis
        norms = np.linalg.norm(rows - projected @ basis.T, axis=1)
        sketch[lo:lo + chunk] = projected
        rounded = norms.astype(np.float32)
        residual[lo:lo + chunk] = np.where(rounded < norms, np.nextafter(rounded, np.float32(np.inf)), rounded)
    return {"dense_basis": basis, "dense_sketch": sketch, "dense_residual": residual}


def dense_estimate(basis: np.ndarray, sketch: np.ndarray, residual: np.ndarray, norms: np.ndarray,
                   queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(estimate, bound)``, both (n, n_q) float64: ``|g_i . q_j - estimate| <= bound`` for the stored dense rows ``g``.

    ``norms``: (n,) the rows' full norms (a bound on them: the float32 rounding term scales with it);
    ``queries``: (n_q, D) the queries' dense rows.
    """
    q = queries.astype(np.float64)
    q_sketch = product64(q, basis)
    q_residual = np.linalg.norm(q - product64(q_sketch, basis.T), axis=1)
    q_norm = np.linalg.norm(q, axis=1)
    estimate = product64(sketch, q_sketch.T)
    # residual_i q_residual_j + (rounding) norm_i q_norm_j, as one (n, 2) x (2, n_q) product
    rows = np.stack([np.asarray(residual, dtype=np.float64), (FLOAT32_UNIT + FLOAT64_SLACK) * norms], axis=1)
    return estimate, product64(rows, np.stack([q_residual, q_norm]))
