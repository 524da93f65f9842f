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

from tracinwe.capture.gradients import CaptureSettings, batch_token_gradients, capture_checkpoints
from tracinwe.capture.model_state import prepared_for_capture
from tracinwe.capture.records import TokenGradients
from tracinwe.models.causal_lm import LOSS_MASK, CausalLanguageModel, LMExample, as_causal_lm
from tracinwe.scoring.influence import tracin_matrix
from tracinwe.scoring.words import WordContribution, token_contributions, word_contributions

__all__ = ["LMInfluence", "TargetTokenScores", "lm_tracin_scores", "lm_token_gradients", "target_token_gradients"]


@dataclass
class TargetTokenScores:
    """One test document's scores split by its target tokens: ``scores.sum(0)`` is its score row."""

    token_ids: list[int]  # the target tokens, in order
    positions: list[int]  # their positions in the tokenised document
    tokens: list[str]
    scores: torch.Tensor  # (n_targets, n_train) float64


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

    def target_token_scores(self, test_index: int, settings: CaptureSettings | None = None) -> TargetTokenScores:
        """Split ``scores[test_index]`` by the test document's target tokens (each token's own loss term).

        Exact for full TracIn-WE: the loss is a sum over target tokens, so are its gradients and the
        scores (with ``top_k`` each row keeps its own top positions and the rows do not sum to a Topk score).
        """
        example = self.test[test_index]
        per_checkpoint = [target_token_gradients(lm, example, settings) for lm in self.models]
        scores = tracin_matrix(per_checkpoint, self.train_records, self.learning_rates)
        lm = self.models[-1]
        ids, targets = lm.token_ids(example)
        positions = [i for i, t in enumerate(targets) if t]
        token_ids = [ids[i] for i in positions]
        return TargetTokenScores(token_ids, positions, lm.token_strings(token_ids), scores)

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


def target_token_gradients(
    lm: CausalLanguageModel, example: LMExample, settings: CaptureSettings | None = None
) -> TokenGradients:
    """Records of one document with one row per target token: row t differentiates only that token's loss.

    The document is repeated once per target token with a one-token loss mask; in eval mode the
    copies do not interact, so one batched backward pass per chunk gives every row exactly.
    """
    settings = settings or CaptureSettings()
    batch = lm.tokenize([example])
    targets = batch[LOSS_MASK][0].nonzero(as_tuple=True)[0]
    parts = []
    device = next(lm.module.parameters()).device
    with prepared_for_capture(lm.module, None), torch.inference_mode(False):
        for lo in range(0, targets.numel(), settings.batch_size):
            chunk = targets[lo : lo + settings.batch_size]
            copies = {k: v.expand(chunk.numel(), -1).clone().to(device) for k, v in batch.items()}
            copies[LOSS_MASK].zero_()
            copies[LOSS_MASK][torch.arange(chunk.numel()), chunk] = True
            parts.append(batch_token_gradients(lm, copies, None, settings))
    if not parts:
        raise ValueError("the document has no target tokens (a one-token text predicts nothing)")
    return TokenGradients.concat(parts)
