"""Exact TracIn-WE between language-model documents, and its per-token decomposition.

``score(test, train) = sum_c lr_c sum_{w in test and train} G_c(train)[w] . G_c(test)[w]`` where
``G_c(x)[w]`` sums the gradient of x's summed target-token loss at the input word-embedding lookup
output over x's positions holding token w. Positive = proponent (a step on train lowers the test
loss). Capture and scoring are the classifiers' own (`tracinwe.capture`, `tracinwe.scoring`); only
the model adapter differs (`tracinwe.models.causal_lm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tracinwe.capture.gradients import CaptureSettings, capture_checkpoints
from tracinwe.capture.records import TokenGradients
from tracinwe.models.causal_lm import CausalLanguageModel, LMExample, as_causal_lm
from tracinwe.scoring.influence import tracin_matrix
from tracinwe.scoring.words import WordContribution, token_contributions, word_contributions

__all__ = ["LMInfluence", "lm_tracin_scores", "lm_token_gradients"]


@dataclass
class LMInfluence:
    """Scores of test documents against training documents, and the records they came from."""

    scores: torch.Tensor  # (n_test, n_train) float64, positive = proponent
    train_records: list[TokenGradients]  # one per checkpoint
    test_records: list[TokenGradients]
    learning_rates: list[float]
    models: list[CausalLanguageModel]
    train: Sequence[LMExample]
    test: Sequence[LMExample]

    def token_contributions(self, test_index: int, train_index: int) -> dict[int, float]:
        """``{token_id: contribution}`` over shared token types; the values sum to ``scores[test_index, train_index]``."""
        return token_contributions(self.train_records, self.test_records, self.learning_rates, train_index, test_index)

    def word_contributions(self, test_index: int, train_index: int) -> list[WordContribution]:
        """Shared tokens with their strings and positions, largest magnitude first."""
        totals = self.token_contributions(test_index, train_index)
        lm = self.models[-1]
        train_ids, _ = lm.token_ids(self.train[train_index])
        test_ids, _ = lm.token_ids(self.test[test_index])
        return word_contributions(totals, lm.token_strings(sorted(totals)), train_ids, test_ids)

    def top(self, test_index: int, k: int = 10, proponents: bool = True) -> tuple[list[int], list[float]]:
        """Indices and scores of the ``k`` strongest proponents (or opponents) of one test document."""
        row = self.scores[test_index]
        order = torch.argsort(row, descending=proponents)[:k]
        return order.tolist(), row[order].tolist()


def _checkpoints(checkpoints, tokenizer, max_length: int) -> tuple[list[CausalLanguageModel], list[float]]:
    models, rates = [], []
    for model, lr in checkpoints:
        models.append(as_causal_lm(model, tokenizer, max_length=max_length))
        rates.append(float(lr))
    if not models:
        raise ValueError("no checkpoints: pass [(model, learning_rate), ...]")
    return models, rates


def lm_token_gradients(
    models: Sequence[CausalLanguageModel], examples: Sequence[LMExample], settings: CaptureSettings | None = None
) -> list[TokenGradients]:
    """Each checkpoint's per-document token-gradient records (labels unused)."""
    return capture_checkpoints(models, list(examples), None, settings=settings or CaptureSettings())


def lm_tracin_scores(
    checkpoints: Sequence[tuple[object, float]],
    train: Sequence[LMExample],
    test: Sequence[LMExample],
    tokenizer=None,
    settings: CaptureSettings | None = None,
) -> LMInfluence:
    """TracIn-WE (n_test, n_train) of LM documents over ``[(model, learning_rate), ...]``.

    A model is a `CausalLanguageModel` or a HF ``*ForCausalLM`` (then pass ``tokenizer``; documents
    are cut at ``settings.max_length`` tokens). ``settings.top_k`` gives TracIn-WE-Topk.
    """
    settings = settings or CaptureSettings()
    models, rates = _checkpoints(checkpoints, tokenizer, settings.max_length)
    train_records = lm_token_gradients(models, train, settings)
    test_records = lm_token_gradients(models, test, settings)
    scores = tracin_matrix(test_records, train_records, rates)
    return LMInfluence(scores, train_records, test_records, rates, models, train, test)
