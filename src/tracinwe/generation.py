"""Explain a language model's completion: which training documents support it, token by token.

The completion's loss is a sum over its tokens, so its TracIn-WE score against each training
document is the sum of one score per generated token (`tracinwe.lm.target_token_gradients`: the
document repeated with a one-token loss mask). For full TracIn-WE the per-token rows sum exactly to
the completion's score; with ``top_k`` each row keeps its own top positions and they do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from tracinwe.capture.records import TokenGradients
from tracinwe.errors import InputTextError, TracInWEError
from tracinwe.lm import target_token_gradients
from tracinwe.method import Examples
from tracinwe.models.causal_lm import CausalLanguageModel, LMExample
from tracinwe.scoring.words import WordContribution, token_contributions, word_contributions

__all__ = ["GeneratedToken", "GenerationExplanation", "Support", "explain_generation", "generate_completion"]


@dataclass
class Support:
    """A training document's share of a score: ``score > 0`` supports (proponent), ``< 0`` opposes."""

    index: int
    score: float
    document: LMExample
    words: list[WordContribution] = field(default_factory=list)  # shared tokens, largest magnitude first


@dataclass
class GeneratedToken:
    """One completion token (a target of the loss) and the training documents that most support it."""

    position: int  # in the tokenised prompt + completion
    token_id: int
    token: str
    supporters: list[Support]


@dataclass
class GenerationExplanation:
    """A completion, its top proponents and opponents, and the support of each of its tokens."""

    prompt: str
    completion: str
    scores: np.ndarray  # (n_train,) the completion's score against each training document, > 0 = proponent
    token_scores: np.ndarray  # (n_tokens, n_train); for full TracIn-WE the rows sum to ``scores``
    proponents: list[Support]
    opponents: list[Support]
    tokens: list[GeneratedToken]


def generate_completion(lm: CausalLanguageModel, prompt: str, max_new_tokens: int) -> str:
    """The final model's greedy completion of ``prompt`` as text (special tokens dropped)."""
    tokenizer, module = lm.tokenizer, lm.module
    prompt_ids = tokenizer(prompt)["input_ids"]
    if len(prompt_ids) + max_new_tokens > lm.max_length:
        raise InputTextError(f"the prompt has {len(prompt_ids)} tokens: with {max_new_tokens} new tokens it does not fit the "
                             f"model's max_length={lm.max_length}: shorten the prompt or ask for fewer new tokens")
    ids = torch.tensor([prompt_ids], device=next(module.parameters()).device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)
    finally:
        module.train(was_training)
    text = tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
    if not text.strip():
        raise InputTextError(f"the model generated no text for prompt {prompt[:40]!r}: pass completion= or raise max_new_tokens")
    return text


def explain_generation(
    tw,
    prompt: str,
    train: Sequence[LMExample],
    max_new_tokens: int = 20,
    completion: str | None = None,
    k: int = 5,
    words: int | None = 5,
) -> GenerationExplanation:
    """Generate (greedily, with the final checkpoint) or take ``completion`` and explain it against ``train``.

    ``tw`` is a `TracInWE` over causal-LM checkpoints. Returns the completion, its ``k`` top
    proponents and opponents and, per completion token, its ``k`` top supporting training
    documents; each `Support` carries up to ``words`` shared-token contributions (None: all).
    The completion is explained as text: it is tokenised again with its prompt.
    """
    if not tw.is_causal_lm:
        raise TracInWEError("explain_generation needs causal language model checkpoints: pass AutoModelForCausalLM models")
    if not isinstance(prompt, str):
        raise InputTextError(f"the prompt is {type(prompt).__name__}, not text: pass a string")
    if completion is None:
        completion = generate_completion(tw.final, prompt, max_new_tokens)
    example: LMExample = {"prompt": prompt, "completion": completion}
    tw.check_inputs([example], None, None, "completion")
    docs = tw.check_inputs(train, None, None, "train")[0]
    scores, token_scores, whole, per_token = _score(tw, example, docs)
    ids, targets = tw.final.token_ids(example)
    positions = [p for p, t in enumerate(targets) if t]
    rows = _rows_to_explain(scores, token_scores, k)
    train_records = tw.capture([docs[r] for r in rows], None, role="train")
    at = {r: j for j, r in enumerate(rows)}

    def support(row: int, score: float, test_records: list[TokenGradients], test_index: int) -> Support:
        totals = token_contributions(train_records, test_records, tw.learning_rates, at[row], test_index)
        found = word_contributions(totals, tw.final.token_strings(sorted(totals)), tw.final.token_ids(docs[row])[0], ids)
        return Support(row, float(score), docs[row], found if words is None else found[:words])

    pro, opp = _top(scores, k), _top(-scores, k)
    tokens = [
        GeneratedToken(p, ids[p], tw.final.token_strings([ids[p]])[0],
                       [support(r, token_scores[t, r], per_token, t) for r in _top(token_scores[t], k)])
        for t, p in enumerate(positions)
    ]
    return GenerationExplanation(
        prompt, completion, scores, token_scores,
        [support(r, scores[r], whole, 0) for r in pro], [support(r, scores[r], whole, 0) for r in opp], tokens,
    )


def _score(tw, example: LMExample, docs: list) -> tuple[np.ndarray, np.ndarray, list[TokenGradients], list[TokenGradients]]:
    """The completion's score row and its per-token rows, one pass over the training documents per checkpoint."""
    whole, per_token = [], []
    out = None
    for c, weight in tw.checkpoint_weights():
        record = tw.represent(c, Examples([example], None))
        tokens = target_token_gradients(tw.classifier(c), example, tw.settings)
        whole.append(record)
        per_token.append(tokens)
        queries = TokenGradients.concat([record, tokens])
        if out is None:
            out = torch.zeros(len(queries), len(docs), dtype=torch.float64)
        for start, keys in tw.represent_chunks(c, Examples(docs, None)):
            block = tw.compare(queries, keys).to("cpu", torch.float64)
            out[:, start : start + block.shape[1]] += weight * block
    assert out is not None
    return out[0].numpy(), out[1:].numpy(), whole, per_token


def _top(values: np.ndarray, k: int) -> list[int]:
    return np.argsort(-values, kind="stable")[: min(k, values.shape[0])].tolist()


def _rows_to_explain(scores: np.ndarray, token_scores: np.ndarray, k: int) -> list[int]:
    """Every training row that appears in some top-k list (their records are captured once)."""
    rows = set(_top(scores, k)) | set(_top(-scores, k))
    for row in token_scores:
        rows.update(_top(row, k))
    return sorted(rows)
