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
