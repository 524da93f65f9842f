"""The paper's TF-IDF variant: TF-IDF cosine of the token bags times the loss-gradient similarity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tracinwe.evaluate.baselines.last_layer import LastLayerMethod
from tracinwe.evaluate.baselines.last_layer_records import LastLayerRecords
from tracinwe.method import Examples
from tracinwe.models.contract import TextClassifier


@dataclass
class TfIdfSide:
    """The examples at one checkpoint: last-layer records and token bags."""

    records: LastLayerRecords
    bags: list[torch.Tensor]
    vocab_size: int


class TfIdfVariant(LastLayerMethod):
    """``tfidf_cos(x, x') * sum_c lr_c dloss(x)/df . dloss(x')/df``. > 0 = proponent.

    TracIn-WE without the embedding gradients: shared words are weighted by
    TF-IDF (counts over the model's own tokens, smoothed IDF of the training
    texts, special and padding tokens left out) and the direction by the
    logit-gradient similarity, which is positive when both examples pull the
    same class up.
    """

    name = "TF-IDF"

    def represent(self, c: int, examples: Examples) -> TfIdfSide:
        clf = self.classifier(c)
        return TfIdfSide(super().represent(c, examples), token_bags(clf, examples.texts, self.batch_size), clf.vocab_size)

    def compare(self, queries: TfIdfSide, keys: TfIdfSide) -> torch.Tensor:
        cosine = tfidf_cosine(keys.bags, queries.bags, keys.vocab_size)  # keys: the whole training set (its IDF)
        return cosine * (queries.records.loss_grads @ keys.records.loss_grads.T)


def token_bags(classifier: TextClassifier, texts: Sequence[str], batch_size: int = 256) -> list[torch.Tensor]:
    """Token ids of each text, without padding and special tokens."""
    specials = torch.tensor(sorted(classifier.special_token_ids), dtype=torch.long)
    bags = []
    for b in range(0, len(texts), batch_size):
        batch = classifier.tokenize(list(texts[b : b + batch_size]))
        ids, mask = batch["input_ids"], batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
        keep = mask & ~torch.isin(ids, specials)
        bags.extend(row[k].long() for row, k in zip(ids, keep))
    return bags


def tfidf_cosine(train_bags: Sequence[torch.Tensor], test_bags: Sequence[torch.Tensor], vocab_size: int) -> torch.Tensor:
    """Cosine of L2-normalised TF-IDF vectors (n_test, n_train); IDF = log((1+n)/(1+df)) + 1 over the training bags."""
    n = len(train_bags)
    df = torch.zeros(vocab_size, dtype=torch.float64)
    for bag in train_bags:
        df[torch.unique(bag)] += 1
    idf = torch.log((1.0 + n) / (1.0 + df)) + 1.0

    def matrix(bags: Sequence[torch.Tensor]) -> torch.Tensor:
        rows, cols, vals = [], [], []
        for i, bag in enumerate(bags):
            tokens, counts = torch.unique(bag, return_counts=True)
            weights = counts.double() * idf[tokens]
            weights = weights / weights.norm().clamp_min(1e-30)
            rows.append(torch.full_like(tokens, i))
            cols.append(tokens)
            vals.append(weights)
        index = torch.stack([torch.cat(rows), torch.cat(cols)]) if rows else torch.zeros(2, 0, dtype=torch.long)
        return torch.sparse_coo_tensor(index, torch.cat(vals) if vals else torch.zeros(0, dtype=torch.float64),
                                       (len(bags), vocab_size), check_invariants=True).coalesce()

    train_matrix, test_dense = matrix(train_bags), matrix(test_bags).to_dense()
    return torch.sparse.mm(train_matrix, test_dense.T).T
