"""Capture batches are grouped by token count (not characters), records come back in input order, scores are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_bert
from test_causal_lm import TEST, TRAIN, bpe, brute_force_scores, tiny_gpt2  # noqa: F401 - bpe is a fixture
from test_exactness import LRS, dense_tracin
from tracinwe import TracInWE
from tracinwe.capture import batching, gradients
from tracinwe.capture.batching import pad_values, token_windows, tokenize_window, window_batches
from tracinwe.capture.gradients import CaptureSettings, capture_checkpoints
from tracinwe.lm import lm_tracin_scores
from tracinwe.models.causal_lm import CausalLanguageModel
from tracinwe.models.contract import TorchTextClassifier
from tracinwe.models.huggingface import HuggingFaceClassifier
from tracinwe.models.prefix import encode_truncated
from tracinwe.models.small import TokenCNN

# Characters and tokens disagree: long single-token words (few tokens, many characters) against
# letters and punctuation (one token per two characters), in an order that is neither.
TEXTS = [
    "understanding international government " * k if k % 2 else ". , ; : ! ? " * k for k in (3, 1, 6, 2, 5, 4, 1, 3)
] + ["a b c d e f g h i j k l", "international", "x y z , . !", "understanding everything government development"]
LABELS = [i % 2 for i in range(len(TEXTS))]


def padded_tokens_of_capture(monkeypatch, classifier, texts, labels, settings, chunk_size=None) -> tuple[int, list]:
    """Padded tokens (B x T summed) of every batch the capture ran, and the capture's records."""
    seen: list[int] = []
    real = gradients.batch_token_gradients

    def recording(clf, batch, y, s, **options):
        seen.append(int(batch["input_ids"].numel()))
        return real(clf, batch, y, s, **options)

    monkeypatch.setattr(gradients, "batch_token_gradients", recording)
    records = capture_checkpoints([classifier], texts, labels, settings=settings, chunk_size=chunk_size)[0]
    return sum(seen), records


def grouped_padding(lengths: list[int], batch_size: int) -> int:
    return sum(len(g) * max(g) for g in (lengths[b : b + batch_size] for b in range(0, len(lengths), batch_size)))


