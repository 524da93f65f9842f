"""Prefix tokenization of long texts gives exactly the ids of full tokenization."""

from __future__ import annotations

import torch

from conftest import tiny_bert
from tracinwe.data import load_dataset_source
from tracinwe.models import HuggingFaceClassifier


def test_prefix_tokenization_is_exact_on_real_articles(tokenizer):
    articles = load_dataset_source("bundled:bbc-news").texts[:200]
    model = tiny_bert(0)
    for max_length in (16, 48, 128, 512):
        fast = HuggingFaceClassifier(model, tokenizer, max_length=max_length)
        plain = HuggingFaceClassifier(model, tokenizer, max_length=max_length, prefix_tokenization=False)
        assert fast.prefix_tokenization
        for b in range(0, len(articles), 50):
            batch = articles[b : b + 50] + ["short text", "x" * 5000]  # no-whitespace text falls back to the full text
            a, p = fast.tokenize(batch), plain.tokenize(batch)
            assert a.keys() == p.keys()
            assert all(torch.equal(a[k], p[k]) for k in a)


def test_checkpoints_sharing_a_tokenizer_tokenize_once(tokenizer, minilm_folder):
    """capture_checkpoints tokenises once for checkpoints whose tokenizers agree, with the same records."""
    from transformers import AutoTokenizer

    from tracinwe.capture.gradients import CaptureSettings, capture_checkpoints, capture_token_gradients

    texts = load_dataset_source("bundled:rotten-tomatoes").texts[:70]
    labels = [i % 2 for i in range(len(texts))]
    second = AutoTokenizer.from_pretrained(minilm_folder)  # another object, same definition
    models = [HuggingFaceClassifier(tiny_bert(s, 2), tok, max_length=32) for s, tok in ((0, tokenizer), (1, second))]
    assert models[0].tokenization_key() == models[1].tokenization_key()
    assert HuggingFaceClassifier(tiny_bert(0, 2), tokenizer, max_length=16).tokenization_key() != models[0].tokenization_key()
    calls = []
    for m in models:
        original = m.tokenize
        m.tokenize = lambda t, p=None, original=original: calls.append(len(t)) or original(t, p)
    settings = CaptureSettings(top_k=5, batch_size=16)
    shared = capture_checkpoints(models, texts, labels, settings=settings)
    assert sum(calls) == len(texts)  # one tokenisation for both checkpoints
    for m, rec in zip(models, shared):
        alone = capture_token_gradients(m, texts, labels, settings=settings)
        assert torch.equal(rec.token_ids, alone.token_ids) and torch.equal(rec.offsets, alone.offsets)
        torch.testing.assert_close(rec.rows, alone.rows, rtol=0, atol=0)
    calls.clear()
    models[1].tokenization_key = lambda: None  # unknown: never shared
    capture_checkpoints(models, texts, labels, settings=settings)
    assert sum(calls) == 2 * len(texts)
