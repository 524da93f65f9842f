"""The token ids a capture already made: each text's sequence, from the batches it tokenised, in input order.

The word positions of an explanation need every text's token sequence; a capture
has them in its batch cache (`tracinwe.capture.gradients`), so neither a query nor
an index build tokenises twice.
"""

from __future__ import annotations

import numpy as np

from tracinwe.capture.ahead import TokenizedAhead

#: Each text's token ids, padding dropped: ``(offsets (n + 1,) int64, tokens int32)``, text ``i`` owning
#: ``tokens[offsets[i]:offsets[i + 1]]``.
TokenSequences = tuple[np.ndarray, np.ndarray]


def cached_token_sequences(cache: dict, count: int) -> TokenSequences | None:
    """The token ids of ``count`` texts from a complete batch cache (the batches a capture tokenised), in input order;
    None if a text is missing."""
    rows, lengths, flat = [], [], []
    for start, stop in cache.chunks if isinstance(cache, TokenizedAhead) else list(cache):
        for local, batch in cache.get((start, stop)) or ():
            ids = batch["input_ids"].numpy()
            mask = batch["attention_mask"].numpy().astype(bool) if "attention_mask" in batch else np.ones(ids.shape, bool)
            rows.append(local + start)
            lengths.append(mask.sum(axis=1))
            flat.append(ids[mask])  # row by row
    if not rows:
        return None
    rows_at, lengths_at = np.concatenate(rows), np.concatenate(lengths).astype(np.int64)
    if rows_at.size != count or not np.array_equal(np.sort(rows_at), np.arange(count)):
        return None
    begins = np.cumsum(lengths_at) - lengths_at  # of each batch row in ``flat``
    order = np.argsort(rows_at, kind="stable")
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths_at[order], out=offsets[1:])
    gather = np.repeat(begins[order] - offsets[:-1], lengths_at[order]) + np.arange(int(offsets[-1]))
    return offsets, np.concatenate(flat)[gather].astype(np.int32)


def token_lists(sequences: TokenSequences) -> list[list[int]]:
    """`TokenSequences` as one list of ids per text."""
    offsets, tokens = sequences
    flat, bounds = tokens.tolist(), offsets.tolist()
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