@pytest.mark.parametrize("overlap", [False, True])
def test_batches_are_grouped_by_token_count_and_records_come_back_in_input_order(tokenizer, monkeypatch, overlap):
    monkeypatch.setattr(gradients, "can_overlap", lambda device: overlap)
    clf = HuggingFaceClassifier(tiny_bert(0, 2), tokenizer, max_length=32)
    settings = CaptureSettings(batch_size=3, max_length=32)
    tokens = [len(tokenizer(t, truncation=True, max_length=32)["input_ids"]) for t in TEXTS]
    by_tokens = grouped_padding(sorted(tokens), 3)
    by_chars = grouped_padding([tokens[i] for i in np.argsort([len(t) for t in TEXTS], kind="stable")], 3)
    assert by_tokens < by_chars  # the texts tell the two groupings apart
    padded, records = padded_tokens_of_capture(monkeypatch, clf, TEXTS, LABELS, settings)
    if overlap:  # the model waits: texts 0-2 alone, then 3-5, then 6-11, each piece sorted by tokens
        pieces = [range(0, 3), range(3, 6), range(6, 12)]
        assert [w.tolist() for w in token_windows(len(TEXTS), 3, lead=True)] == [list(p) for p in pieces]
        assert padded == sum(grouped_padding(sorted(tokens[i] for i in piece), 3) for piece in pieces)
        assert [w.tolist() for w in token_windows(10, 2, lead=True)] == [[0, 1], [2, 3], [4, 5, 6, 7], [8, 9]]
        monkeypatch.setattr(batching, "MAX_WINDOW_BATCHES", 2)  # at most 2 batches tokenised (and sorted) together
        assert [w.tolist() for w in token_windows(10, 2, lead=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        assert [w.tolist() for w in token_windows(10, 2, lead=True)] == [[0, 1], [2, 3], [4, 5, 6, 7], [8, 9]]
    else:
        assert padded == by_tokens
    assert records.labels.tolist() == LABELS  # input order
    alone = capture_checkpoints([clf], TEXTS, LABELS, settings=CaptureSettings(batch_size=1, max_length=32))[0]
    assert torch.equal(records.offsets, alone.offsets) and torch.equal(records.token_ids, alone.token_ids)
    torch.testing.assert_close(records.rows, alone.rows, rtol=1e-5, atol=1e-6)  # each text's own, whatever batch it ran in


def test_each_batch_equals_the_tokenizer_on_its_own_texts(tokenizer):
    clf = HuggingFaceClassifier(tiny_bert(0, 2), tokenizer, max_length=32)
    pads = pad_values(clf)
    one = tokenize_window(clf, TEXTS, None, pads, workers=1)
    two = tokenize_window(clf, TEXTS[::-1] * 8, None, pads, workers=2)  # parts tokenised by two threads, joined
    for key, value in clf.tokenize(TEXTS[::-1] * 8).items():
        assert torch.equal(two[key], value), key
    many = TEXTS[::-1] * 32  # 384 texts: six parts of 64 by as many threads at once
    six = tokenize_window(clf, many, many[::-1], pads, workers=6)
    for key, value in clf.tokenize(many, many[::-1]).items():
        assert torch.equal(six[key], value), key
    for rows, batch in window_batches(one, 5, sort=True):
        want = clf.tokenize([TEXTS[i] for i in rows])
        assert set(batch) == set(want)
        for key in want:
            assert torch.equal(batch[key], want[key]), key


def test_an_accelerator_is_fed_by_one_tokenising_thread_per_core_up_to_a_cap(monkeypatch):
    monkeypatch.setattr(batching.os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object only: nothing runs on it
    assert batching.background_workers(cuda) == batching.MAX_ACCELERATOR_TOKENIZE_WORKERS == 8
    assert batching.background_workers(cpu) == 1  # beside a CPU model the other cores run the model
    monkeypatch.setattr(batching.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    assert batching.background_workers(cuda) == 3
    monkeypatch.setattr(batching, "ACCELERATOR_TOKENIZE_WORKERS", 1)  # set by hand (bench_capture --tokenize-workers)
    assert batching.background_workers(cuda) == 1


def test_bert_and_cnn_scores_equal_dense_autograd_with_token_sorted_batches(tokenizer):
    train, train_labels, test, test_labels = TEXTS[4:], LABELS[4:], TEXTS[:3], [1, 0, 0]
    bert = [tiny_bert(s, 2) for s in (0, 1)]
    tw = TracInWE([(m, lr) for m, lr in zip(bert, LRS)], tokenizer=tokenizer, batch_size=3, max_length=64)
    dense = dense_tracin(bert, LRS, lambda m: (lambda b: m(**b).logits), lambda t: tokenizer([t], return_tensors="pt"),
                         train, train_labels, test, test_labels)
    got = tw.scores(train, train_labels, test, test_labels)
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-5 * np.abs(dense).max())
    cnns = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cnns.append(TokenCNN(len(tokenizer), 2, dim=8, channels=8).eval())
    wrapped = [TorchTextClassifier(m, embedding=m.embed, num_classes=2, hf_tokenizer=tokenizer,
                                   forward=lambda b, m=m: m(b["input_ids"], b["attention_mask"])) for m in cnns]
    tw = TracInWE([(c, lr) for c, lr in zip(wrapped, LRS)], batch_size=3)
    dense = dense_tracin(cnns, LRS, lambda m: (lambda b: m(b["input_ids"], b["attention_mask"])),
                         lambda t: tokenizer([t], return_tensors="pt"), train, train_labels, test, test_labels)
    got = tw.scores(train, train_labels, test, test_labels)
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-5 * np.abs(dense).max())


def test_lm_batches_by_token_count_and_scores_equal_brute_force(bpe, monkeypatch):  # noqa: F811 - the fixture
    checkpoints = [(CausalLanguageModel(tiny_gpt2(bpe, seed), bpe, max_length=64), lr) for seed, lr in ((0, 0.3), (1, 0.1))]
    lm = checkpoints[0][0]
    docs = TRAIN * 3
    tokens = [len(lm.token_ids(d)[0]) for d in docs]
    padded, _ = padded_tokens_of_capture(monkeypatch, lm, docs, None, CaptureSettings(batch_size=2))
    assert padded == grouped_padding(sorted(tokens), 2)
    monkeypatch.undo()
    result = lm_tracin_scores(checkpoints, TRAIN, TEST, settings=CaptureSettings(batch_size=2))
    expected = brute_force_scores(checkpoints, TRAIN, TEST)
    assert torch.allclose(result.scores, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_prefix_encoding_retries_short_prefixes_and_equals_the_full_tokenisation(tokenizer):
    texts = [
        "supercalifragilistic-expialidocious " * 40,  # long words: the first prefix is too short, the retries decide
        "a " * 300,  # one token per two characters: the first prefix decides
        "word" * 500,  # no space: the full text
        "short text",
    ]
    for max_length in (8, 64):
        want = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        got = encode_truncated(tokenizer, texts, max_length, ("input_ids", "attention_mask"))
        for key in got:
            assert got[key].tolist() == want[key].tolist(), (max_length, key)


def test_unknown_tokenize_keeps_character_batches(tokenizer, monkeypatch):
    """A user's own tokenize callable: padding unknown, so batches are tokenised one by one as before."""
    torch.manual_seed(0)
    m = TokenCNN(len(tokenizer), 2, dim=8, channels=8).eval()

    def tok(texts, pairs):
        return dict(tokenizer(list(texts), padding=True, return_tensors="pt"))

    clf = TorchTextClassifier(m, embedding=m.embed, num_classes=2, tokenize=tok,
                              forward=lambda b: m(b["input_ids"], b["attention_mask"]))
    assert pad_values(clf) is None
    tokens = [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    padded, records = padded_tokens_of_capture(monkeypatch, clf, TEXTS, LABELS, CaptureSettings(batch_size=3))
    assert padded == grouped_padding([tokens[i] for i in np.argsort([len(t) for t in TEXTS], kind="stable")], 3)
    assert records.labels.tolist() == LABELS


def test_a_failing_capture_stops_the_tokenising_thread_and_raises(tokenizer, monkeypatch):
    import threading

    monkeypatch.setattr(gradients, "can_overlap", lambda device: True)
    clf = HuggingFaceClassifier(tiny_bert(0, 2), tokenizer, max_length=32)

    def failing(*args, **options):
        raise RuntimeError("model broke")

    monkeypatch.setattr(gradients, "batch_token_gradients", failing)
    with pytest.raises(RuntimeError, match="model broke"):
        capture_checkpoints([clf], TEXTS * 20, LABELS * 20, settings=CaptureSettings(batch_size=4, max_length=32), chunk_size=32)
    assert not any(t.name == "tracinwe-tokenize" for t in threading.enumerate())


def test_a_tokenizer_error_reaches_the_caller(tokenizer, monkeypatch):
    monkeypatch.setattr(gradients, "can_overlap", lambda device: True)
    clf = HuggingFaceClassifier(tiny_bert(0, 2), tokenizer, max_length=32)
    real = clf.tokenize

    def tokenize(texts, pairs=None):
        if any("boom" in t for t in texts):
            raise ValueError("bad text")
        return real(texts, pairs)

    monkeypatch.setattr(clf, "tokenize", tokenize)  # still the adapter's padding: the thread path is used
    monkeypatch.setattr(gradients, "pad_values", lambda c: {"input_ids": 0, "attention_mask": 0, "token_type_ids": 0})
    texts = TEXTS * 4 + ["boom"]
    with pytest.raises(ValueError, match="bad text"):
        capture_checkpoints([clf], texts, [0] * len(texts), settings=CaptureSettings(batch_size=4, max_length=32), chunk_size=16)
