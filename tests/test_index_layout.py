"""Model-free checks of the index layout and search on hand-made gradient records (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracinwe.capture.gradients import CaptureSettings
from tracinwe.capture.records import TokenGradients
from tracinwe.index import projection
from tracinwe.index.build import finish_build
from tracinwe.index.index import Index
from tracinwe.index.layout import combine_checkpoints, float16_scale
from tracinwe.index.manifest import CheckpointRecord, DenseToken, IndexManifest, IndexSettings
from tracinwe.index.search import TopCandidates, screen
from tracinwe.index.segments import SegmentBuilder
from tracinwe.index.storage import write_segment
from tracinwe.results import TopInfluences, top_k_indices
from tracinwe.scoring.influence import tracin_matrix

LRS = [0.3, 0.1]
DENSE = [101, 102]


def random_records(n: int, seed: int, magnitude: float, dim: int = 8) -> list[TokenGradients]:
    """Two checkpoints; every example has [CLS]/[SEP] and 1-5 Zipf-ish tokens; Top-k style drops differ per checkpoint."""
    rng = np.random.default_rng(seed)
    out = []
    tokens = [np.unique(np.concatenate([DENSE, 1000 + rng.zipf(1.5, rng.integers(1, 6)) % 40])) for _ in range(n)]
    for c in range(2):
        ids, offsets = [], [0]
        for t in tokens:
            keep = t[rng.random(t.size) > 0.2 * c]  # checkpoint 1 drops some tokens
            ids.append(keep)
            offsets.append(offsets[-1] + keep.size)
        ids = np.concatenate(ids)
        rows = rng.standard_normal((ids.size, dim)).astype(np.float32) * magnitude
        out.append(TokenGradients(torch.tensor(offsets), torch.from_numpy(ids), torch.from_numpy(rows),
                                  torch.zeros(n, dtype=torch.long), torch.zeros(n, 2)))
    return out


def write_index(root, records: list[TokenGradients], dtype: str, segment: int, projection_dim=None, method="pca") -> Index:
    plan = IndexManifest(
        settings=IndexSettings(CaptureSettings(), dtype, segment),
        checkpoints=tuple(CheckpointRecord(None, lr) for lr in LRS), fingerprint=None,
        dense_tokens=tuple(DenseToken(t, str(t)) for t in DENSE), label_names=("0", "1"), num_examples=len(records[0]),
        projection=projection.spec(projection_dim, method, 0),
    )
    import pyarrow as pa

    builder = SegmentBuilder(plan, classifiers=[])
    if projection_dim:
        block = combine_checkpoints(records, np.array(DENSE))
        builder.projection = projection.fit(plan.projection, block.rows.reshape(block.rows.shape[0], -1),
                                            block.dense.reshape(block.num_examples, -1))
        projection.write(root, builder.projection)
    written = []
    for number, lo in enumerate(range(0, len(records[0]), segment)):
        idx = list(range(lo, min(lo + segment, len(records[0]))))
        arrays, scale = builder.arrays([r.select(idx) for r in records])
        table = pa.table({"id": [str(i) for i in idx], "text": [f"t{i}" for i in idx],
                          "label": pa.array([0] * len(idx), pa.int64())})
        written.append(write_segment(root, number, lo, arrays, table, scale))
    return Index(root, finish_build(root, plan, written), tracin=None)


@pytest.mark.parametrize("magnitude", [1.0, 1e-7])
def test_float32_and_float16_search_equal_brute_force(tmp_path, magnitude):
    train, test = random_records(300, 0, magnitude), random_records(7, 1, magnitude)
    brute = tracin_matrix(test, train, LRS).numpy()
    ref = TopInfluences.from_scores(brute, 10)
    scale = np.abs(brute).max()
    full = write_index(tmp_path / "f32", train, "float32", 64)
    hits = full.search(test, k=10)
    np.testing.assert_allclose(hits.proponent_scores, ref.proponent_scores, rtol=1e-6, atol=1e-9 * scale)
    np.testing.assert_allclose(hits.opponent_scores, ref.opponent_scores, rtol=1e-6, atol=1e-9 * scale)
    half = write_index(tmp_path / "f16", train, "float16", 64)
    assert all(s.scale < 1e-6 for s in half.manifest.segments) == (magnitude < 1)
    hits16 = half.search(test, k=10)  # tiny gradients keep float16 precision thanks to the per-segment scale
    np.testing.assert_allclose(hits16.proponent_scores, ref.proponent_scores, rtol=3e-3, atol=3e-3 * scale)
    np.testing.assert_allclose(half.self_influence(), full.self_influence(), rtol=1e-12)


@pytest.mark.parametrize("method", ["pca", "gaussian"])
def test_projection_with_every_candidate_is_exact(tmp_path, method):
    train, test = random_records(200, 2, 1.0), random_records(5, 3, 1.0)
    brute = tracin_matrix(test, train, LRS).numpy()
    index = write_index(tmp_path / "p", train, "float32", 50, projection_dim=4, method=method)
    assert index.manifest.projection.method == method
    assert set(index.manifest.projection.files) == {"rows.npy", "dense.npy"}
    hits = index.search(test, k=6, candidates=200)
    ref = TopInfluences.from_scores(brute, 6)
    np.testing.assert_allclose(hits.proponent_scores, ref.proponent_scores, rtol=1e-6)
    np.testing.assert_array_equal(hits.opponent_indices, ref.opponent_indices)


def test_full_rank_pca_screen_is_a_rotation_and_exact(tmp_path):
    """With p >= C*T*d the PCA bases are orthonormal and complete: the projected screen itself is exact."""
    train, test = random_records(120, 6, 1.0), random_records(4, 7, 1.0)
    brute = tracin_matrix(test, train, LRS).numpy()
    index = write_index(tmp_path / "r", train, "float32", 40, projection_dim=32)  # rows C*d = 16, dense C*T*d = 32
    for basis, size in ((index.projection.rows, 16), (index.projection.dense, 32)):
        assert basis.shape == (size, size)  # capped at the input size
        np.testing.assert_allclose(basis.T @ basis, np.eye(size), atol=1e-5)
    q = index.query_block(test, projected=True)
    screened = np.concatenate([screen(index.segment(s, True), q, projected=True) for s in range(3)])
    np.testing.assert_allclose(screened.T, brute, rtol=1e-4, atol=1e-5 * np.abs(brute).max())


def test_pca_basis_recovers_a_low_rank_subspace():
    """Rows of rank 3: a 3-dimensional PCA basis spans them, so x.y = (xP).(yP) exactly; signs are fixed."""
    rng = np.random.default_rng(8)
    mix = rng.standard_normal((3, 20))
    x, y = rng.standard_normal((500, 3)) @ mix, rng.standard_normal((40, 3)) @ mix
    basis = projection.pca_basis(x, 3)
    np.testing.assert_allclose((x @ basis) @ (y @ basis).T, x @ y.T, rtol=1e-4, atol=1e-4)
    assert (basis[np.abs(basis).argmax(0), np.arange(3)] > 0).all()
    np.testing.assert_array_equal(projection.pca_basis(x, 3), basis)  # deterministic


def test_layout_keeps_every_entry_and_zero_fills_dropped_checkpoints():
    records = random_records(20, 4, 1.0)
    block = combine_checkpoints(records, np.array(DENSE))
    stored = block.rows.reshape(-1, 2, 8)
    for c, rec in enumerate(records):
        total = (rec.rows.double() ** 2).sum().item()
        assert np.isclose((stored[:, c].astype(np.float64) ** 2).sum() + (block.dense[:, c].astype(np.float64) ** 2).sum(), total)
    assert (np.diff(block.tokens) > 0).all()
    for u in range(block.tokens.size):
        assert (np.diff(block.postings[block.token_slice(u)]) > 0).all()
    assert float16_scale(np.array([3e-7])) == 2.0**-29  # 3e-7 / 2**-29 = 161 and float16_scale(np.zeros(3)) == 1.0


def test_top_candidates_merge_equals_one_pass():
    rng = np.random.default_rng(5)
    block = rng.standard_normal((100, 3))
    one = TopCandidates(3, 7)
    one.update(block, 0)
    a, b = TopCandidates(3, 7), TopCandidates(3, 7)
    a.update(block[:40], 0)
    b.update(block[40:], 40)
    a.merge(b)
    for d in (0, 1):
        np.testing.assert_array_equal(a.ranked(d, 7)[0], one.ranked(d, 7)[0])


@pytest.mark.parametrize("dtype, projection_dim", [("float16", None), ("float32", 4)])
def test_searcher_screening_in_shares_equals_one_search(tmp_path, dtype, projection_dim):
    """What Ray actors do (screen disjoint shares of the segments, merge on the driver, rank) equals `Index.search`."""
    train, test = random_records(250, 8, 1.0), random_records(5, 9, 1.0)
    index = write_index(tmp_path / "s", train, dtype, 40, projection_dim=projection_dim)
    searcher = index.searcher
    search = searcher.start(test, k=7, candidates=30)
    shares = [searcher.screen(search, numbers) for numbers in ([0, 3, 6], [1, 4], [2, 5])]
    for share in shares[1:]:
        shares[0].merge(share)
    fanned, one = searcher.rank(search, shares[0]), index.search(test, k=7, candidates=30)
    for name in ("proponent_indices", "proponent_scores", "opponent_indices", "opponent_scores"):
        np.testing.assert_array_equal(getattr(fanned, name), getattr(one, name))
    brute = tracin_matrix(test, train, LRS).numpy()  # rescored: every returned score is exact
    tol = dict(rtol=3e-3, atol=3e-3 * np.abs(brute).max()) if dtype == "float16" else dict(rtol=1e-6)
    np.testing.assert_allclose(brute[np.arange(5)[:, None], one.proponent_indices], one.proponent_scores, **tol)


def test_unordered_top_k_selects_the_same_columns():
    scores = np.random.default_rng(4).standard_normal((6, 50))
    for k in (1, 7, 50, 60):
        ordered = top_k_indices(scores, k)
        assert (np.diff(np.take_along_axis(scores, ordered, 1), axis=1) <= 0).all()
        np.testing.assert_array_equal(np.sort(top_k_indices(scores, k, ordered=False), 1), np.sort(ordered, 1))


def test_example_tables_keep_the_recently_read_within_the_byte_budget(tmp_path):
    from tracinwe.index.examples import ExampleTables

    index = write_index(tmp_path / "ix", random_records(100, 3, 1.0), "float32", 25)
    segments = index.manifest.segments
    one = ExampleTables(index.path, segments).table(0).nbytes
    tables = ExampleTables(index.path, segments, cached=int(2.5 * one))  # room for two tables
    assert tables.column("text", [99, 0, 30]) == ["t99", "t0", "t30"]  # segments read in order 0, 1, 3: 0 evicted
    assert list(tables._tables) == ["seg-000001", "seg-000003"]
    tables.table(1)  # a hit makes it the most recent
    tables.table(2)
    assert list(tables._tables) == ["seg-000001", "seg-000002"]
    assert tables.column("id") == [str(i) for i in range(100)]
