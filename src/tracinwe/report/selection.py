"""Which test examples a report shows: some misclassified, some confidently right."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pick_examples"]


def pick_examples(probabilities: np.ndarray, labels: Sequence[int], n: int, mistakes: bool = True) -> list[int]:
    """Indices of ``n`` examples: up to half misclassified (most confident mistakes first), the rest
    correct (most confident first). ``mistakes=False``: the first ``n`` in order."""
    if not mistakes:
        return list(range(min(n, len(labels))))
    pred = probabilities.argmax(1)
    confidence = probabilities.max(1)
    order = np.argsort(-confidence, kind="stable")
    wrong = [int(i) for i in order if pred[i] != labels[i]]
    right = [int(i) for i in order if pred[i] == labels[i]]
    chosen = wrong[: n // 2]
    chosen += right[: n - len(chosen)]
    chosen += wrong[len(wrong[: n // 2]) : len(wrong[: n // 2]) + n - len(chosen)]  # too few correct ones
    return chosen
