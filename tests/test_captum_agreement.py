"""Captum's `TracInCP` restricted to the word-embedding layer gives our TracIn-WE scores.

Captum computes the dense (V x d) gradient of the embedding *weight* per example
with autograd; we build the sparse per-token rows from one batched backward pass.
On the same checkpoints, learning rates, texts and labels the two must agree,
including the sign (positive = proponent in both), the top-k proponents and
opponents, and self-influence.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from conftest import tiny_bert
from tracinwe import TracInWE
from tracinwe.data import load_dataset_source

captum_tracincp = pytest.importorskip("captum.influence._core.tracincp")

LRS = (0.1, 0.03)
EMBEDDING_LAYER = "model.bert.embeddings.word_embeddings"
RELATIVE_TOLERANCE = 1e-4


class LogitsOf(nn.Module):
    """Captum calls ``model(*batch[:-1])``: (input_ids, attention_mask) -> logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def padded_loader(tokenizer, texts, labels, max_length: int, batch_size: int) -> DataLoader:
    """Batches of (input_ids, attention_mask, labels), padded to the longest text of the batch."""
    rows = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]

    def collate(items):
        width = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, (row, _) in enumerate(items):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask, torch.tensor([label for _, label in items])

    return DataLoader(list(zip(rows, labels)), batch_size=batch_size, shuffle=False, collate_fn=collate)


def captum_tracin(checkpoints, tokenizer, train_texts, train_labels, max_length: int):
    """Captum's TracInCP on the word embeddings; the checkpoints are loaded from memory."""
    states = {f"checkpoint-{c}": (m.state_dict(), lr) for c, (m, lr) in enumerate(checkpoints)}
    wrapper = LogitsOf(tiny_bert(seed=99, num_labels=checkpoints[0][0].config.num_labels)).eval()

    def load(model: nn.Module, name: str) -> float:
        state, lr = states[name]
        model.model.load_state_dict(state)
        return lr

    return captum_tracincp.TracInCP(
        wrapper,
        padded_loader(tokenizer, train_texts, train_labels, max_length, batch_size=8),
        checkpoints=list(states),
        checkpoints_load_func=load,
        layers=[EMBEDDING_LAYER],
        loss_fn=nn.CrossEntropyLoss(reduction="none"),
        sample_wise_grads_per_batch=False,
    )


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def reviews():
    """16 training and 4 test Rotten Tomatoes reviews (real text), fixed sample."""
    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(20, seed=3)
    return data.texts[:16], list(data.labels[:16]), data.texts[16:], list(data.labels[16:])


@pytest.fixture(scope="module")
def checkpoints():
    return [(tiny_bert(seed=1, num_labels=2), LRS[0]), (tiny_bert(seed=2, num_labels=2), LRS[1])]


@pytest.fixture(scope="module")
def both(tokenizer, checkpoints, reviews):
    train_texts, train_labels, test_texts, test_labels = reviews
    ours = TracInWE(checkpoints, tokenizer=tokenizer, max_length=48, batch_size=8)
    theirs = captum_tracin(checkpoints, tokenizer, train_texts, train_labels, max_length=48)
    test_inputs = padded_loader(tokenizer, test_texts, test_labels, 48, batch_size=4)
    return ours, theirs, test_inputs


def test_scores_equal_captum_tracincp_on_word_embeddings(both, reviews):
    ours, theirs, test_inputs = both
    train_texts, train_labels, test_texts, test_labels = reviews
    expected = theirs.influence(test_inputs).double().numpy()
    got = ours.scores(train_texts, train_labels, test_texts, test_labels)
    assert got.shape == expected.shape == (4, 16)
    assert np.abs(expected).max() > 0
    assert relative_difference(got, expected) < RELATIVE_TOLERANCE
    # Same sign convention: the signs agree wherever the score is not negligible.
    large = np.abs(expected) > 1e-3 * np.abs(expected).max()
    assert large.sum() > 32 and (np.sign(got[large]) == np.sign(expected[large])).all()


@pytest.mark.parametrize("proponents", [True, False])
def test_top_k_equal_captum(both, reviews, proponents):
    ours, theirs, test_inputs = both
    train_texts, train_labels, test_texts, test_labels = reviews
    their_idx, their_scores = theirs.influence(test_inputs, k=3, proponents=proponents)
    idx, scores = ours.influence(train_texts, train_labels, test_texts, test_labels, k=3, proponents=proponents)
    np.testing.assert_array_equal(idx, their_idx.numpy())
    scale = np.abs(their_scores.numpy()).max()
    np.testing.assert_allclose(scores, their_scores.double().numpy(), rtol=0, atol=RELATIVE_TOLERANCE * scale)


def test_self_influence_equals_captum(both, reviews):
    ours, theirs, _ = both
    train_texts, train_labels, _, _ = reviews
    expected = theirs.self_influence().double().numpy()
    got = ours.self_influence(train_texts, train_labels)
    assert (expected > 0).all()
    assert relative_difference(got, expected) < RELATIVE_TOLERANCE
