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

from tracinwe.capture.gradients import capture_with_token_ids
from tracinwe.capture.records import TokenGradients
from tracinwe.index.documents import display_text
from tracinwe.index.searcher import Search
from tracinwe.index.words import positions, ranked_words
from tracinwe.results import Neighbor, QueryResult, TopInfluences
from tracinwe.scoring.words import WordContribution

#: Texts captured and scored together by `iter_query` (and `tracinwe query`).
QUERY_CHUNK = 256


def iter_query(index, test_texts: Sequence[str], test_labels: Sequence[int | str] | None = None, k: int = 10,
               words: int | None = 5, test_pairs: Sequence[str] | None = None, candidates: int | None = None,
               use_projection: bool | None = None, chunk_size: int = QUERY_CHUNK,
               prune: bool | None = None) -> Iterator[QueryResult]:
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
    return _chunks(index, texts, labels, pairs, k, words, candidates, use_projection, chunk_size, prune)


def _chunks(index, texts: list[str], labels: list[int] | None, pairs: list[str] | None, k: int, words: int | None,
            candidates: int | None, use_projection: bool | None, chunk_size: int,
            prune: bool | None = None) -> Iterator[QueryResult]:
    for lo in range(0, len(texts), chunk_size):
        hi = min(lo + chunk_size, len(texts))
        yield from _query_chunk(
            index, texts[lo:hi], labels[lo:hi] if labels is not None else None, pairs[lo:hi] if pairs is not None else None,
            k, words, candidates, use_projection, prune,
        )


def _query_chunk(index, texts: list[str], labels: list[int] | None, pairs: list[str] | None, k: int, words: int | None,
                 candidates: int | None, use_projection: bool | None, prune: bool | None = None) -> list[QueryResult]:
    records, token_ids = _captured(index.tracin, texts, labels, pairs)
    search = index.searcher.start(records, k, candidates, use_projection, prune)
    search.keep_open = words is None or words > 0  # the words are read from the segments the screen mapped
    hits = index.searcher.rank(search, index.searcher.screen(search))
    neighbors = _Neighbors(index, search, hits, words, texts, pairs, token_ids)
    if index.tracin.is_causal_lm:  # no labels or classes: each document's summed target-token loss
        return [QueryResult(display_text(text), -1, -1, [], *neighbors.of(i), loss=float(records[-1].logits[i, 0]))
                for i, text in enumerate(texts)]
    probs = torch.softmax(records[-1].logits.double(), -1).numpy()
    labels_of, predictions = records[-1].labels.tolist(), probs.argmax(axis=1).tolist()
    results = []
    for i, (text, probabilities) in enumerate(zip(texts, probs.tolist())):
        proponents, opponents = neighbors.of(i)
        results.append(QueryResult(text=text, label=labels_of[i], prediction=predictions[i], probabilities=probabilities,
                                   proponents=proponents, opponents=opponents))
    return results


def capture_queries(tw, texts: list[str], labels: list[int] | None, pairs: list[str] | None) -> list[TokenGradients]:
    """``tw.capture`` of checked inputs; without labels, on the final checkpoint's predictions with no separate prediction
    pass (`capture_on_final_predictions`: the final checkpoint is captured first, on the argmax of its own logits)."""
    return _captured(tw, texts, labels, pairs)[0]


def _captured(tw, texts: list[str], labels: list[int] | None,
              pairs: list[str] | None) -> tuple[list[TokenGradients], list[list[int]] | None]:
    """`capture_queries`, and the texts' token ids where the capture kept its batches (`capture_with_token_ids`)."""
    if labels is not None or tw.is_causal_lm:
        return tw.capture(texts, labels, pairs), None
    return capture_with_token_ids(tw.classifier, len(tw.checkpoints), texts, pairs, tw.settings, tw.device, tw.progress)


def _token_ids(final, texts: list[str], pairs: list | None) -> list[list[int]]:
    """Each text's token ids (padding dropped), tokenised in one batch."""
    if not texts:
        return []
    batch = final.tokenize(texts, pairs if pairs is not None and any(p is not None for p in pairs) else None)
    ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy().astype(bool)
    return [row[m].tolist() for row, m in zip(ids, mask)]


