"""`SegmentSearcher`: the whole search over an index's segments: screen, keep candidates, rescore exactly.

A search is three steps on one `Search` (the query block and how it screens):
`SegmentSearcher.start` lays out the captured queries, `screen` scores any
subset of the segments and keeps the top candidates, `rank` orders the merged
candidates and, where the screen was approximate (projected or float16 rows),
rescores each of them exactly in float64. Exact screens are pruned by default
(`tracinwe.index.pruning`: postings that cannot reach the top k are not read;
``Search.count`` says how many were). `Index.search` runs the three over every
segment; `tracinwe.index.ray_search` runs ``screen`` on Ray actors, each over
its share, and ``start``/``rank`` on the driver; the results are equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from tracinwe.capture.records import TokenGradients
from tracinwe.index.errors import IndexMismatchError
from tracinwe.index.layout import combine_checkpoints, weighted_query
from tracinwe.index.manifest import IndexManifest
from tracinwe.index.projection import Projection
from tracinwe.index.pruning import PostingsCount, can_prune, pruned_screen
from tracinwe.index.search import QueryBlock, SegmentArrays, TopCandidates, contributions, screen
from tracinwe.index.storage import release_pages
from tracinwe.index.words import pair_token_values
from tracinwe.results import TopInfluences

#: Candidates rescored exactly per query and direction when the screen is approximate.
MIN_CANDIDATES = 1000
#: Queries a pruned screen takes together (`SegmentSearcher.screen`).
PRUNE_GROUP = 32
#: Threads that screen segments side by side (None: one per core torch may use, `torch.get_num_threads`). One by
#: default: the screen's products and candidate tests already run on torch's threads, and each more thread holds its
#: own score arrays (on 2 cores, 20 queries over 1,000,000 texts: 2 threads 0.55 -> 0.44 s, but peak memory
#: 1.86 -> 2.14 GB, over the 2 GB the index aims at; `bench_index_million.py --search-threads 1|2`).
SEARCH_THREADS: int | None = 1


def search_threads() -> int:
    """How many threads screen segments at once (`SEARCH_THREADS`)."""
    return max(1, SEARCH_THREADS if SEARCH_THREADS is not None else torch.get_num_threads())


@dataclass
class Search:
    """One search in progress: the weighted query block, whether it screens projected rows, and how many it keeps."""

    query: QueryBlock
    k: int
    projected: bool
    candidates: int
    prune: bool = False
    count: PostingsCount = field(default_factory=PostingsCount)
    #: Segments a pruned screen opened, kept mapped for the words of the found neighbours when ``keep_open`` is set
    #: (`pair_values` then maps no segment again); the pages the screen read are released after each segment, so
    #: resident memory stays that of a search. Unpruned screens are never kept.
    keep_open: bool = False
    opened: dict[int, SegmentArrays] = field(default_factory=dict)


class SegmentSearcher:
    """Screens and rescores against the segments of one manifest.

    ``segment(number, projected)`` opens a segment's arrays (checked on first touch).
    """

    def __init__(self, manifest: IndexManifest, segment: Callable[[int, bool], SegmentArrays],
                 projection: Projection | None) -> None:
        self.manifest = manifest
        self.segment = segment
        self.projection = projection
        self.dense_tokens = np.array(manifest.dense_token_ids, dtype=np.int64)
        self.starts = np.array([s.start for s in manifest.segments or ()], dtype=np.int64)

    @property
    def num_segments(self) -> int:
        return len(self.manifest.segments or ())

    def query_block(self, records: Sequence[TokenGradients], projected: bool = False) -> QueryBlock:
        """The captured queries in the index layout, learning-rate weighted (and projected)."""
        n_ckpt = len(self.manifest.checkpoints)
        if len(records) != n_ckpt:
            raise IndexMismatchError(
                f"{len(records)} checkpoints of query gradients for an index of {n_ckpt}: capture with index.tracin")
        block = weighted_query(combine_checkpoints(records, self.dense_tokens), self.manifest.learning_rates)
        return QueryBlock.from_block(block, self.projection if projected else None)

    @property
    def prunable(self) -> bool:
        """Whether every segment stores the row norms pruning needs (indexes built before them do not)."""
        return all("row_norms.npy" in s.files and "dense_norms.npy" in s.files for s in self.manifest.segments or ())

    def start(self, records: Sequence[TokenGradients], k: int, candidates: int | None = None,
              use_projection: bool | None = None, prune: bool | None = None) -> Search:
        """The search's query block, whether the screen is projected or pruned, and how many candidates it keeps.

        ``prune`` (default: when the index stores row norms): skip postings that cannot reach the top k
        (`tracinwe.index.pruning`); the result is the same. Projected screens are never pruned.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        has_projection = self.manifest.projection is not None
        projected = has_projection if use_projection is None else use_projection
        if projected and not has_projection:
            raise IndexMismatchError("this index has no projection: build it with projection_dim= or pass use_projection=False")
        pruned = (self.prunable if prune is None else prune and self.prunable) and not projected
        q = self.query_block(records, projected)
        m = max(k, candidates or max(10 * k, MIN_CANDIDATES)) if self._rescores(projected, pruned) else k
        return Search(q, k, projected, m, pruned)

    def _rescores(self, projected: bool, pruned: bool = False) -> bool:
        """Whether the screen's scores are approximate (pruned screens score exactly in float64)."""
        return projected or (self.manifest.dtype == "float16" and not pruned)

    def screen(self, search: Search, numbers: Iterable[int] | None = None) -> TopCandidates:
        """Screen the segments ``numbers`` (default all) and keep the top candidates per query and direction.

        A pruned screen takes the queries `PRUNE_GROUP` at a time: a group shares each segment's postings reads,
        while its bounds, thresholds and candidate sets stay (segment x group) arrays.
        """
        numbers = list(range(self.num_segments) if numbers is None else numbers)
        q = search.query
        if search.prune and q.n > PRUNE_GROUP:
            return TopCandidates.stack([self._screen(search, q.part(lo, min(lo + PRUNE_GROUP, q.n)), numbers)
                                        for lo in range(0, q.n, PRUNE_GROUP)])
        return self._screen(search, q, numbers)

    def _screen(self, search: Search, q: QueryBlock, numbers: list[int]) -> TopCandidates:
        """The segments ``numbers`` screened by `search_threads` threads, each over every so-many-th segment with its own
        running top (its own thresholds), merged: the same candidates as one thread's (ties keep the lowest rows)."""
        threads = min(search_threads(), len(numbers))
        if threads <= 1:
            return self._screen_share(search, q, numbers, search.count)
        counts = [PostingsCount() for _ in range(threads)]
        with ThreadPoolExecutor(threads, thread_name_prefix="tracinwe-search") as pool:
            tops = list(pool.map(lambda w: self._screen_share(search, q, numbers[w::threads], counts[w]), range(threads)))
        for count in counts:
            search.count.add(count)
        for other in tops[1:]:
            tops[0].merge(other)
        return tops[0]

    def _screen_share(self, search: Search, q: QueryBlock, numbers: list[int], count: PostingsCount) -> TopCandidates:
        top = TopCandidates(q.n, search.candidates)
        for number in numbers:
            seg = search.opened.get(number)
            if seg is None:
                seg = self.segment(number, search.projected)
            if search.prune and can_prune(seg):
                scores, keep = pruned_screen(seg, q, (top.scores[0], top.scores[1]), search.k, count)
                top.update(scores, int(self.starts[number]), keep)
                if search.keep_open:  # kept for the words, without the pages this screen read
                    release_pages(seg.rows)
                    release_pages(seg.dense)
                    search.opened[number] = seg
            else:
                top.update(screen(seg, q, search.projected), int(self.starts[number]))
        return top

    def rank(self, search: Search, top: TopCandidates) -> TopInfluences:
        """The top k of the candidates, rescored exactly (float64, full rows) when the screen was approximate."""
        if not self._rescores(search.projected, search.prune):
            return TopInfluences(*top.ranked(0, search.k), *top.ranked(1, search.k))
        q = search.query
        kk = min(search.k, self.manifest.num_examples)
        out = [np.zeros((q.n, kk), np.int64), np.zeros((q.n, kk)), np.zeros((q.n, kk), np.int64), np.zeros((q.n, kk))]
        for i in range(q.n):
            rows = np.unique(np.concatenate([top.rows[0][i], top.rows[1][i]]))
            exact = self.exact_rows(q, i, rows)
            pro = np.lexsort((rows, -exact))[:kk]
            opp = np.lexsort((rows, exact))[:kk]
            out[0][i], out[1][i], out[2][i], out[3][i] = rows[pro], exact[pro], rows[opp], exact[opp]
        return TopInfluences(*out)

    def search(self, records: Sequence[TokenGradients], k: int = 10, candidates: int | None = None,
               use_projection: bool | None = None, prune: bool | None = None) -> TopInfluences:
        """Top-k proponents/opponents (rows, exact scores) of already captured queries, over every segment."""
        search = self.start(records, k, candidates, use_projection, prune)
        return self.rank(search, self.screen(search))

    def by_segment(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(segment, positions in rows, local rows)`` of global ``rows``, segment by segment."""
        seg = np.searchsorted(self.starts, rows, side="right") - 1
        for s in np.unique(seg):
            at = np.flatnonzero(seg == s)
            yield int(s), at, rows[at] - self.starts[s]

    def exact_rows(self, q: QueryBlock, i: int, rows: np.ndarray) -> np.ndarray:
        """Exact float64 scores of query ``i`` against the global ``rows``."""
        out = np.zeros(rows.size)
        own = q.own_entries(i)
        for s, at, local in self.by_segment(rows):
            order = np.argsort(local)
            cand, _, vals = contributions(self.segment(s, False), q, i, local[order], self.dense_tokens.size,
                                          self.dense_tokens, own)
            out[at[order]] = np.bincount(cand, weights=vals, minlength=local.size)
        return out

    def pair_values(self, q: QueryBlock, queries: np.ndarray, rows: np.ndarray,
                    opened: dict[int, SegmentArrays] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(pair, token, value)`` of the nonzero shared tokens of every pair (query ``queries[p]``, global row ``rows[p]``).

        One batched pass per segment over just these rows' postings (`tracinwe.index.words`), on the segments a
        search kept ``opened`` where it did (`Search.keep_open`).
        """
        parts = []
        opened = opened or {}
        for s, at, local in self.by_segment(rows):
            seg = opened.get(s)
            seg = self.segment(s, False) if seg is None else seg
            pair, toks, vals = pair_token_values(seg, q, queries[at], local, self.dense_tokens)
            keep = vals != 0.0
            parts.append((at[pair[keep]], toks[keep], vals[keep]))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]

    def pair_totals(self, q: QueryBlock, queries: np.ndarray, rows: np.ndarray) -> list[dict[int, float]]:
        """Per pair (query ``queries[p]``, global row ``rows[p]``), ``{token: contribution}`` (nonzero shared tokens)."""
        totals: list[dict[int, float]] = [dict() for _ in range(rows.size)]
        for p, t, v in zip(*(x.tolist() for x in self.pair_values(q, queries, rows))):
            totals[p][t] = v
        return totals
