"""The dense block's low-rank sketch: its bound holds on any data, and on low-rank data it lets the search skip rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_index_layout import DENSE, random_records, write_index
from test_index_pruning import float64_scores, integer_rows, searched
from tracinwe.capture.records import TokenGradients
from tracinwe.index import pruning
from tracinwe.index.index import Index
from tracinwe.index.integrity import read_manifest
from tracinwe.index.sketch import SKETCH_ARRAYS, dense_estimate, dense_sketch
from tracinwe.index.storage import MANIFEST, SEGMENTS


def low_rank(n: int, width: int, rank: int, noise: float, seed: int, subspace: int = 0) -> np.ndarray:
    """``n`` rows of a ``rank``-dimensional subspace (fixed by ``subspace``), plus ``noise``."""
    basis = np.random.default_rng([subspace, rank, width]).standard_normal((rank, width))
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, rank)) @ basis + noise * rng.standard_normal((n, width))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rank, noise", [(3, 1e-3), (3, 0.0), (64, 1.0)], ids=["low-rank", "exact-rank", "full-rank"])
def test_bound_holds_and_is_tight_on_low_rank_rows(dtype, rank, noise):
    stored = low_rank(500, 64, rank, noise, 0).astype(dtype).reshape(500, 2, 2, 16)
    sk = dense_sketch(stored, dim=8)
    flat = stored.reshape(500, -1).astype(np.float64)
    np.testing.assert_allclose(sk["dense_basis"].T @ sk["dense_basis"], np.eye(8), atol=1e-12)  # orthonormal
    residual = np.linalg.norm(flat - flat @ sk["dense_basis"] @ sk["dense_basis"].T, axis=1)
    assert (sk["dense_residual"].astype(np.float64) >= residual).all()  # rounded up, never down
    queries = np.concatenate([low_rank(7, 64, rank, noise, 1), np.random.default_rng(2).standard_normal((3, 64))])
    queries = queries.astype(np.float32)
    norms = np.linalg.norm(flat, axis=1)
    estimate, bound = dense_estimate(sk["dense_basis"], sk["dense_sketch"], sk["dense_residual"], norms, queries)
    true = flat @ queries.astype(np.float64).T
    assert (np.abs(true - estimate) <= bound).all()
    cauchy_schwarz = np.outer(norms, np.linalg.norm(queries.astype(np.float64), axis=1))
    if rank <= 8:  # the sketch holds the rows: the bound is a small share of Cauchy-Schwarz's
        assert (bound[:, :7] <= 0.05 * cauchy_schwarz[:, :7]).all()


def test_sketch_of_an_empty_or_tiny_segment():
    empty = dense_sketch(np.zeros((0, 2, 2, 4), np.float32))
    assert empty["dense_sketch"].shape == (0, 0) and empty["dense_residual"].shape == (0,)
    two = dense_sketch(np.ones((2, 1, 2, 4), np.float32), dim=16)  # fewer rows than directions
    assert two["dense_basis"].shape == (8, 2)
    np.testing.assert_allclose(two["dense_residual"], 0.0, atol=1e-6)


def with_low_rank_dense(records: list[TokenGradients], seed: int) -> list[TokenGradients]:
    """The [CLS]/[SEP] rows replaced by rows from a 2-dimensional subspace (plus a little noise), as on real text."""
    out = []
    for c, r in enumerate(records):
        rows = r.rows.numpy().copy()
        dense = np.isin(r.token_ids.numpy(), DENSE)
        rows[dense] = low_rank(int(dense.sum()), rows.shape[1], 2, 1e-3, seed, subspace=c) * 3
        out.append(TokenGradients(r.offsets, r.token_ids, torch.from_numpy(rows.astype(np.float32)), r.labels, r.logits))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_sketch_skips_dense_rows_and_stays_exact(tmp_path, dtype):
    train = with_low_rank_dense(integer_rows(random_records(600, 10, 1.0)), 0)
    test = with_low_rank_dense(integer_rows(random_records(4, 11, 1.0)), 1)
    index = write_index(tmp_path / "ix", train, dtype, 200)
    for k in (1, 5):
        sketched, count = searched(index, test, k, prune=True)
        pruning_off, _ = searched(index, test, k, prune=False)
        for a, b in ((sketched.proponent_indices, pruning_off.proponent_indices),
                     (sketched.opponent_indices, pruning_off.opponent_indices)):
            np.testing.assert_array_equal(a, b)
        if dtype == "float32":  # float16 rows: the brute force below is of the unrounded rows
            brute = float64_scores(test, train)
            rows = np.arange(4)[:, None]
            np.testing.assert_allclose(sketched.proponent_scores, brute[rows, sketched.proponent_indices], rtol=1e-9,
                                       atol=1e-12 * np.abs(brute).max())
        assert count.dense_read < count.dense_total / 4  # most examples' dense rows never read


def test_index_without_sketch_prunes_exactly(tmp_path, monkeypatch):
    """An index written before the sketch (no dense_basis/dense_sketch/dense_residual) searches exactly, reading the
    dense block up front."""
    train, test = integer_rows(random_records(200, 12, 1.0)), integer_rows(random_records(4, 13, 1.0))
    root = tmp_path / "old"
    write_index(root, train, "float32", 64)
    manifest = json.loads((root / MANIFEST).read_text())
    for seg in manifest["segments"]:
        for name in SKETCH_ARRAYS:
            (root / SEGMENTS / seg["name"] / f"{name}.npy").unlink()
            del seg["files"][f"{name}.npy"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    index = Index(root, read_manifest(root), tracin=None)
    assert index.segment(0).dense_sketch is None
    monkeypatch.setattr(pruning, "DENSE_UP_FRONT", True)
    hits, count = searched(index, test, 5, prune=True)
    assert count.dense_read == count.dense_total == 200  # every dense row read up front
    brute = float64_scores(test, train)
    pro = np.lexsort((np.broadcast_to(np.arange(200), brute.shape), -brute), axis=1)[:, :5]
    np.testing.assert_array_equal(hits.proponent_indices, pro)
