"""Long texts tokenised from a whitespace-cut prefix: the same first ``max_length`` tokens, far less work.

Fast tokenizers tokenize a whole text before truncating it; a 2,000-character
article costs ten times a 48-token window. Cutting at whitespace keeps every
word before the cut whole, so when the prefix alone fills ``max_length``
tokens the kept tokens are those of the full text; otherwise the full text is
used.

`encode_truncated` does it in one tokenizer call: the prefixes are tokenised
with truncation, and only the rows that did not fill ``max_length`` (their
prefix was too short to decide) are tokenised again, from a prefix twice as
long, until the full text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Characters of prefix per token of ``max_length`` (the first try; rows that fall short retry with twice as many).
PREFIX_CHARS_PER_TOKEN = 6


def truncated_sources(tokenizer, texts: Sequence[str], max_length: int) -> list[str]:
    """``texts`` with each very long one replaced by a whitespace-cut prefix that still overflows ``max_length``."""
    budget = max_length * PREFIX_CHARS_PER_TOKEN * 2
    out = list(texts)
    long_rows = [i for i, t in enumerate(out) if len(t) > budget and t.rfind(" ", 0, budget) > 0]
    if not long_rows:
        return out
    prefixes = [out[i][: out[i].rfind(" ", 0, budget)] for i in long_rows]
    lengths = tokenizer(prefixes, add_special_tokens=True, truncation=False, return_length=True)["length"]
    for i, prefix, n in zip(long_rows, prefixes, lengths):
        if n > max_length:
            out[i] = prefix
    return out


def _prefix(text: str, budget: int) -> str | None:
    """The whitespace-cut prefix of ``text`` within ``budget`` characters; None where the text is short or has no space."""
    if len(text) <= budget:
        return None
    cut = text.rfind(" ", 0, budget)
    return text[:cut] if cut > 0 else None


def padded_arrays(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int,
                  keys: Sequence[str]) -> dict[str, np.ndarray]:
    """``tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="np")`` restricted
    to ``keys``: the same int64 arrays, made by NumPy from the padded lists (transformers' own "np" conversion walks
    every id in Python, holding the GIL: ~0.15 ms a text, on the thread that should be driving the model)."""
    enc = tokenizer(list(texts), None if pairs is None else list(pairs), padding=True, truncation=True,
                    max_length=max_length)
    rows = len(texts)
    return {k: np.asarray(enc[k], dtype=np.int64).reshape(rows, -1 if rows else 0) for k in keys if k in enc}


def encode_truncated(tokenizer, texts: Sequence[str], max_length: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """``tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")`` restricted to
    ``keys``, with the same ids, tokenising long texts from prefixes (a fast tokenizer truncating on the right)."""
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "truncation_side", "right") != "right":
        return padded_arrays(tokenizer, texts, None, max_length, keys)
    texts = list(texts)
    budget = max_length * PREFIX_CHARS_PER_TOKEN
    sources = list(texts)
    open_rows = []  # rows tokenised from a prefix: decided only where it filled max_length
    for i, t in enumerate(texts):
        p = _prefix(t, budget)
        if p is not None:
            sources[i] = p
            open_rows.append(i)
    out = padded_arrays(tokenizer, sources, None, max_length, keys)
    while open_rows:
        lengths = out["attention_mask"].sum(axis=1)
        open_rows = [i for i in open_rows if lengths[i] < max_length]  # the prefix ran out first: it cannot decide
        if not open_rows:
            break
        budget *= 2
        retry = [_prefix(texts[i], budget) for i in open_rows]
        redo = padded_arrays(tokenizer, [texts[i] if p is None else p for i, p in zip(open_rows, retry)], None, max_length,
                             list(out))
        out = _put_rows(out, redo, open_rows, tokenizer)
        open_rows = [i for i, p in zip(open_rows, retry) if p is not None]
    return out


def _put_rows(out: dict[str, np.ndarray], rows: dict[str, np.ndarray], where: list[int], tokenizer) -> dict[str, np.ndarray]:
    """``out`` with rows ``where`` replaced by ``rows``, both padded as the tokenizer pads (its side, its pad values)."""
    width = max(out["input_ids"].shape[1], rows["input_ids"].shape[1])
    pads = {"input_ids": tokenizer.pad_token_id, "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
    left = getattr(tokenizer, "padding_side", "right") == "left"
    merged = {}
    for key, old in out.items():
        new = np.full((old.shape[0], width), pads.get(key, 0), dtype=old.dtype)
        new[:, _columns(old.shape[1], width, left)] = old
        new[where] = pads.get(key, 0)
        new[np.asarray(where)[:, None], np.arange(width)[_columns(rows[key].shape[1], width, left)]] = rows[key]
        merged[key] = new
    return merged


def _columns(block_width: int, width: int, left: bool) -> slice:
    return slice(width - block_width, width) if left else slice(0, block_width)
