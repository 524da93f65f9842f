"""Scoring captured queries against stored segments: screen, keep the top candidates, rescore exactly.

Per segment, a batch of queries is scored in one pass (the batch shares the work):

* the dense block (n, C*T*d) times the queries' dense rows: one matrix product;
* for each token the queries share with the segment, its postings (a
  contiguous slice found by ``searchsorted`` on the segment's sorted token ids)
  times the queries' rows of that token, scattered into the (n, n_q) block.

Only the postings of the queries' own tokens are read. With float32 rows and no
projection this *screen* is already exact and gives the final scores. With
float16 rows, or with the projected rows (PCA or Gaussian, C*d -> p), it only
ranks: the top ``candidates`` per query and direction are then rescored exactly
in float64 from the full rows (``contributions``), so returned scores are exact.

The score is `tracinwe.scoring.influence.tracin_matrix` (the torch definition)
regrouped by segment; tests/test_index_layout.py checks the two are equal on
records with dense tokens and Top-k drops, and tests/test_index.py on real text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from tracinwe.index.layout import TokenBlock
from tracinwe.index.products import product64
from tracinwe.index.projection import Projection


@dataclass
class QueryBlock:
    """The query side, learning-rate weighted, flattened to match the stored rows."""

    n: int
    dense: np.ndarray  # (n, C*T*d) float32
    tokens: np.ndarray  # (U,) sorted token ids
    offsets: np.ndarray  # (U + 1,)
    examples: np.ndarray  # (nnz,) query of each entry
    rows: np.ndarray  # (nnz, C*d) float32
    dense_proj: np.ndarray | None = None  # (n, p_dense)
    rows_proj: np.ndarray | None = None  # (nnz, p)
    norms: tuple[np.ndarray, np.ndarray] | None = None  # per-checkpoint norms, set by `pruning.query_norms`

    @classmethod
    def from_block(cls, block: TokenBlock, projection: Projection | None = None) -> "QueryBlock":
        n = block.num_examples
        dense = block.dense.reshape(n, -1)
        rows = block.rows.reshape(block.rows.shape[0], -1)
        q = cls(n, dense, block.tokens.astype(np.int64), block.offsets, block.postings.astype(np.int64), rows)
        if projection is not None:
            q.rows_proj = rows @ projection.rows
            q.dense_proj = dense @ projection.dense
        return q

    def part(self, lo: int, hi: int) -> "QueryBlock":
        """The block of queries ``lo:hi`` alone (renumbered from 0), in the same layout."""
        keep = (self.examples >= lo) & (self.examples < hi)
        entry_token = np.repeat(np.arange(self.tokens.size), np.diff(self.offsets))[keep]
        used, counts = np.unique(entry_token, return_counts=True)
        return QueryBlock(
            hi - lo, self.dense[lo:hi], self.tokens[used], np.concatenate([[0], np.cumsum(counts)]).astype(self.offsets.dtype),
            self.examples[keep] - lo, self.rows[keep],
            None if self.dense_proj is None else self.dense_proj[lo:hi],
            None if self.rows_proj is None else self.rows_proj[keep],
        )

    def own_entries(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted token ids of query ``i`` and its (C*d) rows."""
        hit = np.flatnonzero(self.examples == i)
        token_of_entry = np.searchsorted(self.offsets, hit, side="right") - 1
        return self.tokens[token_of_entry], self.rows[hit]


@dataclass
class SegmentArrays:
    """One segment's arrays (memory-mapped; ``tokens``/``offsets`` in memory)."""

    start: int
    num_examples: int
    tokens: np.ndarray
    offsets: np.ndarray
    postings: np.ndarray
    rows: np.ndarray  # (nnz, C, d)
    dense: np.ndarray  # (n, C, T, d)
    rows_proj: np.ndarray | None = None
    dense_proj: np.ndarray | None = None
    scale: float = 1.0  # stored arrays hold value / scale
    row_norms: np.ndarray | None = None  # (nnz, C) norms of the stored rows (None: an index without them)
    dense_norms: np.ndarray | None = None  # (n, C, T)
    dense_basis: np.ndarray | None = None  # (C*T*d, p) the dense block's sketch (`tracinwe.index.sketch`; None: none)
    dense_sketch: np.ndarray | None = None  # (n, p)
    dense_residual: np.ndarray | None = None  # (n,)
    example_tokens: np.ndarray | None = None  # each example's token ids, end to end (None: an index without them)
    example_token_offsets: np.ndarray | None = None  # (n + 1,) example i owns example_tokens[offsets[i]:offsets[i + 1]]
    derived: dict = field(default_factory=dict)  # arrays computed from these once per open segment (`pruning`)


