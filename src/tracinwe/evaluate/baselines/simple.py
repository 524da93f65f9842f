"""TracIn-WE behind the common interface, and the two reference points: random scores and the loss."""

from __future__ import annotations

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.baselines.base import CheckpointMethod, InfluenceMethod, as_numpy
from tracinwe.evaluate.baselines.last_layer_records import last_layer_records
from tracinwe.tracin import TracInWE
from tracinwe.validation import check_texts


class TracInWEMethod(InfluenceMethod):
    """A `TracInWE` (full or Top-k) as an `InfluenceMethod`. > 0 = proponent."""

    def __init__(self, tracin: TracInWE, name: str | None = None) -> None:
        self.tracin = tracin
        top_k = tracin.settings.top_k
        self.name = name or ("TracIn-WE" if top_k is None else f"TracIn-WE-Top{top_k}")

    @classmethod
    def from_models(cls, models, tokenizer=None, top_k: int | None = None, name: str | None = None, **kwargs) -> "TracInWEMethod":
        """Build the `TracInWE` from ``[(model, lr), ...]`` like every other method."""
        return cls(TracInWE(models, tokenizer=tokenizer, top_k=top_k, **kwargs), name)

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        return self.tracin.scores(train_texts, train_labels, test_texts, test_labels)

    def self_influence(self, texts, labels) -> np.ndarray:
        return self.tracin.self_influence(texts, labels)


class RandomInfluence(InfluenceMethod):
    """Standard-normal scores from a seeded generator: the chance level of every evaluation."""

    name = "random"

    def __init__(self, seed: int = 0, models=None, **_ignored) -> None:
        self.seed = int(seed)

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        n_train, n_test = len(check_texts(train_texts, "train_texts")), len(check_texts(test_texts, "test_texts"))
        return np.random.default_rng(self.seed).standard_normal((n_test, n_train))

    def self_influence(self, texts, labels) -> np.ndarray:
        return np.random.default_rng(self.seed).standard_normal(len(check_texts(texts)))


class LossSelfInfluence(CheckpointMethod):
    """Self-influence = the final checkpoint's cross-entropy loss: the simplest mislabel detector."""

    name = "loss"

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        raise TracInWEError("LossSelfInfluence ranks examples by their own loss only: call self_influence(texts, labels)")

    def self_influence(self, texts, labels) -> np.ndarray:
        texts, labels = self.checked(texts, labels, "self_influence")
        if labels is None:
            raise ValueError("labels are required")
        return as_numpy(last_layer_records(self.final, texts, labels, self.batch_size, self.device).losses)
