"""Which held-out examples an evaluation explains: class-balanced, seeded, fixed before any scoring."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tracinwe.errors import TracInWEError

#: Points whose gold probability exceeds this cannot move: they are counted and reported.
SATURATED = 0.999


def balanced_points(labels: Sequence[int], n_points: int, seed: int = 0, min_per_class: int = 10) -> list[int]:
    """``n_points`` positions in ``labels``, equally many per class, drawn with a seeded generator.

    Uses every class when ``n_points`` allows ``min_per_class`` each, otherwise the largest
    classes (most examples available); the selection depends on the labels only, never on a model.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    order = classes[np.argsort(-counts, kind="stable")]
    n_classes = max(1, min(len(classes), n_points // min_per_class))
    chosen = order[:n_classes]
    per_class = n_points // n_classes
    short = [int(c) for c in chosen if (labels == c).sum() < per_class]
    if per_class < 1 or short:
        raise TracInWEError(f"{n_points} balanced points need {per_class} per class but classes {short} have fewer: "
                            "ask for fewer points or a larger held-out sample")
    rng = np.random.default_rng([seed, 11])
    picked = [int(i) for c in chosen for i in rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)]
    return sorted(picked)


def saturated_count(gold_probabilities) -> int:
    """How many points have a gold probability above `SATURATED` (no deletion can raise it further)."""
    return int((np.asarray(gold_probabilities) > SATURATED).sum())
