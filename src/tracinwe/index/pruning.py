"""Exact top-k that skips what cannot win: MaxScore-style Cauchy-Schwarz bounds from stored row norms.

A score is a sum of terms ``sum_c lr_c g_c . q_c`` over the tokens an example
shares with the query (the dense ``[CLS]``/``[SEP]`` rows are terms too), and
each term is bounded by ``sum_c ||g_c|| ||lr_c q_c||``: the build stores the
per-checkpoint norms ``||g_c||`` of every row (``row_norms.npy``,
``dense_norms.npy``), 4 bytes per checkpoint against ``4 d`` for the row. Per
segment and batch of queries:

1. terms with short postings (rare tokens) are read and scored exactly, all in
   one vectorised pass; the dense block gets the estimate of the segment's
   low-rank sketch and its residual bound (`tracinwe.index.sketch`);
2. the long terms (frequent tokens) first get one *coarse* bound per (example,
   query): Cauchy-Schwarz over all of them at once, ``||g_long|| ||q_long||``
   per checkpoint, with each example's norm over its frequent tokens computed
   once per segment (an outer product, not a pass over the postings). Where it
   leaves few candidates (`COARSE_SHARE`), their long terms are read at once
   and the segment is done (with the steps before it, 20 queries over 1M real
   texts took 0.55 s instead of 1.16 s, `bench_index_million.py`);
3. otherwise (the first segments, before k scores are kept) the long terms get
   their per-term bounds, read from the norms, as one sparse product per
   checkpoint (the postings are a CSC matrix as they lie): every example has
   ``exact - bound <= score <= exact + bound``;
4. per query and direction the threshold is the k-th largest lower bound among
   the segment's examples and the exact scores already kept from earlier
   segments: an example whose upper bound falls below it has k examples
   strictly better and is dropped (ties survive: the test is ``>=``);
5. the long terms are read only at the surviving examples' rows, so their
   scores are exact (float64); every other example is left out of the top.

Bounds are inflated by `BOUND_SLACK` (norms are stored in float32), so rounding
cannot drop an example that belongs in the top k: the result is the unpruned
search's, ties included, in float64. Frequent tokens and the dense block take the
same path; a query whose every token is frequent just bounds every term. Segments
without a sketch (indexes built before it) score the dense block up front in
float32 (`DENSE_UP_FRONT`) and rescore the survivors' dense rows in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from tracinwe.index.products import product64, row_dots
from tracinwe.index.search import QueryBlock, SegmentArrays
from tracinwe.index.sketch import dense_estimate
from tracinwe.index.words import concatenated_ranges, expand_pairs, find_sorted

#: Relative inflation of every bound: covers float32 norms and float64 sums.
BOUND_SLACK = 1e-5
#: Rank the dense block by the segment's low-rank sketch and read it only where needed (when the segment has one).
DENSE_SKETCH = True
#: Without a sketch: score the dense block of every example with one float32 matrix product (True), rescored in
#: float64 where it stays a candidate, or bound it like a token (False).
DENSE_UP_FRONT = True
#: Relative error bound of one float32 product per summed term (unit roundoff, with a margin).
FLOAT32_EPS = 1.2 * 2.0**-24
#: A token whose postings in a segment are longer than this share of the segment is bounded, not read.
LONG_POSTINGS = 1 / 1024
#: Share of a segment's (example, query) pairs at or below which the candidates get every pending term in one pass
#: (`_finish`) instead of term by term.
FINISH_SHARE = 1 / 64
#: Share of the pairs at or below which the coarse bound's candidates get their long terms at once (above it, the
#: per-term bounds narrow them first).
COARSE_SHARE = 1 / 256


@dataclass
class PostingsCount:
    """What a search read: posting rows whose products it computed, of how many the plain screen computes."""

    rows_read: int = 0
    rows_total: int = 0
    dense_read: int = 0
    dense_total: int = 0

    def add(self, other: "PostingsCount") -> None:
        for name in ("rows_read", "rows_total", "dense_read", "dense_total"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def can_prune(seg: SegmentArrays) -> bool:
    """Whether the segment stores the norms pruning needs (indexes built before them do not)."""
    return seg.row_norms is not None and seg.dense_norms is not None


def query_norms(q: QueryBlock, num_ckpt: int, num_dense: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-checkpoint norms of the weighted query rows (nnz_q, C) and dense rows (n, C*T), float64 (cached on ``q``)."""
    if q.norms is None:
        rows = q.rows.reshape(q.rows.shape[0], num_ckpt, -1).astype(np.float64)
        dense = q.dense.reshape(q.n, num_ckpt * num_dense, rows.shape[2]).astype(np.float64)  # no dense tokens: (n, 0, d)
        q.norms = (np.sqrt(np.einsum("ncd,ncd->nc", rows, rows)), np.sqrt(np.einsum("ntd,ntd->nt", dense, dense)))
    return q.norms


