"""Result types: top-k proponents and opponents (captum's shape) and an index query's neighbours.

`top_k_indices` is the one top-k selector: brute-force results and the index's
running candidates both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracinwe.scoring.words import WordContribution


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


def top_k_indices(scores: np.ndarray, k: int, ordered: bool = True) -> np.ndarray:
    """Column indices of the k largest entries per row: largest first, or in any order when not ``ordered``."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(n), (scores.shape[0], 1))
    if not ordered:
        return part
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


@dataclass
class Neighbor:
    """One training example found for a query. ``score > 0``: proponent; ``< 0``: opponent."""

    row: int
    id: str
    score: float
    text: str
    label: int
    label_name: str
    words: list[WordContribution] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "row": self.row,
            "id": self.id,
            "score": self.score,
            "text": self.text,
            "label": self.label,
            "label_name": self.label_name,
            "words": [w.to_json() for w in self.words],
        }


@dataclass
class QueryResult:
    """The top proponents and opponents of one query text.

    A causal-LM query has no label or classes (``label = prediction = -1``, no probabilities);
    ``loss`` is then its summed target-token loss under the final checkpoint.
    """

    text: str
    label: int
    prediction: int
    probabilities: list[float]
    proponents: list[Neighbor]
    opponents: list[Neighbor]
    loss: float | None = None

    def to_json(self) -> dict:
        out = {
            "text": self.text,
            "label": self.label,
            "prediction": self.prediction,
            "probabilities": self.probabilities,
            "proponents": [n.to_json() for n in self.proponents],
            "opponents": [n.to_json() for n in self.opponents],
        }
        if self.loss is not None:
            out["loss"] = self.loss
        return out
