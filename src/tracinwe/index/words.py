"""Shared-word contributions of found neighbours, for all (query, neighbour) pairs of a chunk in one batched pass.

Per segment, every pair is expanded into (pair, query token) entries; those
whose token the example's stored token ids lack are dropped (`tokens_in_examples`),
each other entry's training row is found by a vectorised binary search in that
token's postings (only the postings of the pairs' rows are touched), and the values
``sum_c lr_c G_c(train)[w] . G_c(query)[w]`` are one row-wise product in
float64: the same numbers as ``TracInWE.word_contributions`` on the texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tracinwe.index.products import row_dots
from tracinwe.index.search import QueryBlock, SegmentArrays


def pair_token_values(seg: SegmentArrays, q: QueryBlock, queries: np.ndarray, local: np.ndarray,
                      dense_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pair, token, value)`` of the pairs (``queries[p]``, segment row ``local[p]``), zeros included."""
    pairs, toks, vals = [], [], []
    num_dense = dense_tokens.size
    if num_dense and queries.size:
        n_ck, dim = seg.dense.shape[1], seg.dense.shape[3]
        stored = np.asarray(seg.dense[local], dtype=np.float64).reshape(local.size, n_ck, num_dense, dim) * seg.scale
        query = q.dense[queries].reshape(queries.size, n_ck, num_dense, dim).astype(np.float64)
        pairs.append(np.repeat(np.arange(queries.size), num_dense))
        toks.append(np.tile(dense_tokens, queries.size))
        vals.append(np.einsum("mctd,mctd->mt", stored, query).reshape(-1))
    entry_pair, entry = expand_pairs(q, queries)
    if entry.size and seg.tokens.size:
        token = q.tokens[np.searchsorted(q.offsets, entry, side="right") - 1]
        if seg.example_tokens is not None:  # an example's postings hold only tokens of its text: search just those
            kept = tokens_in_examples(seg, local, entry_pair, token)
            entry_pair, entry, token = entry_pair[kept], entry[kept], token[kept]
        pos = np.searchsorted(seg.tokens, token).clip(max=seg.tokens.size - 1)
        present = seg.tokens[pos] == token
        entry_pair, entry, token, pos = entry_pair[present], entry[present], token[present], pos[present]
        at, found = find_sorted(seg.postings, seg.offsets[pos], seg.offsets[pos + 1], local[entry_pair])
        if found.any():
            pairs.append(entry_pair[found])
            toks.append(token[found])
            vals.append(row_dots(seg.rows, at[found], q.rows, entry[found]) * seg.scale)
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(pairs), np.concatenate(toks).astype(np.int64), np.concatenate(vals)


def tokens_in_examples(seg: SegmentArrays, local: np.ndarray, pair: np.ndarray, token: np.ndarray) -> np.ndarray:
    """Whether ``token[e]`` is among the stored token ids of segment row ``local[pair[e]]`` (`Index.token_ids`).

    Of a chunk's (pair, query token) entries, most name a token the example's text does not have (on real text,
    about 19 in 20): this filter, over the few examples' short token lists, spares them the postings' binary search.
    """
    rows, which = np.unique(local, return_inverse=True)
    lo = seg.example_token_offsets[rows].astype(np.int64)
    hi = seg.example_token_offsets[rows + 1].astype(np.int64)
    have = np.asarray(seg.example_tokens[concatenated_ranges(lo, hi)], dtype=np.int64)
    if not have.size:
        return np.zeros(token.size, dtype=bool)
    width = int(max(have.max(), token.max(initial=0))) + 1
    keys = np.unique(np.repeat(np.arange(rows.size), hi - lo) * width + have)  # (example, token), sorted
    wanted = which.reshape(-1)[pair] * width + token
    return keys[np.searchsorted(keys, wanted).clip(max=keys.size - 1)] == wanted


def concatenated_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The concatenated ranges ``lo[i]:hi[i]``."""
    lengths = hi - lo
    firsts = np.cumsum(lengths) - lengths
    return np.repeat(lo - firsts, lengths) + np.arange(int(lengths.sum()))


def expand_pairs(q: QueryBlock, queries: np.ndarray, entries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pair, query-block entry) for every entry of every pair's query (of ``entries`` only, if given)."""
    entries = np.arange(q.examples.size) if entries is None else entries
    of_query = q.examples[entries]
    by_query = entries[np.argsort(of_query, kind="stable")]
    counts = np.bincount(of_query, minlength=q.n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    n_entries = counts[queries]
    pair = np.repeat(np.arange(queries.size), n_entries)
    within = np.arange(pair.size) - np.repeat(np.cumsum(n_entries) - n_entries, n_entries)
    return pair, by_query[starts[queries][pair] + within]


def find_sorted(postings: np.ndarray, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per entry, the position of ``rows`` in the ascending run ``postings[lo:hi]`` and whether it is there.

    A vectorised branch-free binary search: every entry halves its run in the same steps (as many as the longest run
    needs), then one comparison decides.
    """
    base = lo.astype(np.int64)
    size = hi.astype(np.int64) - base
    last = int(postings.shape[0]) - 1
    if base.size == 0 or last < 0:
        return base, np.zeros(base.size, dtype=bool)
    empty = size <= 0
    if empty.any():  # searched as a one-row run at a valid position, never found
        size[empty] = 1
        base[empty] = np.minimum(base[empty], last)
    probe = np.empty_like(base)
    move = np.empty(base.size, dtype=bool)
    for _ in range(int(size.max() - 1).bit_length()):
        half = size >> 1
        np.add(base, half, out=probe)
        np.less(postings[probe], rows, out=move)
        np.copyto(base, probe, where=move)
        size -= half
    at = base + (postings[base] < rows)
    found = ~empty & (at < hi) & (postings[np.minimum(at, last)] == rows)
    return at, found


def ranked_words(pair: np.ndarray, token: np.ndarray, value: np.ndarray, num_pairs: int,
                 words: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, token, value)``: per pair its top ``words`` tokens (None: all), largest magnitude first, ties by token id.

    Pair ``p``'s words are ``token[starts[p]:starts[p + 1]]``: the order of `top_words`, for every pair in one sort.
    """
    order = np.lexsort((token, -np.abs(value), pair))
    pair, token, value = pair[order], token[order], value[order]
    counts = np.bincount(pair, minlength=num_pairs)
    starts = np.zeros(num_pairs + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    if words is not None:
        rank = np.arange(pair.size) - starts[pair]
        keep = rank < words
        pair, token, value = pair[keep], token[keep], value[keep]
        starts[1:] = np.cumsum(np.minimum(counts, words))
    return starts, token, value


def positions(ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """``{token: positions in ids}``."""
    at: dict[int, list[int]] = {}
    for i, t in enumerate(ids):
        at.setdefault(t, []).append(i)
    return {t: tuple(p) for t, p in at.items()}
