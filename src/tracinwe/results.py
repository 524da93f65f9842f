"""Result types: top-k proponents and opponents, the shape captum.influence users know."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TopInfluences:
    """Per test example, the k most positive (proponents) and most negative (opponents) scores.

    ``proponent_indices[i]`` are training indices sorted by decreasing score;
    ``opponent_indices[i]`` sorted by increasing (most negative first).
    """

    proponent_indices: np.ndarray  # (n_test, k) int64
    proponent_scores: np.ndarray  # (n_test, k) float64
    opponent_indices: np.ndarray
    opponent_scores: np.ndarray

    @classmethod
    def from_scores(cls, scores: np.ndarray, k: int) -> "TopInfluences":
        """Exact top-k of a (n_test, n_train) score matrix."""
        k = min(k, scores.shape[1])
        pro = top_k_indices(scores, k)
        opp = top_k_indices(-scores, k)
        rows = np.arange(scores.shape[0])[:, None]
        return cls(pro, scores[rows, pro], opp, scores[rows, opp])


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries per row, largest first."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(n), (scores.shape[0], 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
