"""TracIn-WE under its evaluation name, and the two reference points: random scores and the loss."""

from __future__ import annotations

import numpy as np
import torch

from tracinwe.evaluate.baselines.last_layer import LastLayerMethod
from tracinwe.evaluate.baselines.last_layer_records import LastLayerRecords
from tracinwe.method import InfluenceMethod
from tracinwe.tracin import TracInWE
from tracinwe.validation import check_texts


class TracInWEMethod(InfluenceMethod):
    """A `TracInWE` (full or Top-k) under an evaluation name; scores are ``tracin``'s. > 0 = proponent."""

    def __init__(self, tracin: TracInWE, name: str | None = None) -> None:
        self.tracin = tracin
        self.name = name or tracin.name

    @classmethod
    def from_models(cls, models, tokenizer=None, top_k: int | None = None, name: str | None = None, **kwargs) -> "TracInWEMethod":
        """Build the `TracInWE` from ``[(model, lr), ...]`` like every other method."""
        return cls(TracInWE(models, tokenizer=tokenizer, top_k=top_k, **kwargs), name)

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        return self.tracin.scores(train_texts, train_labels, test_texts, test_labels)

    def self_influence(self, texts, labels) -> np.ndarray:
        return self.tracin.self_influence(texts, labels)


class RandomInfluence(InfluenceMethod):
    """Standard-normal scores from a seeded generator: the chance level of every evaluation (no model, no checkpoints)."""

    name = "random"

    def __init__(self, seed: int = 0, models=None, **_ignored) -> None:
        self.seed = int(seed)

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        n_train, n_test = len(check_texts(train_texts, "train_texts")), len(check_texts(test_texts, "test_texts"))
        return np.random.default_rng(self.seed).standard_normal((n_test, n_train))

    def self_influence(self, texts, labels) -> np.ndarray:
        return np.random.default_rng(self.seed).standard_normal(len(check_texts(texts)))


class LossSelfInfluence(LastLayerMethod):
    """Self-influence = the final checkpoint's cross-entropy loss: the simplest mislabel detector (no pairwise scores)."""

    name = "loss"

    def checkpoint_weights(self) -> list[tuple[int, float]]:
        return self.final_checkpoint()

    def diagonal(self, rep: LastLayerRecords) -> torch.Tensor:
        return rep.losses
