"""The index's query path: captured without a separate prediction pass, words from one batched pass, both exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_bert
from tracinwe import TracInWE
from tracinwe.capture.gradients import capture_on_final_predictions
from tracinwe.data import load_dataset_source
from tracinwe.index import Index

QUERIES = [
    "a gorgeous , witty , seductive movie .",
    "the movie is a mess , and a boring one at that .",
    "an utterly charming and hilarious film that reaches into the heart .",
]


@pytest.fixture(scope="module")
def built(tokenizer, tmp_path_factory):
    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(120, seed=5)
    tw = TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03), (tiny_bert(2, 2), 0.05)], tokenizer=tokenizer,
                  max_length=64)
    index = Index.build_from_dataset(tmp_path_factory.mktemp("q") / "ix", tw, data, chunk_size=50, progress=False)
    return data, tw, index


def test_capture_on_final_predictions_equals_capture_on_predicted_labels(built):
    _, tw, _ = built
    predicted = tw.predicted_labels(QUERIES)
    got = capture_on_final_predictions(tw.classifier, len(tw.checkpoints), QUERIES, None, tw.settings)
    want = tw.capture(QUERIES, predicted)
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert a.labels.tolist() == predicted
        for field in ("offsets", "token_ids", "rows", "logits"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field  # the same batches: bit for bit


def test_query_without_labels_equals_query_on_predicted_labels(built):
    _, tw, index = built
    plain = index.query(QUERIES, k=3, words=3)
    labelled = index.query(QUERIES, tw.predicted_labels(QUERIES), k=3, words=3)
    for a, b in zip(plain, labelled, strict=True):
        assert (a.label, a.prediction, a.probabilities) == (b.label, b.prediction, b.probabilities)
        for na, nb in zip(a.proponents + a.opponents, b.proponents + b.opponents, strict=True):
            assert (na.row, na.score, na.words) == (nb.row, nb.score, nb.words)


@pytest.mark.parametrize("words", [None, 1, 4])
def test_batched_words_equal_word_contributions(built, words):
    """Every neighbour's words (all of them, or the top ``words``) equal `TracInWE.word_contributions` on the texts."""
    data, tw, index = built
    labels = [1, 0, 1]
    results = index.query(QUERIES, labels, k=4, words=words)
    scale = max(abs(n.score) for r in results for n in r.proponents + r.opponents)
    for i, result in enumerate(results):
        for n in result.proponents + result.opponents:
            reference = tw.word_contributions(data.texts[n.row], data.labels[n.row], QUERIES[i], labels[i])
            reference = [w for w in reference if w.contribution != 0.0]
            reference = reference if words is None else reference[:words]
            assert [(w.token, w.token_id, w.train_positions, w.test_positions) for w in n.words] == \
                [(w.token, w.token_id, w.train_positions, w.test_positions) for w in reference]
            np.testing.assert_allclose([w.contribution for w in n.words], [w.contribution for w in reference],
                                       rtol=1e-4, atol=1e-7 * scale)
            if words is None:  # all the words: they sum to the score
                assert sum(w.contribution for w in n.words) == pytest.approx(n.score, rel=1e-5, abs=1e-7 * scale)


def test_words_from_the_segments_a_pruned_search_kept_equal_freshly_mapped_ones(built):
    """A pruned search asked to keep its segments (as `query` does for words) keeps every one it screened; the pair
    values read from them equal those from segments mapped again, bit for bit. An unpruned screen keeps none."""
    _, tw, index = built
    records = tw.capture(QUERIES, [1, 0, 1])
    search = index.searcher.start(records, 4, prune=True)
    search.keep_open = True
    hits = index.searcher.rank(search, index.searcher.screen(search))
    assert sorted(search.opened) == list(range(index.searcher.num_segments))
    found = np.concatenate([hits.proponent_indices, hits.opponent_indices], axis=1).astype(np.int64).reshape(-1)
    queries = np.repeat(np.arange(len(QUERIES)), 2 * hits.proponent_indices.shape[1])
    kept = index.searcher.pair_values(search.query, queries, found, search.opened)
    fresh = index.searcher.pair_values(search.query, queries, found)
    assert kept[0].size > 0
    for a, b in zip(kept, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
    unpruned = index.searcher.start(records, 4, prune=False)
    unpruned.keep_open = True
    index.searcher.screen(unpruned)
    assert unpruned.opened == {}
