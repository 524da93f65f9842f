"""Sparse TracIn-WE equals the dense computation on the full embedding weight matrix."""

from __future__ import annotations

import numpy as np
import torch

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import TorchTextClassifier, TracInWE
from tracinwe.models.small import TokenCNN

LRS = (0.1, 0.03)


def dense_gradient(model, embedding_weight, forward, tokenize, text, label) -> torch.Tensor:
    """Autograd of one example's loss w.r.t. the whole (V, d) embedding weight."""
    weight_flag = embedding_weight.requires_grad
    embedding_weight.requires_grad_(True)
    try:
        logits = forward(tokenize(text))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([label]))
        (g,) = torch.autograd.grad(loss, embedding_weight)
    finally:
        embedding_weight.requires_grad_(weight_flag)
    return g.flatten().double()


def dense_tracin(models, lrs, forward_of, tokenize, train, train_labels, test, test_labels) -> np.ndarray:
    out = np.zeros((len(test), len(train)))
    for model, lr in zip(models, lrs):
        weight = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else model.embed.weight
        fwd = forward_of(model)
        g_train = torch.stack([dense_gradient(model, weight, fwd, tokenize, t, y) for t, y in zip(train, train_labels)])
        g_test = torch.stack([dense_gradient(model, weight, fwd, tokenize, t, y) for t, y in zip(test, test_labels)])
        out += lr * (g_test @ g_train.T).numpy()
    return out


def test_tiny_bert_matches_dense(tokenizer):
    models = [tiny_bert(0), tiny_bert(1)]
    tw = TracInWE([(m, lr) for m, lr in zip(models, LRS)], tokenizer=tokenizer, batch_size=4)
    test, test_labels = TEXTS[:3], [2, 0, 1]
    sparse = tw.scores(TEXTS, LABELS, test, test_labels)

    def tokenize(text):
        return tokenizer([text], return_tensors="pt")

    dense = dense_tracin(models, LRS, lambda m: (lambda b: m(**b).logits), tokenize, TEXTS, LABELS, test, test_labels)
    assert sparse.shape == (3, len(TEXTS))
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5 * np.abs(dense).max())
    assert np.abs(dense).max() > 0


def cnn_classifier(model, tokenizer):
    return TorchTextClassifier(
        model, embedding=model.embed, num_classes=2, hf_tokenizer=tokenizer,
        forward=lambda b: model(b["input_ids"], b["attention_mask"]),
    )


def test_tiny_cnn_matches_dense(tokenizer):
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(TokenCNN(len(tokenizer), 2, dim=8, channels=8).eval())
    tw = TracInWE([(cnn_classifier(m, tokenizer), lr) for m, lr in zip(models, LRS)], batch_size=4)
    test, test_labels = TEXTS[3:], [1, 1, 0]
    sparse = tw.scores(TEXTS, LABELS, test, test_labels)

    def tokenize(text):
        enc = tokenizer([text], return_tensors="pt")
        return enc

    dense = dense_tracin(
        models, LRS, lambda m: (lambda b: m(b["input_ids"], b["attention_mask"])), tokenize, TEXTS, LABELS, test, test_labels
    )
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5 * np.abs(dense).max())


def test_sparse_tail_and_dense_blocks_agree(tokenizer, monkeypatch):
    """The gathered-pairs path and the matmul path give the same matrix."""
    import tracinwe.scoring.influence as influence

    tw = TracInWE([(tiny_bert(2), 0.5)], tokenizer=tokenizer, batch_size=3)
    monkeypatch.setattr(influence, "DENSE_PAIR_THRESHOLD", 1)
    all_dense = tw.scores(TEXTS, LABELS, TEXTS, LABELS)
    monkeypatch.setattr(influence, "DENSE_PAIR_THRESHOLD", 10**9)
    all_sparse = tw.scores(TEXTS, LABELS, TEXTS, LABELS)
    np.testing.assert_allclose(all_dense, all_sparse, rtol=1e-6, atol=1e-9 * np.abs(all_dense).max())
