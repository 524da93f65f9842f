"""A hand-derived TracIn-WE score on a bag-of-embeddings linear model.

Model: logits = W (sum_i e_{x_i}) + b. For every position i,
d loss / d e_i = W^T (p - onehot(y)), the same vector g for all positions, so
G(x)[w] = n_x(w) g(x) and TracIn-WE(x, x') = sum_c lr_c sum_{w shared} n_x(w) n_x'(w) g_c(x).g_c(x').
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tracinwe import TorchTextClassifier, TracInWE

VOCAB = ["[PAD]", "good", "bad", "movie", "plot", "great", "the"]
WORD_ID = {w: i for i, w in enumerate(VOCAB)}


class BagOfEmbeddings(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(len(VOCAB), 3)
        self.linear = nn.Linear(3, 2)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(len(VOCAB), 3, generator=g))
            self.linear.weight.copy_(torch.randn(2, 3, generator=g))
            self.linear.bias.copy_(torch.randn(2, generator=g))

    def forward(self, input_ids, attention_mask):
        e = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return self.linear(e.sum(dim=1))


def tokenize(texts, pairs=None):
    ids = [[WORD_ID[w] for w in t.split()] for t in texts]
    width = max(map(len, ids))
    input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}


def classifier(model):
    return TorchTextClassifier(
        model, embedding=model.embed, num_classes=2, tokenize=tokenize,
        forward=lambda b: model(b["input_ids"], b["attention_mask"]), id_to_token=lambda ids: [VOCAB[i] for i in ids],
    )


def hand_score(models, lrs, train, y_train, test, y_test) -> float:
    total = 0.0
    for model, lr in zip(models, lrs):
        W = model.linear.weight.detach().numpy().astype(np.float64)
        b = model.linear.bias.detach().numpy().astype(np.float64)
        E = model.embed.weight.detach().numpy().astype(np.float64)

        def g(text, y, W=W, b=b, E=E):  # this checkpoint's weights, bound now
            h = sum(E[WORD_ID[w]] for w in text.split())
            z = W @ h + b
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            return W.T @ (p - np.eye(2)[y])

        shared = set(train.split()) & set(test.split())
        counts = sum(train.split().count(w) * test.split().count(w) for w in shared)
        total += lr * counts * float(g(train, y_train) @ g(test, y_test))
    return total


def test_closed_form_score_and_words():
    models, lrs = [BagOfEmbeddings(0), BagOfEmbeddings(1)], [0.2, 0.05]
    tw = TracInWE([(classifier(m), lr) for m, lr in zip(models, lrs)])
    train = ["good good movie", "bad plot", "the great movie the", "good plot"]
    y_train = [1, 0, 1, 1]
    test, y_test = ["the good movie the the"], [1]
    scores = tw.scores(train, y_train, test, y_test)
    expected = [hand_score(models, lrs, t, y, test[0], y_test[0]) for t, y in zip(train, y_train)]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5)
    assert scores[0, 1] == 0.0  # "bad plot" shares no word with the test text
    # Word contributions: "the" occurs 2 x 3 times, "movie" 1 x 1: a 6:1 split of the score.
    words = dict(tw.word_contributions(train[2], 1, test[0], 1))
    assert set(words) == {"the", "movie"}
    np.testing.assert_allclose(words["the"], 6 * words["movie"], rtol=1e-5)
    np.testing.assert_allclose(sum(words.values()), scores[0, 2], rtol=1e-6)
