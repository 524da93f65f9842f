"""Which held-out examples an evaluation explains: class-balanced, seeded, fixed before any scoring."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tracinwe.errors import TracInWEError

#: Points whose gold probability exceeds this cannot move: they are counted and reported.
SATURATED = 0.999


def balanced_points(labels: Sequence[int], n_points: int, seed: int = 0, min_per_class: int = 5) -> list[int]:
    """About ``n_points`` positions in ``labels``, equally many per class, drawn with a seeded generator.

    Uses as many classes as allow ``min_per_class`` points each (at least two), taking the
    largest classes first and dropping classes too small to give their share; the total is
    ``n_points`` rounded down to a multiple of the classes used. The selection depends on the
    labels only, never on a model.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    classes, counts = classes[order], counts[order]
    for n_classes in range(min(len(classes), max(2, n_points // min_per_class)), 0, -1):
        per_class = n_points // n_classes
        if per_class >= 1 and counts[n_classes - 1] >= per_class:
            break
    else:
        raise TracInWEError(f"cannot draw {n_points} balanced points from {len(labels)} labelled examples: ask for fewer")
    rng = np.random.default_rng([seed, 11])
    picked = [int(i) for c in classes[:n_classes] for i in rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)]
    return sorted(picked)


def saturated_count(gold_probabilities) -> int:
    """How many points have a gold probability above `SATURATED` (no deletion can raise it further)."""
    return int((np.asarray(gold_probabilities) > SATURATED).sum())
