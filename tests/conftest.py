"""Shared fixtures: tiny real models (BERT and CNN) on the real MiniLM vocabulary."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tracinwe.models.pretrained import minilm_l6_path

TEXTS = [
    "a gorgeous , witty , seductive movie .",
    "the movie is a mess , and a boring one at that .",
    "an utterly charming and hilarious film that reaches into the heart .",
    "boring , boring , boring .",
    "it is not a bad movie , just a forgettable one .",
    "the cast is uniformly excellent and the script is sharp .",
]
LABELS = [1, 0, 1, 0, 0, 1]


@pytest.fixture(scope="session")
def minilm_folder():
    return minilm_l6_path()


@pytest.fixture(scope="session")
def tokenizer(minilm_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_folder)


def tiny_bert(seed: int, num_labels: int = 3):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels,
    )
    model = BertForSequenceClassification(config)
    # Spread the embedding so gradients are not dominated by LayerNorm of near-zero inputs.
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.normal_(0, 0.5)
    return model.eval()


def minilm_classifier(folder, seed: int, num_labels: int = 2):
    """Pretrained MiniLM-L6 encoder with a freshly seeded classification head."""
    from transformers import AutoModelForSequenceClassification, logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=num_labels).eval()


def tiny_base_model(folder: Path, tokenizer, seed: int = 0) -> Path:
    """A small BERT (hidden 32) with the MiniLM vocabulary, saved as a HF folder to fine-tune."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_reviews(path: Path, texts, labels, names) -> Path:
    """Real reviews as a CSV with non-default column names and label names as strings."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        writer.writerows((t, names[y]) for t, y in zip(texts, labels))
    return path
