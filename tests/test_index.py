"""The persistent index returns what brute-force TracIn-WE scoring followed by a sort returns."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import tiny_bert
from tracinwe import TracInWE
from tracinwe.data import load_dataset_source
from tracinwe.index import Index, IndexBuildError
from tracinwe.results import TopInfluences

K = 8
QUERIES = [
    "a gorgeous , witty , seductive movie .",
    "the movie is a mess , and a boring one at that .",
    "an utterly charming and hilarious film that reaches into the heart .",
    "it is not a bad movie , just a forgettable one .",
]


@pytest.fixture(scope="module")
def data():
    return load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(64, seed=1)


@pytest.fixture(scope="module")
def tw(tokenizer):
    return TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03)], tokenizer=tokenizer, top_k=10, max_length=64)


@pytest.fixture(scope="module")
def brute(tw, data):
    return tw.scores(data.texts, data.labels, QUERIES, [1, 0, 1, 0])


@pytest.fixture(scope="module")
def index(tw, data, tmp_path_factory):
    return Index.build_from_dataset(tmp_path_factory.mktemp("idx") / "index", tw, data, chunk_size=16, progress=False)


def assert_top_k_exact(hits: TopInfluences, brute: np.ndarray, k: int) -> None:
    """Returned scores are the k largest/smallest brute-force values, and each row has its score."""
    ref = TopInfluences.from_scores(brute, k)
    scale = np.abs(brute).max()
    np.testing.assert_allclose(hits.proponent_scores, ref.proponent_scores, rtol=1e-5, atol=1e-7 * scale)
    np.testing.assert_allclose(hits.opponent_scores, ref.opponent_scores, rtol=1e-5, atol=1e-7 * scale)
    rows = np.arange(brute.shape[0])[:, None]
    np.testing.assert_allclose(brute[rows, hits.proponent_indices], hits.proponent_scores, rtol=1e-5, atol=1e-7 * scale)
    np.testing.assert_allclose(brute[rows, hits.opponent_indices], hits.opponent_scores, rtol=1e-5, atol=1e-7 * scale)
    assert (np.diff(hits.proponent_scores, axis=1) <= 0).all() and (np.diff(hits.opponent_scores, axis=1) >= 0).all()


def test_scores_and_top_k_equal_brute_force(index, tw, brute):
    assert len(index) == 64 and len(index.manifest.segments) == 4
    full = index.scores(QUERIES, [1, 0, 1, 0])
    np.testing.assert_allclose(full, brute, rtol=1e-5, atol=1e-7 * np.abs(brute).max())
    assert_top_k_exact(index.search(tw.capture(QUERIES, [1, 0, 1, 0]), k=K), brute, K)


def test_query_results_carry_examples_and_words(index, data, brute):
    results = index.query(QUERIES, [1, 0, 1, 0], k=3, words=4)
    for i, result in enumerate(results):
        assert result.label == [1, 0, 1, 0][i] and len(result.probabilities) == 2
        assert [n.score for n in result.proponents] == sorted((n.score for n in result.proponents), reverse=True)
        for n in result.proponents + result.opponents:
            assert n.text == data.texts[n.row] and n.id == data.ids[n.row] and n.label == data.labels[n.row]
            assert n.label_name == data.label_names[n.label]
            assert n.score == pytest.approx(brute[i, n.row], rel=1e-5, abs=1e-9)
            assert 1 <= len(n.words) <= 4
            assert abs(n.words[0].contribution) >= abs(n.words[-1].contribution)
        json.dumps(result.to_json())
    # all words: their contributions add up to the score
    full = index.query(QUERIES[:1], [1], k=2, words=1000)[0]
    for n in full.proponents:
        assert sum(w.contribution for w in n.words) == pytest.approx(n.score, rel=1e-6)
        assert all(w.test_positions and w.train_positions for w in n.words)
    assert index.query(QUERIES[:1], [1], k=2, words=None)[0].to_json() == full.to_json()  # None: every shared word


def test_prediction_is_explained_without_labels(index, tw):
    results = index.query(QUERIES[:2], k=2, words=0)
    probs = tw.predict(QUERIES[:2])
    assert [r.prediction for r in results] == probs.argmax(1).tolist() == [r.label for r in results]
    np.testing.assert_allclose([r.probabilities for r in results], probs, rtol=1e-5)


def test_self_influence_and_suspicious(index, tw, data):
    expected = tw.self_influence(data.texts, data.labels)
    stored = index.self_influence()
    np.testing.assert_allclose(stored, expected, rtol=1e-6)  # batches differ: float32 rounding
    top = index.suspicious(k=5, words=3)
    assert [n.row for n in top] == np.argsort(-stored, kind="stable")[:5].tolist()
    assert all(n.score == pytest.approx(expected[n.row], rel=1e-6) and n.words for n in top)


def test_projection_and_float16_return_exact_scores(tw, data, brute, tmp_path):
    records = tw.capture(QUERIES, [1, 0, 1, 0])
    projected = Index.build_from_dataset(tmp_path / "p", tw, data, chunk_size=32, projection_dim=8, progress=False)
    recorded = projected.manifest.projection
    assert (recorded.dim, recorded.method, recorded.seed, recorded.probe) == (8, "pca", 0, 1024)
    assert projected.projection.rows.shape == (2 * 16, 8)  # 2 checkpoints x hidden size 16 -> 8
    # every example a candidate: the projection only ranks, the rescoring is exact
    assert_top_k_exact(projected.search(records, k=K, candidates=len(data)), brute, K)
    hits = projected.search(records, k=K)  # default candidates: returned scores are still exact
    rows = np.arange(len(QUERIES))[:, None]
    np.testing.assert_allclose(brute[rows, hits.proponent_indices], hits.proponent_scores, rtol=1e-5)
    exact = projected.search(records, k=K, use_projection=False)
    assert_top_k_exact(exact, brute, K)

    half = Index.build_from_dataset(tmp_path / "h", tw, data, chunk_size=32, dtype="float16", progress=False)
    assert half.manifest.dtype == "float16"
    stored = half.scores(QUERIES, [1, 0, 1, 0])  # the float16-rounded rows, scored exactly
    np.testing.assert_allclose(stored, brute, atol=2e-3 * np.abs(brute).max())
    assert_top_k_exact(half.search(records, k=K), stored, K)
    def size(ix) -> int:
        return sum(np.load(ix.path / "segments" / s.name / "rows.npy", mmap_mode="r").nbytes for s in ix.manifest.segments)

    assert size(half) * 2 == size(projected)


def test_append_equals_fresh_build_of_the_union(tw, data, brute, tmp_path):
    first = data.subset(range(40))
    grown = Index.build_from_dataset(tmp_path / "grown", tw, first, chunk_size=25, progress=False)
    rest = data.subset(range(40, 64))
    grown.append(rest.texts, rest.labels, ids=rest.ids)
    reopened = Index.open(tmp_path / "grown", tracin=tw)
    assert len(reopened) == 64 and reopened.ids() == data.ids and reopened.texts() == data.texts
    fresh = Index.build_from_dataset(tmp_path / "fresh", tw, data, chunk_size=25, progress=False)
    records = tw.capture(QUERIES, [1, 0, 1, 0])
    a, b = reopened.search(records, k=K), fresh.search(records, k=K)
    np.testing.assert_allclose(a.proponent_scores, b.proponent_scores, rtol=1e-6)
    assert_top_k_exact(a, brute, K)
    np.testing.assert_allclose(reopened.self_influence(), fresh.self_influence(), rtol=1e-6)
    with pytest.raises(IndexBuildError, match="not unique"):
        reopened.append(rest.texts[:1], rest.labels[:1], ids=[rest.ids[0]])


def test_concurrent_queries_agree(index, tw):
    records = tw.capture(QUERIES, [1, 0, 1, 0])
    expected = index.search(records, k=K)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: index.search(records, k=K), range(12)))
    for r in results:
        np.testing.assert_array_equal(r.proponent_indices, expected.proponent_indices)
        np.testing.assert_array_equal(r.opponent_scores, expected.opponent_scores)


def test_open_reloads_recorded_checkpoints(tokenizer, data, tmp_path):
    from tracinwe.models.checkpoints import write_checkpoint_info

    folders = []
    for seed, lr in ((3, 0.2), (4, 0.05)):
        folder = tmp_path / f"checkpoint-{seed}"
        tiny_bert(seed, 2).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_checkpoint_info(folder, lr, step=seed)
        folders.append(folder)
    tw = TracInWE.from_checkpoints(folders, max_length=64, top_k=10)
    subset = data.subset(range(40))
    Index.build_from_dataset(tmp_path / "index", tw, subset, chunk_size=16, progress=False)
    reopened = Index.open(tmp_path / "index")
    assert reopened.tracin.learning_rates == [0.2, 0.05]
    brute = tw.scores(subset.texts, subset.labels, QUERIES)
    assert_top_k_exact(reopened.search(reopened.tracin.capture(QUERIES), k=5), brute, 5)
