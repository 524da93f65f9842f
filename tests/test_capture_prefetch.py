"""Capture with batches tokenised ahead by a background thread equals the plain capture: the same tokens and labels,
rows and logits to float rounding (the first chunk may group its texts into other batches)."""

from __future__ import annotations

import threading

import pytest
import torch

from conftest import tiny_bert
from tracinwe.capture import batching, gradients, prefetch
from tracinwe.capture.gradients import CaptureSettings, capture_checkpoints, iter_token_gradients
from tracinwe.capture.prefetch import prefetched
from tracinwe.data import load_dataset_source
from tracinwe.models.contract import TorchTextClassifier
from tracinwe.models.huggingface import HuggingFaceClassifier
from tracinwe.models.small import TokenCNN


@pytest.fixture(scope="module")
def reviews():
    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(70, seed=3)
    return list(data.texts), list(data.labels)


def classifiers(kind: str, tokenizer) -> list:
    if kind == "bert":
        return [HuggingFaceClassifier(tiny_bert(s, 2), tokenizer, max_length=48) for s in (0, 1)]
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = TokenCNN(len(tokenizer), 2, dim=8, channels=8).eval()
        out.append(TorchTextClassifier(m, embedding=m.embed, num_classes=2, hf_tokenizer=tokenizer, max_length=48,
                                       forward=lambda b, m=m: m(b["input_ids"], b["attention_mask"])))
    return out


@pytest.mark.parametrize("kind", ["bert", "cnn"])
@pytest.mark.parametrize("with_labels", [True, False])
def test_prefetched_capture_equals_plain_capture(tokenizer, reviews, monkeypatch, kind, with_labels):
    texts, labels = reviews
    settings = CaptureSettings(batch_size=8, max_length=48, top_k=None)
    clfs = classifiers(kind, tokenizer)
    monkeypatch.setattr(gradients, "can_overlap", lambda device: True)  # prefetch even where no core is spare
    runs = {}
    for depth in (0, 1, 3):
        monkeypatch.setattr(prefetch, "PREFETCH_BATCHES", depth)
        # chunks of 24 (3 batches, the last chunk short), two checkpoints sharing one tokenisation
        runs[depth] = capture_checkpoints(clfs, texts, labels if with_labels else None, settings=settings, chunk_size=24)
    for depth in (1, 3):
        for plain, ahead in zip(runs[0], runs[depth], strict=True):
            for field in ("offsets", "token_ids", "labels"):
                assert torch.equal(getattr(plain, field), getattr(ahead, field)), field
            # a chunk the model waits for is tokenised in pieces (the batches may group other texts): each text's rows
            # and logits are its own, equal to float32 rounding
            for field in ("rows", "logits"):
                want = getattr(plain, field)
                torch.testing.assert_close(getattr(ahead, field), want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    assert len(runs[0][0]) == len(texts)
    if with_labels:
        assert runs[0][0].labels.tolist() == labels


def test_chunks_come_in_input_order_and_the_producer_is_gone_between_them(tokenizer, reviews, monkeypatch):
    texts, labels = reviews
    monkeypatch.setattr(gradients, "can_overlap", lambda device: True)
    clf = classifiers("cnn", tokenizer)[0]
    settings = CaptureSettings(batch_size=8, max_length=48)
    starts = []
    for start, records in iter_token_gradients(clf, texts, labels, settings=settings, chunk_size=30):
        starts.append(start)
        assert records.labels.tolist() == labels[start : start + len(records)]
        assert not any(t.name == "tracinwe-tokenize" for t in threading.enumerate())
    assert starts == [0, 30, 60]


def test_prefetched_keeps_order_raises_the_producers_error_and_stops_early():
    assert list(prefetched(iter(range(50)), 2)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise ValueError("bad text")

    got = []
    with pytest.raises(ValueError, match="bad text"):
        for item in prefetched(failing(), 2):
            got.append(item)
    assert got == [1, 2]
    made = []

    def counting():
        for i in range(1000):
            made.append(i)
            yield i

    stream = prefetched(counting(), 2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert len(made) <= 3 + 2 + 1  # taken, queued, the one being made when the stop came
    assert not any(t.name == "tracinwe-tokenize" for t in threading.enumerate())


def test_torch_classifier_tokenises_long_texts_from_a_prefix_to_the_same_ids(tokenizer):
    """A TorchTextClassifier with a fast HuggingFace tokenizer gives the ids of the full texts (BBC articles, 2,000+ chars)."""
    texts = list(load_dataset_source("bundled:bbc-news").dedupe().sample(24, seed=1).texts)
    texts += ["short text", "word " * 400, "x" * 3000]  # a short one, a long run of words, a long text without spaces
    clf = classifiers("cnn", tokenizer)[0]
    for max_length in (16, 64):
        clf.max_length = max_length
        want = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        got = clf.tokenize(texts)
        assert got["input_ids"].tolist() == want["input_ids"].tolist()
        assert got["attention_mask"].tolist() == want["attention_mask"].tolist()


def test_capture_fed_as_an_accelerator_is_by_several_tokenising_threads_equals_the_plain_capture(tokenizer, monkeypatch):
    """The accelerator's feed on a CPU: a thread tokenises ahead, each window split over 4 threads (long BBC articles
    among the texts take the prefix path in those threads); records equal the capture tokenised in the caller's thread."""
    texts = list(load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(560, seed=5).texts)
    texts += list(load_dataset_source("bundled:bbc-news").dedupe().sample(40, seed=5).texts)
    texts = texts[::2] + texts[1::2]  # the articles spread over the windows
    labels = [i % 2 for i in range(len(texts))]
    clfs = classifiers("bert", tokenizer)
    settings = CaptureSettings(batch_size=128, max_length=48)  # windows of 128, 128, 256 (4 parts of 64), 88 texts
    monkeypatch.setattr(prefetch, "PREFETCH_BATCHES", 0)
    plain = capture_checkpoints(clfs, texts, labels, settings=settings, chunk_size=len(texts))
    monkeypatch.setattr(prefetch, "PREFETCH_BATCHES", 2)
    monkeypatch.setattr(gradients, "can_overlap", lambda device: True)
    monkeypatch.setattr(gradients, "background_workers", lambda device: 4)
    split = []
    real_window = batching.tokenize_window
    monkeypatch.setattr(batching, "tokenize_window", lambda *a, **kw: (split.append(min(a[4], len(a[1]) // 64)),
                                                                       real_window(*a, **kw))[1])
    fed = capture_checkpoints(clfs, texts, labels, settings=settings, chunk_size=len(texts))
    assert max(split) == 4  # a window was tokenised by four threads at once
    for want, got in zip(plain, fed, strict=True):
        for field in ("offsets", "token_ids", "labels"):
            assert torch.equal(getattr(want, field), getattr(got, field)), field
        for field in ("rows", "logits"):
            value = getattr(want, field)
            torch.testing.assert_close(getattr(got, field), value, rtol=1e-5, atol=1e-6 * float(value.abs().max()))