def _matmul(stored: np.ndarray, queries_t: np.ndarray, fast_half: bool) -> np.ndarray:
    """``stored @ queries_t`` in float32 (float16 rows: half GEMV for a few queries, else upcast).

    The half GEMV scales the query by a power of two so that no product can
    overflow float16 (stored values are at most 256 in magnitude, see
    `float16_scale`). torch's matmul runs on ``torch.get_num_threads()`` threads.
    """
    if stored.dtype == np.float16:
        peak = float(np.abs(queries_t).max()) if queries_t.size else 0.0
        if fast_half and queries_t.shape[1] <= 4 and peak > 0:
            q_scale = 2.0 ** np.floor(np.log2(128.0 / stored.shape[1] / peak))
            out = (torch.from_numpy(stored) @ torch.from_numpy((queries_t * q_scale).astype(np.float16))).float().numpy()
            if np.isfinite(out).all():
                return out / np.float32(q_scale)
        return (torch.from_numpy(stored).float() @ torch.from_numpy(queries_t.astype(np.float32, copy=False))).numpy()
    return (torch.from_numpy(stored) @ torch.from_numpy(queries_t.astype(np.float32, copy=False))).numpy()


def screen(seg: SegmentArrays, q: QueryBlock, projected: bool, fast_half: bool = True) -> np.ndarray:
    """(n_seg, n_q) float64 scores of every example of the segment against every query."""
    out = np.zeros((seg.num_examples, q.n), dtype=np.float64)
    if projected:
        dense, q_dense = seg.dense_proj, q.dense_proj
        rows, q_rows = seg.rows_proj, q.rows_proj
    else:
        dense, q_dense = seg.dense.reshape(seg.num_examples, -1), q.dense
        rows, q_rows = seg.rows.reshape(seg.rows.shape[0], -1), q.rows
    if dense.shape[1] > 0 and seg.num_examples:
        out += seg.scale * _matmul(dense, np.ascontiguousarray(q_dense.T), fast_half)
    if seg.tokens.size == 0 or q.tokens.size == 0:
        return out
    pos = np.searchsorted(seg.tokens, q.tokens).clip(max=seg.tokens.size - 1)
    shared = np.flatnonzero(seg.tokens[pos] == q.tokens)
    for u in shared:
        s = pos[u]
        lo, hi = int(seg.offsets[s]), int(seg.offsets[s + 1])
        qlo, qhi = int(q.offsets[u]), int(q.offsets[u + 1])
        prod = seg.scale * _matmul(rows[lo:hi], np.ascontiguousarray(q_rows[qlo:qhi].T), fast_half)
        examples = np.asarray(seg.postings[lo:hi])
        queries = q.examples[qlo:qhi]
        if queries.size == q.n:  # every query has the token (queries are in order)
            out[examples] += prod
        else:
            out[np.ix_(examples, queries)] += prod
    return out


def contributions(seg: SegmentArrays, q: QueryBlock, i: int, local: np.ndarray, num_dense: int, dense_tokens: np.ndarray,
                  own: tuple[np.ndarray, np.ndarray] | None = None):
    """Exact per-token contributions of query ``i`` with the segment's examples ``local`` (sorted).

    Returns ``(candidate, token, value)`` arrays: candidate indexes ``local``;
    ``value`` is ``sum_c lr_c G_c(train)[token] . G_c(query)[token]`` in float64.
    Each of the query's tokens costs one ``searchsorted`` of the candidates in
    its postings slice, so only the candidates' rows are read.
    """
    cand, toks, vals = [], [], []
    if num_dense:
        n_ck, dim = seg.dense.shape[1], seg.dense.shape[3]
        stored = np.asarray(seg.dense[local], dtype=np.float64) * seg.scale  # (m, C, T, d)
        query = q.dense[i].reshape(n_ck, num_dense, dim).astype(np.float64)
        per_token = np.einsum("mctd,ctd->mt", stored, query)
        cand.append(np.repeat(np.arange(local.size), num_dense))
        toks.append(np.tile(dense_tokens, local.size))
        vals.append(per_token.reshape(-1))
    q_tokens, q_rows = own if own is not None else q.own_entries(i)
    if q_tokens.size and seg.tokens.size:
        pos = np.searchsorted(seg.tokens, q_tokens).clip(max=seg.tokens.size - 1)
        for a in np.flatnonzero(seg.tokens[pos] == q_tokens):
            lo, hi = int(seg.offsets[pos[a]]), int(seg.offsets[pos[a] + 1])
            postings = seg.postings[lo:hi]
            at = np.searchsorted(postings, local).clip(max=hi - lo - 1)
            hit = np.flatnonzero(postings[at] == local)
            if hit.size:
                stored = np.asarray(seg.rows[lo + at[hit]], dtype=np.float64).reshape(hit.size, -1) * seg.scale
                cand.append(hit)
                toks.append(np.full(hit.size, q_tokens[a], dtype=np.int64))
                vals.append(product64(stored, q_rows[a]))
    if not cand:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(cand), np.concatenate(toks), np.concatenate(vals)


