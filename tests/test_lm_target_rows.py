"""Sparse output-side rows (`target-rows`, `TracIn-WE+out`): equal to dense autograd on a tiny GPT-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_causal_lm import TEST, TRAIN, bpe, tiny_gpt2  # noqa: F401 - bpe is a fixture
from tracinwe.errors import TracInWEError
from tracinwe.evaluate.baselines.lm_target_rows import lm_target_row_scores, output_row_gradients
from tracinwe.models.causal_lm import CausalLanguageModel

LRS = (0.3, 0.1)


def summed_target_loss(model, ids: list[int], targets: list[bool]) -> torch.Tensor:
    """The document's summed next-token NLL over its target tokens, by HF's own loss."""
    ids_t = torch.tensor(ids)
    labels = torch.where(torch.tensor(targets), ids_t, torch.full_like(ids_t, -100))
    return model(input_ids=ids_t[None], labels=labels[None]).loss * int(sum(targets[1:]))


def dense_weight_gradient(model, weight: torch.nn.Parameter, ids, targets) -> torch.Tensor:
    """V x d gradient of the summed target loss w.r.t. ``weight`` (lm_head's, or the tied one), float64."""
    (grad,) = torch.autograd.grad(summed_target_loss(model, ids, targets), weight)
    return grad.double()


def checkpoints(tokenizer, tied: bool) -> list[tuple[CausalLanguageModel, float]]:
    return [(CausalLanguageModel(tiny_gpt2(tokenizer, seed, tied), tokenizer, max_length=64), lr)
            for seed, lr in zip((0, 1), LRS)]


def rows_of(lm: CausalLanguageModel, x, tied: bool) -> dict[int, torch.Tensor]:
    """The dense gradient's rows at the tokens the method keeps: targets (untied head) or every token (tied weight)."""
    ids, targets = lm.token_ids(x)
    weight = lm.module.get_output_embeddings().weight
    dense = dense_weight_gradient(lm.module, weight, ids, targets)
    keep = {t for t, is_target in zip(ids, targets) if is_target} if not tied else set(ids)
    return {w: dense[w] for w in keep}


def dotted(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor]) -> float:
    return sum(float(a[w] @ b[w]) for w in set(a) & set(b))


def test_target_rows_equal_the_dense_lm_head_gradient_rows(bpe):  # noqa: F811
    (lm, _), _ = checkpoints(bpe, tied=False)
    records = output_row_gradients(lm, TRAIN + TEST, batch_size=3)
    for i, x in enumerate(TRAIN + TEST):
        ids, targets = lm.token_ids(x)
        token_ids, rows = records.example(i)
        assert token_ids.tolist() == sorted({t for t, is_target in zip(ids, targets) if is_target})
        dense = dense_weight_gradient(lm.module, lm.module.lm_head.weight, ids, targets)
        scale = float(dense.abs().max())
        torch.testing.assert_close(rows, dense[token_ids], rtol=0, atol=1e-5 * scale)
        # the dropped rows are the dense remainder: not zero (the softmax reaches every vocabulary row)
        others = torch.ones(dense.shape[0], dtype=torch.bool)
        others[token_ids] = False
        assert float(dense[others].abs().max()) > 1e-3 * scale


@pytest.mark.parametrize("tied", [False, True])
def test_scores_equal_dense_rows_dotted_over_shared_tokens(bpe, tied):  # noqa: F811
    """include_input=False (untied head: target rows); include_input=True (tied weight: every token's row)."""
    ckpts = checkpoints(bpe, tied)
    got = lm_target_row_scores(ckpts, TRAIN, TEST, batch_size=2, include_input=tied)
    expected = np.zeros((len(TEST), len(TRAIN)))
    for lm, lr in ckpts:
        train_rows = [rows_of(lm, x, tied) for x in TRAIN]
        for i, q in enumerate(TEST):
            q_rows = rows_of(lm, q, tied)
            for j, rows in enumerate(train_rows):
                expected[i, j] += lr * dotted(q_rows, rows)
    assert got.shape == (len(TEST), len(TRAIN)) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert np.abs(expected).max() > 0 and (expected != 0).sum() >= len(TEST)


def test_bad_input_is_a_one_line_error(bpe):  # noqa: F811
    ckpts = checkpoints(bpe, tied=True)[:1]
    for call, needle in [
        (lambda: lm_target_row_scores(ckpts, [], TEST), "no training examples"),
        (lambda: lm_target_row_scores([], TRAIN, TEST), "no checkpoints"),
        (lambda: lm_target_row_scores([ckpts[0][0]], TRAIN, TEST), "(model, learning_rate) pair"),
        (lambda: lm_target_row_scores(ckpts, TRAIN, TEST, batch_size=0), "batch_size"),
    ]:
        with pytest.raises(TracInWEError, match=needle.replace("(", r"\(").replace(")", r"\)")) as info:
            call()
        assert "\n" not in str(info.value)
