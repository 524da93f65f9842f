"""Token-to-text alignment: put token contributions back on the words of the original text.

TracIn-WE scores tokens (WordPiece pieces, special tokens). A reader wants the
words of the text they typed. `word_segments` is the pure core: from the
tokenizer's character offsets and word indices it cuts the text into segments,
each a whole word with the summed contribution of its distinct pieces, or a
stretch of plain text (spaces, punctuation not shared, text cut off by
truncation). `text_segments` runs a fast HuggingFace tokenizer to get those
offsets. A token repeated in the text shows its total at every occurrence (the
method sums repeated tokens before the dot product, so there is no per-position
share to show).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tracinwe.errors import TokenizerMismatchError

__all__ = ["Segment", "word_segments", "text_segments", "special_total", "tokenizer_of"]


@dataclass(frozen=True)
class Segment:
    """A stretch of the original text; ``contribution`` is None where no shared token lies."""

    text: str
    contribution: float | None = None
    tokens: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"text": self.text, "contribution": self.contribution, "tokens": list(self.tokens)}


def word_segments(
    text: str,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    token_ids: Sequence[int],
    contributions: Mapping[int, float],
    token_strings: Mapping[int, str] | None = None,
) -> list[Segment]:
    """Cut ``text`` into segments that cover it exactly, words carrying their contributions.

    Args:
        text: the original text.
        offsets: ``(start, end)`` character span of each token; ``(0, 0)`` for special tokens.
        word_ids: the word index of each token (None for special tokens); pieces of one
            word share it.
        token_ids: the id of each token.
        contributions: ``{token_id: contribution}`` of the shared tokens.
        token_strings: optional ``{token_id: string}`` recorded on each segment.

    A word's contribution is the sum over its *distinct* shared token ids; a word
    with no shared piece is plain text. ``"".join(s.text for s in segments) == text``.
    """
    if not (len(offsets) == len(word_ids) == len(token_ids)):
        raise ValueError(
            f"offsets ({len(offsets)}), word_ids ({len(word_ids)}) and token_ids ({len(token_ids)}) differ in length"
        )
    words: dict[int, list[int]] = {}
    for pos, (word, (start, end)) in enumerate(zip(word_ids, offsets)):
        if word is None or end <= start:
            continue
        words.setdefault(word, []).append(pos)
    spans: list[tuple[int, int, float, tuple[str, ...]]] = []
    for positions in words.values():
        start = min(offsets[p][0] for p in positions)
        end = max(offsets[p][1] for p in positions)
        distinct = list(dict.fromkeys(int(token_ids[p]) for p in positions))
        shared = [t for t in distinct if t in contributions]
        if not shared:
            continue
        names = tuple((token_strings or {}).get(t, str(t)) for t in shared)
        spans.append((start, end, float(sum(contributions[t] for t in shared)), names))
    spans.sort()
    segments: list[Segment] = []
    cursor = 0
    for start, end, value, names in spans:
        start = max(start, cursor)
        if end <= start:
            continue
        if start > cursor:
            segments.append(Segment(text[cursor:start]))
        segments.append(Segment(text[start:end], value, names))
        cursor = end
    if cursor < len(text):
        segments.append(Segment(text[cursor:]))
    return segments


def special_total(token_ids: Sequence[int], special_ids: Sequence[int] | frozenset[int],
                  contributions: Mapping[int, float]) -> float | None:
    """Summed contribution of the special tokens ([CLS], [SEP]) present; None if none is shared."""
    present = {int(t) for t in token_ids if int(t) in special_ids and int(t) in contributions}
    if not present:
        return None
    return float(sum(contributions[t] for t in present))


def tokenizer_of(classifier) -> object:
    """The fast HuggingFace tokenizer of a `TextClassifier` (its ``tokenizer``), needed to align words to text."""
    tok = classifier.tokenizer
    if tok is None or not getattr(tok, "is_fast", False):
        raise TokenizerMismatchError(
            f"{type(classifier).__name__} has no fast HuggingFace tokenizer, so words cannot be aligned "
            "to the text: pass a model with a fast tokenizer (AutoTokenizer(..., use_fast=True))"
        )
    return tok


def text_segments(tokenizer, text: str, contributions: Mapping[int, float],
                  max_length: int = 128) -> tuple[list[Segment], float | None]:
    """Segments of ``text`` and the special-token total, tokenised as the model sees it (truncated)."""
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    strings = dict(zip(ids, tokenizer.convert_ids_to_tokens(ids)))
    segments = word_segments(text, enc["offset_mapping"], enc.word_ids(), ids, contributions, strings)
    specials = frozenset(tokenizer.all_special_ids) - {tokenizer.pad_token_id}
    return segments, special_total(ids, specials, contributions)
