"""Fact tracing (as TrackStar and Bergson evaluate LM attribution): do a method's top-ranked training documents
include the documents that state the queried fact?

For every fact query a method gives one score per training document (higher = more relevant / proponent).
Per query:

- reciprocal rank of the first gold document: ``1 / rank`` where ``rank = 1 + (non-gold documents scoring above
  the best gold one) + t / (m + 1)`` (``t`` non-gold and ``m`` gold documents tie with it: the expected position
  of the first gold one under random tie-breaking);
- recall@k: the share of the gold documents in the top ``k``, each counted with its probability of being there
  under random tie-breaking (so a method that scores everything 0 gets ``k / n``, as random ranking does).

Methods are compared paired, over the same queries (`tracinwe.evaluate.statistics.paired_comparison`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.statistics import mean_and_se, paired_comparison

__all__ = ["FactTracingReport", "evaluate_fact_tracing", "recall_at_k", "reciprocal_rank"]


def _checked(scores, gold: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    row = np.asarray(scores, dtype=np.float64)
    if row.ndim != 1 or row.size == 0:
        raise TracInWEError(f"a query's scores must be a non-empty 1-D array, got shape {row.shape}")
    ids = np.unique(np.asarray(list(gold), dtype=np.int64))
    if ids.size == 0:
        raise TracInWEError("a fact query has no gold documents: pass the ids of the documents that state it")
    if ids.min() < 0 or ids.max() >= row.size:
        raise TracInWEError(f"gold document ids must lie in [0, {row.size}), got {ids.min()}..{ids.max()}")
    if not np.all(np.isfinite(row)):
        raise TracInWEError("a query's scores contain NaN or infinity: check the method's output")
    return row, ids


def reciprocal_rank(scores, gold: Sequence[int]) -> float:
    """``1 / rank`` of the best-ranked gold document (ties broken in expectation, see the module doc)."""
    row, ids = _checked(scores, gold)
    is_gold = np.zeros(row.size, dtype=bool)
    is_gold[ids] = True
    best = row[ids].max()
    above = int(np.sum((row > best) & ~is_gold))
    tied_other = int(np.sum((row == best) & ~is_gold))
    tied_gold = int(np.sum(row[ids] == best))
    return 1.0 / (1.0 + above + tied_other / (tied_gold + 1.0))


def recall_at_k(scores, gold: Sequence[int], k: int = 10) -> float:
    """Expected share of the gold documents in the top ``k`` (random tie-breaking)."""
    if k < 1:
        raise TracInWEError(f"k must be at least 1, got {k}")
    row, ids = _checked(scores, gold)
    hits = 0.0
    for g in ids:
        higher = int(np.sum(row > row[g]))
        tied = int(np.sum(row == row[g]))  # includes g itself
        hits += float(np.clip((k - higher) / tied, 0.0, 1.0))
    return hits / ids.size


@dataclass
class FactTracingReport:
    """Per method: per-query reciprocal ranks and recall@k, their means ± SE, paired differences against references."""

    k: int
    per_query: dict[str, dict[str, np.ndarray]]  # method -> {"rr": (n,), "recall": (n,)}
    subsets: dict[str, np.ndarray] = field(default_factory=dict)  # subset name -> boolean mask over queries

    def summary(self, subset: str = "all") -> dict[str, dict[str, float]]:
        """``{method: {"mrr", "mrr_se", "recall", "recall_se", "n"}}`` over the queries of ``subset``."""
        mask = self._mask(subset)
        out = {}
        for method, values in self.per_query.items():
            if not mask.any():
                out[method] = {"mrr": float("nan"), "mrr_se": float("nan"), f"recall@{self.k}": float("nan"),
                               f"recall@{self.k}_se": float("nan"), "n": 0}
                continue
            mrr, mrr_se = mean_and_se(values["rr"][mask])
            rec, rec_se = mean_and_se(values["recall"][mask])
            out[method] = {"mrr": mrr, "mrr_se": mrr_se, f"recall@{self.k}": rec, f"recall@{self.k}_se": rec_se,
                           "n": int(mask.sum())}
        return out

    def paired(self, reference: str, subset: str = "all") -> dict[str, dict[str, dict]]:
        """``{method: {"mrr": PairedComparison json, "recall": ...}}`` of ``method - reference`` over ``subset``."""
        if reference not in self.per_query:
            raise TracInWEError(f"no method {reference!r} to compare against: pick from {sorted(self.per_query)}")
        mask = self._mask(subset)
        ref = self.per_query[reference]
        out = {}
        for method, values in self.per_query.items():
            if method == reference or mask.sum() < 2:
                continue
            out[method] = {metric: paired_comparison(values[metric][mask], ref[metric][mask]).to_json()
                           for metric in ("rr", "recall")}
        return out

    def _mask(self, subset: str) -> np.ndarray:
        n = len(next(iter(self.per_query.values()))["rr"])
        if subset == "all":
            return np.ones(n, dtype=bool)
        if subset not in self.subsets:
            raise TracInWEError(f"no query subset {subset!r}: pick from {['all', *self.subsets]}")
        return self.subsets[subset]

    def to_json(self, references: Sequence[str] = ()) -> dict:
        subsets = ["all", *self.subsets]
        return {
            "k": self.k,
            "summary": {s: self.summary(s) for s in subsets},
            "paired": {s: {f"minus {r}": self.paired(r, s) for r in references if r in self.per_query} for s in subsets},
            "per_query": {m: {k: v.tolist() for k, v in d.items()} for m, d in self.per_query.items()},
            "subsets": {s: np.flatnonzero(mask).tolist() for s, mask in self.subsets.items()},
        }


def evaluate_fact_tracing(
    scores: Mapping[str, np.ndarray],
    gold: Sequence[Sequence[int]],
    k: int = 10,
    subsets: Mapping[str, Sequence[bool]] | None = None,
) -> FactTracingReport:
    """Reciprocal rank and recall@k of every method's (n_query, n_train) scores against each query's gold documents."""
    if not scores:
        raise TracInWEError("no methods to evaluate: pass {name: (n_query, n_train) scores}")
    if len(gold) == 0:
        raise TracInWEError("no fact queries: pass at least one query's gold documents")
    per_query = {}
    for method, matrix in scores.items():
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != len(gold):
            raise TracInWEError(f"{method}: scores of shape {matrix.shape} for {len(gold)} queries: pass (n_query, n_train)")
        per_query[method] = {
            "rr": np.array([reciprocal_rank(matrix[i], g) for i, g in enumerate(gold)]),
            "recall": np.array([recall_at_k(matrix[i], g, k) for i, g in enumerate(gold)]),
        }
    masks = {}
    for name, mask in (subsets or {}).items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(gold),):
            raise TracInWEError(f"subset {name!r} has {mask.size} flags for {len(gold)} queries: pass one per query")
        masks[name] = mask
    return FactTracingReport(k, per_query, masks)