class _Neighbors:
    """The found training examples of a chunk's queries, their stored columns and shared words, computed once per chunk.

    The words of every (query, neighbour) pair come from one batched pass over the pairs' rows
    (`SegmentSearcher.pair_values`) and one sort (`ranked_words`); token strings are looked up once per token.
    """

    def __init__(self, index, search: Search, hits: TopInfluences, words: int | None, texts: list[str],
                 pairs: list[str] | None, token_ids: list[list[int]] | None = None) -> None:
        self.index, self.hits = index, hits
        rows = np.unique(np.concatenate([hits.proponent_indices.ravel(), hits.opponent_indices.ravel()]).astype(np.int64))
        self.rows, self.at = rows, {r: j for j, r in enumerate(rows.tolist())}
        if index.is_causal_lm:
            self.texts, self.ids = index.texts(rows), index.ids(rows)
            self.labels, self.pairs = [-1] * rows.size, None
        else:
            has_pairs = "text_pair" in index.column_names()
            self.texts, self.labels, self.ids, *pairs = index.columns(
                ["text", "label", "id"] + (["text_pair"] if has_pairs else []), rows)
            self.pairs = pairs[0] if pairs else None
        self.names = index.label_names
        self.explained: list[list[WordContribution]] | None = None
        if words is None or words > 0:
            found = np.concatenate([hits.proponent_indices, hits.opponent_indices], axis=1).astype(np.int64).reshape(-1)
            queries = np.repeat(np.arange(len(texts)), 2 * hits.proponent_indices.shape[1])
            self.explained = self._words(search, found, queries, words, texts, pairs, token_ids)

    def _words(self, search: Search, found: np.ndarray, queries: np.ndarray, words: int | None, texts: list[str],
               pairs: list[str] | None, token_ids: list[list[int]] | None) -> list[list[WordContribution]]:
        """Per pair (``queries[p]``, row ``found[p]``), its top ``words`` shared words with their positions (the queries'
        from ``token_ids``, the capture's, where given)."""
        final = self.index.tracin.final
        values = self.index.searcher.pair_values(search.query, queries, found, search.opened)
        starts, token, value = ranked_words(*values, found.size, words)
        chosen = np.unique(token).tolist()
        strings = dict(zip(chosen, final.token_strings(chosen))) if chosen else {}
        stored = self.index.token_ids(self.rows)  # as the build tokenised them (older indexes: tokenised here)
        if stored is None:
            inputs = self.index.examples(self.rows) if self.index.is_causal_lm else self.texts  # what the model tokenises
            stored = _token_ids(final, inputs, self.pairs)
        train_at = [positions(ids) for ids in stored]
        test_at = [positions(ids) for ids in (token_ids if token_ids is not None else _token_ids(final, texts, pairs))]
        pair = np.repeat(np.arange(found.size), np.diff(starts))  # each listed word's pair, its row and its query
        rows, tests = np.searchsorted(self.rows, found)[pair].tolist(), queries[pair].tolist()
        made = [WordContribution(strings[t], v, t, train_at[j].get(t, ()), test_at[i].get(t, ()))
                for t, v, j, i in zip(token.tolist(), value.tolist(), rows, tests)]
        bounds = starts.tolist()
        return [made[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def of(self, i: int) -> tuple[list[Neighbor], list[Neighbor]]:
        """Query ``i``'s proponents and opponents, each with its top words."""
        hits, width = self.hits, self.hits.proponent_indices.shape[1]
        return (self._group(hits.proponent_indices[i], hits.proponent_scores[i], 2 * i * width),
                self._group(hits.opponent_indices[i], hits.opponent_scores[i], (2 * i + 1) * width))

    def _group(self, rows, scores, first: int) -> list[Neighbor]:
        out = []
        for j, (r, s) in enumerate(zip(np.asarray(rows, dtype=np.int64).tolist(), np.asarray(scores).tolist())):
            a = self.at[r]
            label = int(self.labels[a])  # -1: a causal-LM document (no label)
            words = self.explained[first + j] if self.explained is not None else []
            out.append(Neighbor(r, self.ids[a], float(s), self.texts[a], label, self.names[label] if label >= 0 else "", words))
        return out
