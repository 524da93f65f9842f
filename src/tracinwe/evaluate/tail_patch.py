"""The tail-patch check (TrackStar): does one training step on a retrieved document raise the queried fact?

Starting from a trained decoder, for every (query, document) pair: take ONE plain SGD step (no momentum,
fixed ``learning_rate``) on the document's summed target-token loss, measure the change of the query's
``log p(completion | prompt)`` (summed over its completion tokens), and restore the weights. A method's
tail-patch score for a query is the mean change over its top-k proponents. Every document is stepped once
and every query that retrieved it is measured after that step, so shared documents cost one step.

Why SGD and not the run's AdamW: a single Adam step from a fresh state is a sign step of size ``lr`` on every
weight, dominated by weights the document barely touches; the run's first moment is not saved. To first order
an SGD step changes ``log p`` by ``lr * <grad log p(query), -grad loss(doc)>``, the full-gradient TracIn
score of that pair, so the check favours whole-model gradient methods; it is stated beside the results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.statistics import mean_and_se, paired_comparison
from tracinwe.models.causal_lm import CausalLanguageModel, LMExample

__all__ = ["TailPatchResult", "completion_log_probs", "tail_patch"]


def completion_log_probs(lm: CausalLanguageModel, examples: Sequence[LMExample], batch_size: int = 64) -> np.ndarray:
    """``log p(target tokens)`` of every example (the completion of a prompt/completion dict), summed: (n,)."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(examples), batch_size):
            batch = lm.tokenize(list(examples[lo : lo + batch_size]))
            out.append(-lm.token_losses(batch).sum(dim=1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class TailPatchResult:
    """Per method, the mean change of each query's completion log-probability over its top-k documents."""

    k: int
    learning_rate: float
    before: np.ndarray  # (n_query,) log p before any step
    per_query: dict[str, np.ndarray]  # method -> (n_query,) mean change over its k documents
    pair_changes: dict[tuple[int, int], float]  # (query, document) -> change, for every pair measured

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for method, values in self.per_query.items():
            mean, se = mean_and_se(values)
            out[method] = {"mean": mean, "se": se, "share_positive": float(np.mean(values > 0)), "n": int(values.size)}
        return out

    def paired(self, a: str, b: str) -> dict:
        for m in (a, b):
            if m not in self.per_query:
                raise TracInWEError(f"no method {m!r} in the tail-patch result: pick from {sorted(self.per_query)}")
        return paired_comparison(self.per_query[a], self.per_query[b]).to_json()


def tail_patch(
    lm: CausalLanguageModel,
    train_examples: Sequence[LMExample],
    query_examples: Sequence[LMExample],
    top_documents: Mapping[str, Sequence[Sequence[int]]],
    learning_rate: float,
    progress: bool = False,
) -> TailPatchResult:
    """Tail-patch every method's retrieved documents: ``top_documents[method][i]`` are query ``i``'s top-k ids.

    The model is left with its weights as they were. Returns per method and query the mean change of
    ``log p(completion | prompt)`` after one SGD step (``learning_rate``) on each document separately.
    """
    if len(query_examples) == 0:
        raise TracInWEError("no queries to tail-patch: pass at least one")
    if not top_documents:
        raise TracInWEError("no methods to tail-patch: pass {method: [[doc ids] per query]}")
    if not learning_rate > 0:
        raise TracInWEError(f"learning_rate must be positive, got {learning_rate}")
    ks = set()
    for method, rows in top_documents.items():
        if len(rows) != len(query_examples):
            raise TracInWEError(f"{method}: {len(rows)} document lists for {len(query_examples)} queries: pass one per query")
        for row in rows:
            if len(row) == 0 or min(row) < 0 or max(row) >= len(train_examples):
                raise TracInWEError(f"{method}: document ids must be a non-empty list in [0, {len(train_examples)})")
            ks.add(len(row))
    if len(ks) != 1:
        raise TracInWEError(f"every query needs the same number of documents, got {sorted(ks)}")
    needed: dict[int, set[int]] = {}
    for rows in top_documents.values():
        for q, row in enumerate(rows):
            for d in row:
                needed.setdefault(int(d), set()).add(q)
    module = lm.module
    was_training = module.training
    module.eval()
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TracInWEError("the model has no trainable parameters: set requires_grad on its weights")
    saved = [p.detach().clone() for p in params]
    before = completion_log_probs(lm, query_examples)
    changes: dict[tuple[int, int], float] = {}
    docs = sorted(needed)
    if progress:
        from tqdm.auto import tqdm

        docs = tqdm(docs, desc="tail patch")
    try:
        for d in docs:
            loss = lm.token_losses(lm.tokenize([train_examples[d]])).sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.sub_(learning_rate * g)
            queries = sorted(needed[d])
            after = completion_log_probs(lm, [query_examples[q] for q in queries])
            for q, value in zip(queries, after):
                changes[(q, d)] = float(value - before[q])
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        module.train(was_training)
    per_query = {m: np.array([np.mean([changes[(q, int(d))] for d in row]) for q, row in enumerate(rows)])
                 for m, rows in top_documents.items()}
    return TailPatchResult(ks.pop(), float(learning_rate), before, per_query, changes)
