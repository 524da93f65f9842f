"""The contract every influence method shares, and what the baselines need from a checkpoint list.

Every method returns scores of the shape and sign of `TracInWE.scores`:
``(n_test, n_train)``, **> 0 = proponent** (removing or down-weighting the
training example is expected to raise the test loss), < 0 = opponent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from tracinwe.errors import CheckpointError, TracInWEError
from tracinwe.models.contract import TextClassifier
from tracinwe.models.huggingface import as_text_classifier
from tracinwe.scoring.influence import SIGN_CONVENTION
from tracinwe.validation import check_labels, check_texts


class InfluenceMethod(ABC):
    """Scores training examples against test examples; > 0 means proponent."""

    #: Short display name, used as the method's key in evaluation tables.
    name: str = "influence"
    sign_convention = SIGN_CONVENTION

    @abstractmethod
    def scores(
        self,
        train_texts: Sequence[str],
        train_labels: Sequence[int | str],
        test_texts: Sequence[str],
        test_labels: Sequence[int | str] | None = None,
    ) -> np.ndarray:
        """Influence of each training example on each test example: (n_test, n_train), > 0 = proponent.

        ``test_labels=None`` explains the final model's predictions.
        """

    def self_influence(self, texts: Sequence[str], labels: Sequence[int | str]) -> np.ndarray:
        """Each example's influence on itself (n,): high values flag mislabelled or atypical examples."""
        raise TracInWEError(f"{self.name} has no self-influence: use a TracIn-style method or LossSelfInfluence")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CheckpointMethod(InfluenceMethod):
    """A method built, like `TracInWE`, from ``[(model, learning_rate), ...]`` (oldest first) and a tokenizer.

    Models may be HuggingFace classifiers (with ``tokenizer``) or `TextClassifier`s.
    """

    def __init__(
        self,
        models: Sequence[tuple[object, float]],
        tokenizer=None,
        max_length: int = 128,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        if not models:
            raise CheckpointError("no checkpoints given: pass models=[(model, learning_rate), ...]")
        self.classifiers: list[TextClassifier] = []
        self.learning_rates: list[float] = []
        for model, lr in models:
            if not isinstance(lr, (int, float)) or lr <= 0:
                raise CheckpointError(f"learning rate {lr!r} is not a positive number: pass (model, lr) pairs with lr > 0")
            self.classifiers.append(as_text_classifier(model, tokenizer, max_length))
            self.learning_rates.append(float(lr))
        self.batch_size = int(batch_size)
        self.device = device

    @property
    def final(self) -> TextClassifier:
        """The last checkpoint: the model whose predictions are explained."""
        return self.classifiers[-1]

    def checked(self, texts: Sequence[str], labels: Sequence[int | str] | None, what: str) -> tuple[list[str], list[int] | None]:
        """Texts and labels validated against the final model (one-line errors)."""
        texts = check_texts(texts, f"{what}_texts")
        return texts, check_labels(labels, len(texts), self.final, f"{what}_labels")

    def predicted_labels(self, texts: Sequence[str]) -> list[int]:
        """The final checkpoint's predicted class per text."""
        from tracinwe.evaluate.baselines.last_layer_records import last_layer_records

        return last_layer_records(self.final, texts, None, self.batch_size, self.device).labels.tolist()


def as_numpy(scores: torch.Tensor) -> np.ndarray:
    """float64 numpy copy of a score tensor."""
    return scores.detach().to("cpu", torch.float64).numpy()
