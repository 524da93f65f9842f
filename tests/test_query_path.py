"""The index's query path: captured without a separate prediction pass, words from one batched pass, both exact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import tiny_bert
from tracinwe import TracInWE
from tracinwe.capture.gradients import CaptureSettings, capture_on_final_predictions, capture_with_token_ids
from tracinwe.data import load_dataset_source
from tracinwe.index import Index
from tracinwe.index.storage import MANIFEST, SEGMENTS

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


@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("ahead", [False, True])
def test_capture_keeps_each_texts_token_ids(built, pairs, ahead, monkeypatch):
    """The token ids the capture hands back are the tokenizer's, text by text in input order, though its batches were
    sorted by length (batch size 2) and a long text was tokenised from a prefix; from batches tokenised by a
    background thread (``ahead``) or by the first checkpoint's pass."""
    monkeypatch.setattr("tracinwe.capture.gradients.can_overlap", lambda device: ahead)
    data, tw, _ = built
    texts = QUERIES + [" ".join(data.texts[:40]), "ok .", data.texts[7]]
    text_pairs = [t[::-1] for t in texts] if pairs else None
    settings = CaptureSettings(batch_size=2, max_length=64)
    records, ids = capture_with_token_ids(tw.classifier, len(tw.checkpoints), texts, text_pairs, settings)
    batch = tw.final.tokenize(texts, text_pairs)
    want = [row[m].tolist() for row, m in zip(batch["input_ids"].numpy(), batch["attention_mask"].numpy().astype(bool))]
    assert ids == want
    assert len(ids[3]) == 64  # truncated
    for r, plain in zip(records, capture_on_final_predictions(tw.classifier, len(tw.checkpoints), texts, text_pairs,
                                                             settings)):
        assert torch.equal(r.rows, plain.rows)


def tokenized_ids(tw, texts, pairs=None) -> list[list[int]]:
    batch = tw.final.tokenize(texts, pairs)
    return [row[m].tolist() for row, m in zip(batch["input_ids"].numpy(), batch["attention_mask"].numpy().astype(bool))]


def test_index_stores_each_examples_token_ids(built):
    """The build keeps every example's token ids (from the capture's own batches): the tokenizer's, in any row order."""
    _, tw, index = built
    want = tokenized_ids(tw, index.texts())
    assert index.token_ids(np.arange(len(index))) == want
    assert index.token_ids([len(index) - 1, 0, 51, 0]) == [want[-1], want[0], want[51], want[0]]


def test_index_with_text_pairs_stores_both_texts_token_ids(tokenizer, tmp_path):
    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(30, seed=1)
    pairs = [" ".join(reversed(t.split())) for t in data.texts]
    tw = TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.05)], tokenizer=tokenizer, max_length=48)
    index = Index.build(tmp_path / "ix", tw, data.texts, data.labels, text_pairs=pairs, chunk_size=12, progress=False)
    assert index.token_ids(np.arange(30)) == tokenized_ids(tw, data.texts, pairs)


def test_index_without_stored_token_ids_gives_the_same_words(built, tmp_path):
    """An index built before the token ids were kept (no example_tokens files) tokenises the found examples again:
    the same words, positions included."""
    _, tw, index = built
    old = tmp_path / "old"
    shutil.copytree(index.path, old)
    manifest = json.loads((old / MANIFEST).read_text())
    for seg in manifest["segments"]:
        for name in ("example_tokens.npy", "example_token_offsets.npy"):
            (old / SEGMENTS / seg["name"] / name).unlink()
            del seg["files"][name]
    (old / MANIFEST).write_text(json.dumps(manifest))
    reopened = Index.open(old, tw)
    assert reopened.token_ids([0, 1]) is None
    for a, b in zip(index.query(QUERIES, k=3, words=None), reopened.query(QUERIES, k=3, words=None), strict=True):
        for na, nb in zip(a.proponents + a.opponents, b.proponents + b.opponents, strict=True):
            assert na.words and (na.row, na.words) == (nb.row, nb.words)


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
