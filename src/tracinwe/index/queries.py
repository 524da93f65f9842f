"""Answering many queries in chunks: memory bounded by the chunk, not by the number of texts.

Each chunk is captured, laid out as one query block (used for the screen, the
exact rescoring and the shared words alike) and scored against every segment;
the per-segment score blocks are (segment size x chunk). The results equal
those of one call on all texts: every query is scored on its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from tracinwe.index.search import QueryBlock
from tracinwe.results import Neighbor, QueryResult, TopInfluences
from tracinwe.scoring.words import word_contributions

#: Texts captured and scored together by `iter_query` (and `tracinwe query`).
QUERY_CHUNK = 256


def iter_query(index, test_texts: Sequence[str], test_labels: Sequence[int | str] | None = None, k: int = 10,
               words: int | None = 5, test_pairs: Sequence[str] | None = None, candidates: int | None = None,
               use_projection: bool | None = None, chunk_size: int = QUERY_CHUNK) -> Iterator[QueryResult]:
    """`Index.query`'s results one by one, ``chunk_size`` texts at a time.

    ``words`` shared words are listed per neighbour: 0 for none (fastest), None for all of them.

    Every text, label and pair is checked here, before the first chunk is captured.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    texts, labels, pairs = index.tracin.check_inputs(test_texts, test_labels, test_pairs, "test")
    if not texts:
        raise ValueError("no texts to query")
    return _chunks(index, texts, labels, pairs, k, words, candidates, use_projection, chunk_size)


def _chunks(index, texts: list[str], labels: list[int] | None, pairs: list[str] | None, k: int, words: int | None,
            candidates: int | None, use_projection: bool | None, chunk_size: int) -> Iterator[QueryResult]:
    for lo in range(0, len(texts), chunk_size):
        hi = min(lo + chunk_size, len(texts))
        yield from _query_chunk(
            index, texts[lo:hi], labels[lo:hi] if labels is not None else None, pairs[lo:hi] if pairs is not None else None,
            k, words, candidates, use_projection,
        )


def _query_chunk(index, texts: list[str], labels: list[int] | None, pairs: list[str] | None, k: int, words: int | None,
                 candidates: int | None, use_projection: bool | None) -> list[QueryResult]:
    records = index.tracin.capture(texts, labels, pairs)
    search = index.searcher.start(records, k, candidates, use_projection)
    hits = index.searcher.rank(search, index.searcher.screen(search))
    neighbors = _Neighbors(index, search.query, hits, words)
    probs = torch.softmax(records[-1].logits.double(), -1).numpy()
    results = []
    for i, text in enumerate(texts):
        proponents, opponents = neighbors.of(i, text, pairs[i] if pairs is not None else None)
        results.append(QueryResult(
            text=text, label=int(records[-1].labels[i]), prediction=int(np.argmax(probs[i])),
            probabilities=[float(p) for p in probs[i]], proponents=proponents, opponents=opponents,
        ))
    return results


class _Neighbors:
    """The found training examples of a chunk's queries; their stored columns are read once per chunk."""

    def __init__(self, index, q: QueryBlock, hits: TopInfluences, words: int | None) -> None:
        self.index, self.q, self.hits, self.words = index, q, hits, words
        rows = np.unique(np.concatenate([hits.proponent_indices.ravel(), hits.opponent_indices.ravel()]).astype(np.int64))
        self.at = {r: j for j, r in enumerate(rows.tolist())}
        self.texts, self.labels, self.ids = index.texts(rows), index.labels(rows), index.ids(rows)
        has_pairs = "text_pair" in index.column_names()
        self.pairs = index.column("text_pair", rows) if has_pairs else [None] * rows.size
        self.names = index.label_names

    def of(self, i: int, text: str, pair: str | None) -> tuple[list[Neighbor], list[Neighbor]]:
        """Query ``i``'s proponents and opponents, each with its top ``words`` shared words (None: all)."""
        hits = self.hits
        test_ids = None
        if self.words is None or self.words > 0:
            test_ids = self.index.tracin.final.tokenize([text], [pair] if pair is not None else None)["input_ids"][0].tolist()
        return (self._group(i, hits.proponent_indices[i], hits.proponent_scores[i], test_ids),
                self._group(i, hits.opponent_indices[i], hits.opponent_scores[i], test_ids))

    def _group(self, i: int, rows, scores, test_ids: list[int] | None) -> list[Neighbor]:
        rows = np.asarray(rows, dtype=np.int64)
        at = [self.at[r] for r in rows.tolist()]
        explained: list[list] = [[] for _ in at]
        if test_ids is not None and rows.size:
            final = self.index.tracin.final
            for j, totals in enumerate(self.index.searcher.token_totals(self.q, i, rows)):
                text, pair = self.texts[at[j]], self.pairs[at[j]]
                train_ids = final.tokenize([text], [pair] if pair is not None else None)["input_ids"][0].tolist()
                explained[j] = word_contributions(totals, final.token_strings(sorted(totals)), train_ids, test_ids)[:self.words]
        return [
            Neighbor(int(r), self.ids[a], float(s), self.texts[a], int(self.labels[a]), self.names[int(self.labels[a])],
                     explained[j])
            for j, (r, s, a) in enumerate(zip(rows.tolist(), scores, at))
        ]
