"""Checks on user input, each failing with a one-line message that names the row and the fix."""

from __future__ import annotations

from collections.abc import Sequence

from tracinwe.errors import InputTextError, LabelError
from tracinwe.models.causal_lm import CausalLanguageModel, LMExample
from tracinwe.models.contract import TextClassifier


def check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    """A list of non-empty strings, or `InputTextError` naming the first bad row."""
    if isinstance(texts, str):
        raise InputTextError(f"{what} is a single string: pass a list of texts, e.g. [{texts[:30]!r}]")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputTextError(f"{what}[{i}] is {type(t).__name__}, not text: convert or drop that row")
        if not t.strip():
            raise InputTextError(f"{what}[{i}] is empty: drop that row or give it text")
    return out


def check_labels(
    labels: Sequence[int | str] | None, n: int, classifier: TextClassifier, what: str = "labels"
) -> list[int] | None:
    """Class indices in range for the model, or `LabelError` naming the first bad row."""
    if labels is None:
        return None
    if isinstance(labels, (str, int)):
        raise LabelError(f"{what} is a single value: pass one label per text")
    out = [classifier.label_id(y) if isinstance(y, str) else y for y in labels]
    if len(out) != n:
        raise LabelError(f"{len(out)} {what} for {n} texts: pass exactly one label per text")
    c = classifier.num_classes
    for i, label in enumerate(out):
        try:
            value = int(label)
        except (TypeError, ValueError):
            raise LabelError(f"{what}[{i}] = {label!r} is not a class index: pass integers in 0..{c - 1}") from None
        if value != label or not 0 <= value < c:
            raise LabelError(
                f"{what}[{i}] = {label!r} is outside the model's {c} classes (0..{c - 1}): "
                "fix the label or load a model with more classes"
            )
        out[i] = value
    return out


def check_pairs(pairs: Sequence[str] | None, n: int, what: str = "text_pairs") -> list[str] | None:
    """Second segments of sentence pairs, one per text."""
    if pairs is None:
        return None
    out = check_texts(pairs, what)
    if len(out) != n:
        raise InputTextError(f"{len(out)} {what} for {n} texts: pass one second segment per text")
    return out


def check_lm_examples(examples: Sequence[LMExample], lm: CausalLanguageModel, what: str = "texts") -> list[LMExample]:
    """Language-model examples that tokenise within ``lm.max_length``, or `InputTextError` naming the first bad one.

    A text longer than ``max_length`` is refused here (the facade never truncates silently).
    """
    if isinstance(examples, (str, dict)):
        raise InputTextError(f"{what} is a single example: pass a list of examples, e.g. [{str(examples)[:30]!r}]")
    out = list(examples)
    for i, example in enumerate(out):
        try:
            lm.token_ids(example, truncate=False)
        except InputTextError as exc:
            raise InputTextError(f"{what}[{i}]: {exc}") from None
    return out


def refuse_lm_labels(labels, what: str = "labels") -> None:
    """A language model takes no labels: `LabelError` unless ``labels`` is None."""
    if labels is not None:
        raise LabelError(f"{what} were passed but a causal language model takes none (the text is its own target): pass None")
