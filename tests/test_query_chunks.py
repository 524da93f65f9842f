"""Queries in chunks: the same answers as one call, and memory that does not grow with the number of texts."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
import torch

from tracinwe import TracInWE
from tracinwe.index import Index
from tracinwe.models.contract import TorchTextClassifier
from tracinwe.models.small import TokenCNN

WORDS = ("a good bad film movie plot cast dull fine great awful story acting script scene ending slow fun "
         "witty boring sharp mess charming heart").split()


def word_ids(texts, pairs=None):
    """A whitespace tokenizer on the word list above ([CLS] = 1, padding = 0)."""
    rows = [[1] + [2 + WORDS.index(w) for w in t.split()] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def texts_of(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(n)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A tiny model: more threads only contend on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    """A fast TokenCNN (two checkpoints) and a 240-example index in segments of 64."""
    classifiers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = TokenCNN(len(WORDS) + 2, 2, dim=8, channels=8).eval()
        classifiers.append(TorchTextClassifier(
            model, embedding=model.embed, num_classes=2, tokenize=word_ids, special_token_ids=[1],
            forward=lambda b, m=model: m(b["input_ids"], b["attention_mask"]),
        ))
    tw = TracInWE([(classifiers[0], 0.1), (classifiers[1], 0.03)], batch_size=64)
    texts = texts_of(240, seed=1)
    return Index.build(tmp_path_factory.mktemp("chunks") / "idx", tw, texts, [len(t) % 2 for t in texts], chunk_size=64,
                       progress=False)


def test_chunked_queries_equal_one_call(small_index):
    queries = texts_of(40, seed=2)
    labels = [i % 2 for i in range(40)]
    whole = small_index.query(queries, labels, k=5, words=3)  # one chunk
    for chunk_size in (1, 7):
        parts = small_index.query(queries, labels, k=5, words=3, chunk_size=chunk_size)
        assert len(parts) == len(whole)
        for a, b in zip(parts, whole):
            assert (a.text, a.label, a.prediction) == (b.text, b.label, b.prediction)
            np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-6)
            for group_a, group_b in ((a.proponents, b.proponents), (a.opponents, b.opponents)):
                assert [n.row for n in group_a] == [n.row for n in group_b]
                np.testing.assert_allclose([n.score for n in group_a], [n.score for n in group_b], rtol=1e-5)
                assert [[w.token for w in n.words] for n in group_a] == [[w.token for w in n.words] for n in group_b]
    streamed = list(small_index.iter_query(queries, labels, k=5, words=3, chunk_size=7))
    listed = small_index.query(queries, labels, k=5, words=3, chunk_size=7)
    assert [r.to_json() for r in streamed] == [r.to_json() for r in listed]


def test_bad_input_is_refused_before_the_first_result(small_index):
    with pytest.raises(ValueError, match=r"test_texts\[300\] is empty"):
        small_index.iter_query(texts_of(300, seed=3) + [" "], chunk_size=256)  # no result produced, nothing consumed


def _peak_bytes(index, queries) -> int:
    """Peak traced memory (bytes above the start) of querying ``queries`` and dropping each result."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        count = sum(1 for _ in index.iter_query(queries, k=5, words=0))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert count == len(queries)
    return peak


@pytest.mark.slow
def test_memory_of_20000_queries_is_that_of_one_chunk(small_index):
    many = texts_of(20_000, seed=4)
    _peak_bytes(small_index, many[:256])  # first-call allocations (caches) out of the way
    one_chunk = _peak_bytes(small_index, many[:256])
    all_of_them = _peak_bytes(small_index, many)
    assert all_of_them <= 1.5 * one_chunk, (all_of_them, one_chunk)
