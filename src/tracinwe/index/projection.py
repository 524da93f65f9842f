"""Projections of the gradient rows for a fast approximate screen: PCA (default) or seeded Gaussian.

The projected screen scores ``x . y`` by ``(xP) . (yP)``; the top candidates are
then rescored exactly from the full rows, so returned scores never carry its error.

* ``"pca"``: ``P`` holds the top eigenvectors of the rows' second moment
  ``E[x x^T]``, fitted on a seeded sample of the training examples. ``P`` is
  orthonormal, so the error is only the residuals' product
  ``|x_res . y_res| <= ||x_res|| ||y_res||``, small because word-embedding
  gradients are strongly anisotropic (a few directions hold most of the energy).
* ``"gaussian"``: a seeded Johnson-Lindenstrauss matrix, data-free but noisy:
  its error variance is about ``||x||^2 ||y||^2 / p``.

The basis is stored in the index (``projection/``), so every segment, resume,
append and Ray worker projects with the same matrices.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracinwe.index.manifest import ProjectionSpec

METHODS = ("pca", "gaussian")
#: Training examples captured to fit a PCA basis (a seeded sample).
PCA_PROBE = 1024
FOLDER = "projection"
FILES = ("rows.npy", "dense.npy")
#: Row widths (``C * d``, or ``C * T * d`` for the dense rows) above which the PCA is fitted by randomized
#: subspace iteration instead of an eigendecomposition of the full second moment.
WIDE = 2048


@dataclass
class Projection:
    """The (C*d, p) basis of the posting rows and the (C*T*d, p_dense) basis of the dense rows."""

    rows: np.ndarray
    dense: np.ndarray


def spec(dim: int | None, method: str, seed: int) -> ProjectionSpec | None:
    """The plan's projection (None: no projection)."""
    if dim is None:
        return None
    if dim < 1:
        raise ValueError(f"projection_dim {dim} must be a positive integer or None")
    if method not in METHODS:
        raise ValueError(f"projection method {method!r} is not one of {METHODS}: pass 'pca' or 'gaussian'")
    return ProjectionSpec(int(dim), method, int(seed), PCA_PROBE if method == "pca" else 1)


def probe_rows(num_examples: int, projection: ProjectionSpec) -> np.ndarray:
    """The sorted rows whose gradients fit the basis (a seeded sample)."""
    size = min(num_examples, projection.probe)
    rng = np.random.default_rng([projection.seed, 7])
    return np.sort(rng.choice(num_examples, size=size, replace=False))


def gaussian_matrix(in_dim: int, out_dim: int, seed: int, salt: int) -> np.ndarray:
    """Seeded Gaussian (in_dim, out_dim) with entries N(0, 1/out_dim): E[(xR)(yR)] = x.y."""
    rng = np.random.default_rng([seed, salt, in_dim, out_dim])
    return (rng.standard_normal((in_dim, out_dim)) / np.sqrt(out_dim)).astype(np.float32)


def pca_basis(samples: np.ndarray, out_dim: int, seed: int = 0) -> np.ndarray:
    """Orthonormal (in_dim, min(out_dim, in_dim)): top eigenvectors of ``samples^T samples``, signs fixed.

    Rows wider than `WIDE` (large hidden sizes: ``C * d`` reaches tens of thousands) never form the
    in_dim x in_dim moment: a seeded randomized subspace iteration finds its top eigenvectors instead.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.shape[1] > WIDE:
        top = _randomized_top(x, min(out_dim, x.shape[1]), seed)
    else:
        values, vectors = np.linalg.eigh(x.T @ x)
        top = vectors[:, np.argsort(-values, kind="stable")[: min(out_dim, x.shape[1])]]
    flip = np.sign(top[np.argmax(np.abs(top), axis=0), np.arange(top.shape[1])])
    return (top * np.where(flip == 0, 1.0, flip)).astype(np.float32)


def _randomized_top(x: np.ndarray, k: int, seed: int, oversample: int = 16, iterations: int = 3) -> np.ndarray:
    """The top ``k`` eigenvectors of ``x^T x`` (in_dim, k) by seeded subspace iteration (Halko et al. 2011)."""
    rng = np.random.default_rng([seed, 11, x.shape[1], k])
    q, _ = np.linalg.qr(x.T @ (x @ rng.standard_normal((x.shape[1], k + oversample))))
    for _ in range(iterations):
        q, _ = np.linalg.qr(x.T @ (x @ q))
    values, vectors = np.linalg.eigh(q.T @ (x.T @ (x @ q)))
    return q @ vectors[:, np.argsort(-values, kind="stable")[:k]]


def fit(projection: ProjectionSpec, rows: np.ndarray, dense: np.ndarray) -> Projection:
    """The basis from sample posting rows (N, C*d) and dense rows (n, C*T*d)."""
    p, seed = projection.dim, projection.seed
    if projection.method == "gaussian":
        dense_basis = gaussian_matrix(dense.shape[1], p, seed, salt=2) if dense.shape[1] else np.zeros((0, 0), np.float32)
        return Projection(gaussian_matrix(rows.shape[1], p, seed, salt=1), dense_basis)
    dense_basis = pca_basis(dense, p, seed) if dense.shape[1] else np.zeros((0, 0), np.float32)
    return Projection(pca_basis(rows, p, seed), dense_basis)


def write(root: Path, projection: Projection) -> None:
    """Write the basis into ``root/projection`` (temporary folder, fsynced, then an atomic rename)."""
    from tracinwe.io import fsync_tree, rename_durably

    final = Path(root) / FOLDER
    for stale in Path(root).glob(f".{FOLDER}.tmp-*"):  # an interrupted write's leftovers
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(root) / f".{FOLDER}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    np.save(tmp / "rows.npy", projection.rows)
    np.save(tmp / "dense.npy", projection.dense)
    fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    rename_durably(tmp, final)


def read(root: Path) -> Projection | None:
    """The stored basis, or None when there is none (or an interrupted write left it unreadable)."""
    folder = Path(root) / FOLDER
    try:
        return Projection(np.load(folder / "rows.npy", allow_pickle=False), np.load(folder / "dense.npy", allow_pickle=False))
    except (OSError, ValueError, EOFError):
        return None
