"""Explanations straight from a `TracInWE` and a training set, without an index.

The index answers queries from stored gradients; these functions recompute
everything from the facade, which suits small training sets (``tracinwe explain
--run-dir``, tests) and gives the same `QueryResult` / `Neighbor` objects, so the
report and the terminal present either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tracinwe.results import Neighbor, QueryResult, TopInfluences

__all__ = ["Neighbor", "QueryResult", "explain_with_tracin", "suspicious_with_tracin"]


def _label_name(label: int, label_names: Sequence[str] | None) -> str:
    return label_names[label] if label_names is not None and 0 <= label < len(label_names) else str(label)


def explain_with_tracin(
    tw,
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    test_texts: Sequence[str],
    test_labels: Sequence[int] | None = None,
    *,
    k: int = 10,
    words: int | None = 5,
    ids: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> tuple[list[QueryResult], np.ndarray]:
    """Explain each test text against the training set: ``(results, scores (n_test, n_train))``.

    ``test_labels=None`` explains the final checkpoint's predictions. ``words`` caps the
    word contributions kept per neighbour (None: every shared token).
    """
    train_texts, train_labels, test_texts = list(train_texts), [int(y) for y in train_labels], list(test_texts)
    probs = tw.predict(test_texts)
    predictions = probs.argmax(1).tolist()
    explained = predictions if test_labels is None else [int(y) for y in test_labels]
    scores = tw.scores(train_texts, train_labels, test_texts, explained)
    top = TopInfluences.from_scores(scores, k)
    rows = sorted({int(r) for r in np.concatenate([top.proponent_indices.ravel(), top.opponent_indices.ravel()])})
    position = {r: j for j, r in enumerate(rows)}
    train_rec = tw.capture([train_texts[r] for r in rows], [train_labels[r] for r in rows], role="train")
    test_rec = tw.capture(test_texts, explained)
    ids = [str(i) for i in range(len(train_texts))] if ids is None else [str(i) for i in ids]

    def neighbor(i: int, row: int) -> Neighbor:
        contributions = tw.explain_pair(train_rec, test_rec, train_texts[row], test_texts[i], position[row], i)
        return Neighbor(
            row=row, id=ids[row], score=float(scores[i, row]), text=train_texts[row], label=train_labels[row],
            label_name=_label_name(train_labels[row], label_names),
            words=contributions if words is None else contributions[:words],
        )

    results = [
        QueryResult(
            text=test_texts[i], label=explained[i], prediction=predictions[i], probabilities=[float(p) for p in probs[i]],
            proponents=[neighbor(i, int(r)) for r in top.proponent_indices[i]],
            opponents=[neighbor(i, int(r)) for r in top.opponent_indices[i]],
        )
        for i in range(len(test_texts))
    ]
    return results, scores


def suspicious_with_tracin(
    tw,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    k: int = 20,
    ids: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> tuple[list[Neighbor], np.ndarray]:
    """The k training examples of highest self-influence (likely mislabeled) and all self-influences."""
    labels = [int(y) for y in labels]
    values = tw.self_influence(list(texts), labels)
    ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
    order = np.argsort(-values, kind="stable")[:k]
    found = [
        Neighbor(row=int(r), id=ids[r], score=float(values[r]), text=texts[r], label=labels[r],
                 label_name=_label_name(labels[r], label_names), words=[])
        for r in order
    ]
    return found, values
