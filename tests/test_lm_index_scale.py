"""The LM index on a wide decoder: rows of C x d above `projection.WIDE` (2,048) get their PCA by randomized
subspace iteration, and the projected screen + exact re-rank (float32 and float16 rows) equals brute force.

A 1-layer GPT-2 of width 1,040 (two checkpoints: rows of 2,080), random init and 2 training steps on 40 real Rotten
Tomatoes snippets; the subspace iteration itself is checked against the full eigendecomposition on planted spectra.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracinwe import TracInWE
from tracinwe.index import Index, projection
from tracinwe.results import TopInfluences

WIDTH = 1040
MAX_LENGTH = 24


def test_randomized_pca_spans_the_top_eigenvectors():
    """Above WIDE the basis comes from subspace iteration; it spans the same top eigenvectors as the SVD."""
    rng = np.random.default_rng(0)
    dim, rank = projection.WIDE + 64, 12
    basis, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    spectrum = 2.0 ** -np.arange(rank)  # decaying, as gradient rows are: a few directions hold most energy
    samples = (rng.standard_normal((300, rank)) * spectrum) @ basis.T + 1e-4 * rng.standard_normal((300, dim))
    got = projection.pca_basis(samples, 8, seed=3)
    assert got.shape == (dim, 8)
    np.testing.assert_allclose(got.T @ got, np.eye(8), atol=1e-5)
    want = np.linalg.svd(samples, full_matrices=False)[2][:8].T  # right singular vectors: eigenvectors of X^T X
    overlap = np.abs(np.sum(got * want, axis=0))  # |cos| per eigenvector (signs are fixed separately)
    np.testing.assert_allclose(overlap, 1.0, atol=1e-4)
    np.testing.assert_array_equal(got, projection.pca_basis(samples, 8, seed=3))  # seeded: the same basis again


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A wide 1-layer decoder's two checkpoints (random init, then 2 AdamW steps), 40 documents, 4 completions and
    the brute-force scores. The MLP is 16 wide (``n_inner``) to keep the capture cheap: the rows are ``n_embd`` wide."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tracinwe.data import load_dataset_source
    from tracinwe.training.causal_lm import DecoderConfig, train_bpe_tokenizer, train_decoder

    texts = [t for t in load_dataset_source("bundled:rotten-tomatoes").sample(300, seed=11).texts if 20 <= len(t) <= 70]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=400)
    fit = [t for t in texts if len(tokenizer(t)["input_ids"]) <= MAX_LENGTH - 2]
    docs = fit[:40]
    queries = [{"prompt": " ".join(t.split(" ")[:2]), "completion": " " + " ".join(t.split(" ")[2:])} for t in fit[-4:]]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=MAX_LENGTH, n_embd=WIDTH, n_layer=1, n_head=2,
                                       n_inner=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    config = DecoderConfig(epochs=1.0, batch_size=20, num_checkpoints=2, max_length=MAX_LENGTH, seed=0)
    run = train_decoder(docs, tmp_path_factory.mktemp("wide") / "run", config, tokenizer=tokenizer, model=model)
    tw = TracInWE.from_checkpoints(run.checkpoints, max_length=MAX_LENGTH)
    return tw, docs, queries, tw.scores(docs, None, queries, None)


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float16", 2e-3)])
def test_wide_projection_reranks_to_brute_force(wide, tmp_path, dtype, rtol):
    tw, docs, queries, scores = wide
    index = Index.build(tmp_path / "wide", tw, docs, None, dtype=dtype, projection_dim=32, progress=False)
    assert index.projection.rows.shape == (2 * WIDTH, 32) and 2 * WIDTH > projection.WIDE
    assert index.searcher.start(tw.capture(queries), 3, 12).projected  # the screen is projected, 12 candidates of 40
    found = index.search(queries, k=3, candidates=12)
    exact = index.search(queries, k=3, use_projection=False)
    want = TopInfluences.from_scores(scores, 3)
    assert (want.proponent_scores[:, 0] > 0).all()  # documents share tokens with every completion
    tol = rtol * np.abs(scores).max()
    rows = np.arange(len(queries))[:, None]
    # the same top scores as brute force, each the brute-force score of its row (ties at 0 may pick other rows)
    for got_rows, got, want_scores, exact_scores in [
        (found.proponent_indices, found.proponent_scores, want.proponent_scores, exact.proponent_scores),
        (found.opponent_indices, found.opponent_scores, want.opponent_scores, exact.opponent_scores),
    ]:
        np.testing.assert_allclose(got, want_scores, rtol=0, atol=tol)
        np.testing.assert_allclose(scores[rows, got_rows], got, rtol=0, atol=tol)
        np.testing.assert_allclose(exact_scores, got, rtol=0, atol=1e-9 * np.abs(scores).max())
