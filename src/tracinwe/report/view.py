"""What the report and the explorer show, as plain JSON-able dicts (one source for both).

`result_view` turns a `QueryResult` into the dict that the HTML report renders
in Python and the browser explorer renders in JavaScript: texts cut into
highlighted segments, one colour scale per query, labels by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracinwe.report.highlight import text_segments

__all__ = ["POSITIVE_RGB", "NEGATIVE_RGB", "colour", "neighbor_view", "result_view", "suspicious_view", "label_name"]

#: Diverging, colour-blind safe ends (ColorBrewer RdBu): blue = proponent side (> 0), red = opponent side (< 0).
POSITIVE_RGB = (33, 102, 172)
NEGATIVE_RGB = (178, 24, 43)


def colour(value: float, scale: float) -> str:
    """CSS colour of a contribution: transparent at 0, full blue at +scale, full red at -scale.

    Symmetric around 0; ``|value| >= scale`` saturates. Alpha carries the strength so text stays readable.
    """
    if scale <= 0 or value == 0:
        return "rgba(255,255,255,0)"
    strength = min(abs(value) / scale, 1.0)
    r, g, b = POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    return f"rgba({r},{g},{b},{0.06 + 0.54 * strength:.3f})"


def label_name(label: int, label_names: Sequence[str] | None) -> str:
    """The name of a class index, or the index itself as text when names are unknown."""
    if label_names is not None and 0 <= int(label) < len(label_names):
        return str(label_names[int(label)])
    return str(label)


def neighbor_view(neighbor, tokenizer, max_length: int = 128, words_shown: int = 5) -> dict:
    """A training example under a query: score, label, highlighted text, top words."""
    contributions = {int(w.token_id): float(w.contribution) for w in neighbor.words}
    segments, special = text_segments(tokenizer, neighbor.text, contributions, max_length)
    return {
        "row": int(neighbor.row),
        "id": str(neighbor.id),
        "score": float(neighbor.score),
        "label": int(neighbor.label),
        "label_name": str(neighbor.label_name),
        "text": neighbor.text,
        "segments": [s.to_json() for s in segments],
        "special": special,
        "words": [{"token": w.token, "contribution": float(w.contribution)} for w in neighbor.words[:words_shown]],
    }


def result_view(
    result, tokenizer, label_names: Sequence[str] | None = None, max_length: int = 128, words_shown: int = 5,
    gold: bool = True,
) -> dict:
    """A query: text, explained label, prediction, probabilities, proponents and opponents.

    ``gold``: whether ``result.label`` is a gold label (report) or the prediction (explorer).
    ``scale`` is the largest |word contribution| among the query's neighbours (special tokens excluded:
    they often dwarf the words and saturate instead): one colour scale per query.
    """
    pro = [neighbor_view(n, tokenizer, max_length, words_shown) for n in result.proponents]
    opp = [neighbor_view(n, tokenizer, max_length, words_shown) for n in result.opponents]
    values = [abs(s["contribution"]) for n in pro + opp for s in n["segments"] if s["contribution"] is not None]
    probabilities = [float(p) for p in result.probabilities]
    return {
        "text": result.text,
        "label": int(result.label),
        "label_name": label_name(result.label, label_names),
        "gold": bool(gold),
        "prediction": int(result.prediction),
        "prediction_name": label_name(result.prediction, label_names),
        "probability": probabilities[int(result.prediction)],
        "probabilities": probabilities,
        "label_names": [label_name(c, label_names) for c in range(len(probabilities))],
        "correct": int(result.prediction) == int(result.label),
        "scale": max(values, default=0.0),
        "proponents": pro,
        "opponents": opp,
    }


def suspicious_view(neighbors) -> list[dict]:
    """Suspicious training labels, highest self-influence first."""
    return [
        {"row": int(n.row), "id": str(n.id), "self_influence": float(n.score), "label": int(n.label),
         "label_name": str(n.label_name), "text": n.text}
        for n in neighbors
    ]