class TopCandidates:
    """Running top-``m`` (largest and most negative) per query over segments; of tied scores the lowest rows stay."""

    def __init__(self, n_queries: int, m: int) -> None:
        self.m = m
        self.rows = [np.zeros((n_queries, 0), np.int64), np.zeros((n_queries, 0), np.int64)]
        self.scores = [np.zeros((n_queries, 0)), np.zeros((n_queries, 0))]

    def update(self, block: np.ndarray, start: int, keep: np.ndarray | None = None) -> None:
        """Merge a (n_seg, n_q) score block whose rows start at global row ``start`` (only where ``keep``, if given)."""
        local = np.arange(block.shape[0], dtype=np.int64)
        if keep is not None:  # only the rows kept for some query (ascending, so ties still keep the lowest rows)
            local = np.flatnonzero(keep.any(axis=1))
            block, keep = block[local], keep[local]
        scores_t = block.T
        rows = np.broadcast_to(local + start, scores_t.shape)
        for d, sign in enumerate((1.0, -1.0)):
            s = sign * scores_t if keep is None else np.where(keep.T, sign * scores_t, -np.inf)
            self._merge(d, *_select(s, rows, self.m))

    @classmethod
    def stack(cls, parts: Sequence["TopCandidates"]) -> "TopCandidates":
        """The candidates of consecutive groups of queries, as one (widths padded with -inf scores, which never rank)."""
        out = cls(0, parts[0].m)
        for d in (0, 1):
            width = max(p.scores[d].shape[1] for p in parts)
            out.scores[d] = np.concatenate([np.pad(p.scores[d], ((0, 0), (0, width - p.scores[d].shape[1])),
                                                   constant_values=-np.inf) for p in parts])
            out.rows[d] = np.concatenate([np.pad(p.rows[d], ((0, 0), (0, width - p.rows[d].shape[1])),
                                                 constant_values=np.iinfo(np.int64).max) for p in parts])
        return out

    def merge(self, other: "TopCandidates") -> None:
        """Merge the candidates kept by another screen (e.g. of other segments)."""
        for d in (0, 1):
            self._merge(d, other.scores[d], other.rows[d])

    def _merge(self, d: int, scores: np.ndarray, rows: np.ndarray) -> None:
        merged_r = np.concatenate([self.rows[d], rows], axis=1)
        order = np.argsort(merged_r, axis=1, kind="stable")
        merged_s = np.take_along_axis(np.concatenate([self.scores[d], scores], axis=1), order, 1)
        self.scores[d], self.rows[d] = _select(merged_s, np.take_along_axis(merged_r, order, 1), self.m)

    def ranked(self, direction: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, signed scores) of the best k, best first; direction 0 proponents, 1 opponents."""
        s, r = self.scores[direction], self.rows[direction]
        order = np.lexsort((r, -s), axis=1)[:, :k] if s.shape[1] else np.zeros((s.shape[0], 0), np.int64)
        sign = 1.0 if direction == 0 else -1.0
        return np.take_along_axis(r, order, 1), sign * np.take_along_axis(s, order, 1)


def _select(scores: np.ndarray, rows: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest scores per query and their rows; columns are in ascending row order, so ties keep the lowest rows."""
    width = scores.shape[1]
    if width <= m:
        return np.array(scores), np.array(rows)
    kth = np.partition(scores, width - m, axis=1)[:, width - m][:, None]
    greater, equal = scores > kth, scores == kth
    keep = greater | (equal & (np.cumsum(equal, axis=1) <= m - greater.sum(axis=1, keepdims=True)))
    return scores[keep].reshape(-1, m), rows[keep].reshape(-1, m)
