"""What a query returns: neighbours (proponents/opponents) with their exact scores and words."""

from __future__ import annotations

from dataclasses import dataclass, field

from tracinwe.scoring.words import WordContribution


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
    """The top proponents and opponents of one query text."""

    text: str
    label: int
    prediction: int
    probabilities: list[float]
    proponents: list[Neighbor]
    opponents: list[Neighbor]

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "label": self.label,
            "prediction": self.prediction,
            "probabilities": self.probabilities,
            "proponents": [n.to_json() for n in self.proponents],
            "opponents": [n.to_json() for n in self.opponents],
        }