def kth_largest(values: np.ndarray, kept: np.ndarray, k: int) -> np.ndarray:
    """Per query, the k-th largest of its column of ``values`` (a, n) and its row of ``kept`` (n, b); -inf when fewer
    than k. The column's k largest come from one ``torch.topk`` (cheaper than partitioning a transposed copy of the
    whole segment: with the products below, 20 queries over 1M texts 1.25 -> 1.16 s, `bench_index_million.py`)."""
    if values.shape[0] > k:
        values = torch.topk(torch.from_numpy(np.ascontiguousarray(values)), k, dim=0).values.numpy()
    both = np.concatenate([values.T, kept], axis=1)
    if both.shape[1] < k:
        return np.full(both.shape[0], -np.inf)
    return np.partition(both, both.shape[1] - k, axis=1)[:, both.shape[1] - k]


def pruned_screen(seg: SegmentArrays, q: QueryBlock, kept: tuple[np.ndarray, np.ndarray], k: int,
                  count: PostingsCount) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, candidate)``, both (n_seg, n_q): exact float64 scores where ``candidate``, meaningless elsewhere.

    ``kept``: the signed scores (n_q, m) already kept per direction (proponents, then
    negated opponents) from earlier segments; they only raise the thresholds.
    """
    n_seg, n = seg.num_examples, q.n
    num_ckpt, num_dense = seg.rows.shape[1], seg.dense.shape[2]
    q_row_norms, q_dense_norms = query_norms(q, num_ckpt, num_dense)
    exact = np.zeros((n_seg, n))
    bound = np.zeros((n_seg, n))
    steps = []  # (largest bound of one posting, lo, hi, qlo, qhi); lo = -1: the dense block
    dense_fix = None  # rows scored up front in float32: rescored in float64 where they stay candidates
    estimate = None  # the dense block's estimate (sketch) that its exact products replace
    if num_dense and n_seg:
        dense_norms, norms = _dense_norms(seg)
        count.dense_total += n_seg
        if DENSE_SKETCH and seg.dense_sketch is not None:  # the low-rank sketch's estimate, within a tight bound
            estimate, dense_bound = dense_estimate(seg.dense_basis, seg.dense_sketch, seg.dense_residual, norms, q.dense)
            estimate *= seg.scale
            dense_bound *= seg.scale * (1.0 + BOUND_SLACK)
            exact += estimate
            bound += dense_bound
            steps.append((float(dense_bound.max(initial=0.0)), -1, -1, -1, -1))
        elif DENSE_UP_FRONT:  # one float32 product, as in the plain screen; its rounding error joins the bound
            stored = seg.dense.reshape(n_seg, -1)
            estimate = seg.scale * (torch.from_numpy(stored).float() @ torch.from_numpy(np.ascontiguousarray(q.dense.T))
                                    ).double().numpy()
            exact += estimate
            bound += seg.scale * product64(dense_norms, q_dense_norms.T) * (stored.shape[1] * FLOAT32_EPS)
            count.dense_read += n_seg
            dense_fix = estimate
        else:
            estimate = np.zeros((n_seg, n))
            dense_bound = seg.scale * (1.0 + BOUND_SLACK) * product64(dense_norms, q_dense_norms.T)
            bound += dense_bound
            steps.append((float(dense_bound.max(initial=0.0)), -1, -1, -1, -1))
    terms = shared_term_array(seg, q)
    count.rows_total += int((terms[:, 1] - terms[:, 0]).sum())
    long = terms[:, 1] - terms[:, 0] > LONG_POSTINGS * n_seg
    if not long.all():
        exact += _short_term_scores(seg, q, terms[~long])
        count.rows_read += int((terms[~long, 1] - terms[~long, 0]).sum())
    if long.any():
        coarse = bound + _coarse_long_bounds(seg, q, q_row_norms, terms[long])
        candidate = _coarse_candidates(exact, coarse, kept, k)
        if candidate.sum() <= COARSE_SHARE * candidate.size:  # the coarse bound suffices: read the long terms there
            _finish(seg, q, exact, candidate, steps + [(0.0, *t) for t in terms[long].tolist()], estimate, count)
            return _dense_in_float64(seg, q, exact, candidate, dense_fix), candidate
        term_bounds, largest = _long_term_bounds(seg, q, q_row_norms, terms[long])
        bound += term_bounds
        steps += [(peak, lo, hi, qlo, qhi) for peak, (lo, hi, qlo, qhi) in zip(largest.tolist(), terms[long].tolist())]
    if not steps:
        candidate = np.ones((n_seg, n), bool)
        return _dense_in_float64(seg, q, exact, candidate, dense_fix), candidate
    tol = 1e-9 * (bound.max(axis=0) + np.abs(exact).max(axis=0, initial=0.0))  # float64 sums, per query
    rows = np.arange(n_seg)
    candidate = _candidates(exact, bound, kept, k, tol)
    pending = sorted(steps, key=lambda s: -s[0])  # the heaviest terms first: the bounds shrink fastest
    while pending:
        if candidate.sum() <= FINISH_SHARE * candidate.size:  # few pairs left: every pending term at them at once
            _finish(seg, q, exact, candidate, pending, estimate, count)
            break
        _, lo, hi, qlo, qhi = pending.pop(0)
        rows = rows[candidate[rows].any(axis=1)]
        if lo < 0:
            if rows.size:
                stored = np.asarray(seg.dense[rows], dtype=np.float64).reshape(rows.size, -1)
                exact[rows] += seg.scale * product64(stored, q.dense.T) - estimate[rows]
                bound[rows] = np.maximum(bound[rows] - dense_bound[rows], 0.0)
                count.dense_read += rows.size
        else:
            examples, queries = np.asarray(seg.postings[lo:hi]), q.examples[qlo:qhi]
            at = np.flatnonzero(candidate[_grid(examples, queries, n)].any(axis=1))
            if at.size:
                grid = _grid(examples[at], queries, n)
                exact[grid] += _products(seg, q, lo, hi, qlo, qhi, at)
                bound[grid] = np.maximum(bound[grid] - _term_bound(seg, q_row_norms, lo, hi, qlo, qhi, at), 0.0)
                count.rows_read += at.size
        candidate[rows] = _candidates(exact[rows], bound[rows], kept, k, tol)
    return _dense_in_float64(seg, q, exact, candidate, dense_fix), candidate


def _finish(seg: SegmentArrays, q: QueryBlock, exact: np.ndarray, candidate: np.ndarray, pending: list,
            estimate: np.ndarray | None, count: PostingsCount) -> None:
    """Add the ``pending`` terms (``(bound, lo, hi, qlo, qhi)``; ``lo = -1``: the dense block) to ``exact`` at every
    candidate (example, query) pair, in one vectorised pass: their scores become exact (float64)."""
    examples, queries = np.nonzero(candidate)
    if not examples.size:
        return
    values = np.zeros(examples.size)
    terms = np.array([s[1:] for s in pending if s[1] >= 0], dtype=np.int64).reshape(-1, 4)
    if len(terms) < len(pending):  # the dense block: its rows in float64, less the sketch's estimate
        values += row_dots(seg.dense, examples, q.dense, queries) * seg.scale - estimate[examples, queries]
        count.dense_read += np.unique(examples).size
    if terms.size:
        entries = concatenated_ranges(terms[:, 2], terms[:, 3])  # the pending terms' query entries
        term_of_entry = np.zeros(q.examples.size, np.int64)
        term_of_entry[entries] = np.repeat(np.arange(len(terms)), terms[:, 3] - terms[:, 2])
        pair, q_at = expand_pairs(q, queries, entries)  # each pair with its query's pending terms
        term = term_of_entry[q_at]
        at, found = find_sorted(seg.postings, terms[term, 0], terms[term, 1], examples[pair])  # the example has it too
        pair, at, q_at = pair[found], at[found], q_at[found]
        values += np.bincount(pair, weights=row_dots(seg.rows, at, q.rows, q_at) * seg.scale, minlength=examples.size)
        count.rows_read += np.unique(at).size
    exact[examples, queries] += values


def _dense_in_float64(seg: SegmentArrays, q: QueryBlock, exact: np.ndarray, candidate: np.ndarray,
                      up_front: np.ndarray | None) -> np.ndarray:
    """``exact`` with the float32 dense products ``up_front`` replaced by float64 ones at the candidates."""
    rows = np.flatnonzero(candidate.any(axis=1)) if up_front is not None else np.zeros(0, np.int64)
    if rows.size:
        stored = np.asarray(seg.dense[rows], dtype=np.float64).reshape(rows.size, -1)
        exact[rows] += seg.scale * product64(stored, q.dense.T) - up_front[rows]
    return exact


def _dense_norms(seg: SegmentArrays) -> tuple[np.ndarray, np.ndarray]:
    """The dense rows' norms per (checkpoint, token) (n, C*T) and in full (n,), float64, the latter inflated
    (computed once per open segment)."""
    if "dense_norms" not in seg.derived:
        per_token = np.asarray(seg.dense_norms, dtype=np.float64).reshape(seg.num_examples, -1)
        seg.derived["dense_norms"] = (per_token, np.sqrt(np.einsum("nt,nt->n", per_token, per_token)) * (1.0 + BOUND_SLACK))
    return seg.derived["dense_norms"]


def _candidates(exact: np.ndarray, bound: np.ndarray, kept: tuple[np.ndarray, np.ndarray], k: int,
                tol: np.ndarray) -> np.ndarray:
    """Which (example, query) pairs may still reach the top k in either direction (their upper bound reaches the threshold)."""
    pro = kth_largest(exact - bound, kept[0], k) - tol
    opp = kth_largest(-exact - bound, kept[1], k) - tol
    return (exact + bound >= pro[None, :]) | (bound - exact >= opp[None, :])


def _coarse_candidates(exact: np.ndarray, bound: np.ndarray, kept: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    """`_candidates` for a coarse ``bound``: once k scores are kept per direction, the thresholds are theirs alone (the
    segment's own lower bounds, ``exact - bound``, are too loose to raise them), and the test runs on torch's threads."""
    if min(kept[0].shape[1], kept[1].shape[1]) < k:
        tol = 1e-9 * (bound.max(axis=0) + np.abs(exact).max(axis=0, initial=0.0))
        return _candidates(exact, bound, kept, k, tol)
    e, b = torch.from_numpy(exact), torch.from_numpy(bound)
    tol = 1e-9 * (b.amax(0) + torch.maximum(e.amax(0), -e.amin(0)))  # float64 sums, per query (as `pruned_screen`'s)
    pro, opp = (torch.from_numpy(np.partition(-side, k - 1, axis=1)[:, k - 1]) for side in kept)  # minus k-th largest
    return ((e + b >= -pro - tol) | (b - e >= -opp - tol)).numpy()


def _term_bound(seg: SegmentArrays, q_row_norms: np.ndarray, lo: int, hi: int, qlo: int, qhi: int,
                at: np.ndarray | None = None) -> np.ndarray:
    """``sum_c ||g_c|| ||q_c||`` (inflated) of the postings ``lo:hi`` (at ``at``) with the query entries ``qlo:qhi``."""
    norms = seg.row_norms[lo:hi] if at is None else seg.row_norms[lo + at]
    return (1.0 + BOUND_SLACK) * seg.scale * product64(norms, q_row_norms[qlo:qhi].T)


def _grid(examples: np.ndarray, queries: np.ndarray, n: int):
    """Index of the (examples x queries) block of an (n_seg, n) array: plain rows when every query has the token."""
    return examples if queries.size == n else np.ix_(examples, queries)


def shared_term_array(seg: SegmentArrays, q: QueryBlock) -> np.ndarray:
    """(T, 4) int64 ``(lo, hi, qlo, qhi)`` per token the segment shares with the queries: its postings and query entries."""
    if seg.tokens.size == 0 or q.tokens.size == 0:
        return np.zeros((0, 4), np.int64)
    pos = np.searchsorted(seg.tokens, q.tokens).clip(max=seg.tokens.size - 1)
    u = np.flatnonzero(seg.tokens[pos] == q.tokens)
    s = pos[u]
    return np.stack([seg.offsets[s], seg.offsets[s + 1], q.offsets[u], q.offsets[u + 1]], axis=1).astype(np.int64)


def _long_term_bounds(seg: SegmentArrays, q: QueryBlock, q_row_norms: np.ndarray,
                      terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The summed bounds (n_seg, n_q) of the ``terms`` (rows of `shared_term_array`) and an upper estimate of each
    term's largest bound (to order them).

    Per checkpoint c the bounds are one sparse product: the postings' norms ``||g_c||`` as a (segment x term) matrix,
    which is the postings' own layout (CSC), times the query entries' norms ``||q_c||`` as a (term x query) matrix.
    """
    lo, hi, qlo, qhi = terms.T
    n_terms, num_ckpt = len(terms), q_row_norms.shape[1]
    at = concatenated_ranges(lo, hi)
    examples = np.asarray(seg.postings[at])
    norms = np.asarray(seg.row_norms[at], dtype=np.float64)  # (P, C)
    indptr = np.concatenate([[0], np.cumsum(hi - lo)])
    entries = concatenated_ranges(qlo, qhi)
    entry_term = np.repeat(np.arange(n_terms), qhi - qlo)
    per_query = np.zeros((num_ckpt, n_terms, q.n))
    per_query[:, entry_term, q.examples[entries]] = q_row_norms[entries].T
    out = np.zeros((seg.num_examples, q.n))
    for c in range(num_ckpt):
        out += sparse.csc_matrix((norms[:, c], examples, indptr), shape=(seg.num_examples, n_terms)) @ per_query[c]
    scale = (1.0 + BOUND_SLACK) * seg.scale
    largest = (np.maximum.reduceat(norms, indptr[:-1], axis=0) * per_query.max(axis=2).T).sum(axis=1)
    return out * scale, largest * scale


def _coarse_long_bounds(seg: SegmentArrays, q: QueryBlock, q_row_norms: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """A looser bound (n_seg, n_q) of the long ``terms``' sum, for the cost of an outer product: per checkpoint,
    Cauchy-Schwarz over the shared long tokens at once, ``sum_t ||g_t|| ||q_t|| <= ||g_long|| ||q_long||``, with the
    example's norm over all its long tokens (`_long_norms`, once per segment) and the query's over its long terms."""
    qlo, qhi = terms[:, 2], terms[:, 3]
    entries = concatenated_ranges(qlo, qhi)
    squares = np.zeros((q.n, q_row_norms.shape[1]))
    np.add.at(squares, q.examples[entries], q_row_norms[entries] ** 2)
    return product64(_long_norms(seg), np.sqrt(squares).T) * ((1.0 + BOUND_SLACK) * seg.scale)


def _long_norms(seg: SegmentArrays) -> np.ndarray:
    """Per example and checkpoint (n_seg, C), the norm of its rows of the segment's long tokens (postings longer than
    `LONG_POSTINGS` of the segment), float64, inflated (computed once per open segment)."""
    key = ("long_norms", LONG_POSTINGS)  # the tokens it covers must be the ones `pruned_screen` calls long
    if key not in seg.derived:
        lengths = np.diff(seg.offsets)
        long = np.flatnonzero(lengths > LONG_POSTINGS * seg.num_examples)
        at = concatenated_ranges(seg.offsets[long].astype(np.int64), seg.offsets[long + 1].astype(np.int64))
        norms = np.asarray(seg.row_norms[at], dtype=np.float64)
        examples = np.asarray(seg.postings[at], dtype=np.int64)
        squares = np.stack([np.bincount(examples, norms[:, c] ** 2, minlength=seg.num_examples)
                            for c in range(norms.shape[1])], axis=1)
        seg.derived[key] = np.sqrt(squares) * (1.0 + BOUND_SLACK)
    return seg.derived[key]


def _short_term_scores(seg: SegmentArrays, q: QueryBlock, terms: np.ndarray) -> np.ndarray:
    """Exact float64 scores (n_seg, n_q) of the ``terms`` (rows of `shared_term_array`): every (posting, query entry)
    pair of a term is one dot product, summed per (example, query) by one ``bincount``."""
    lo, hi, qlo, qhi = terms.T
    length, width = hi - lo, qhi - qlo
    per_term = length * width
    ends = np.cumsum(per_term)
    pair = np.arange(int(ends[-1]) if ends.size else 0)
    term = np.searchsorted(ends, pair, side="right")
    k = pair - (ends - per_term)[term]
    posting, entry = lo[term] + k // width[term], qlo[term] + k % width[term]
    values = row_dots(seg.rows, posting, q.rows, entry) * seg.scale
    where = np.asarray(seg.postings[posting], dtype=np.int64) * q.n + q.examples[entry]
    return np.bincount(where, weights=values, minlength=seg.num_examples * q.n).reshape(seg.num_examples, q.n)


def _products(seg: SegmentArrays, q: QueryBlock, lo: int, hi: int, qlo: int, qhi: int, at: np.ndarray | None) -> np.ndarray:
    """Exact float64 products of the postings ``lo:hi`` (at ``at``) with the query entries ``qlo:qhi``."""
    stored = np.asarray(seg.rows[lo:hi] if at is None else seg.rows[lo + at], dtype=np.float64)
    stored = stored.reshape(stored.shape[0], -1)
    return seg.scale * product64(stored, q.rows[qlo:qhi].T)
