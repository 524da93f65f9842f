"""The retraining proxies: the CNN whose word embeddings start from MiniLM-L6's (``cnn-minilm``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracinwe import TracInWEError
from tracinwe.training.small import SmallTask, build_model, minilm_word_embeddings, stable_config


def _minilm_table() -> torch.Tensor:
    from safetensors.torch import load_file

    from tracinwe.models.pretrained import minilm_l6_path

    weights = load_file(str(minilm_l6_path() / "model.safetensors"))
    return next(v for k, v in weights.items() if k.endswith("word_embeddings.weight")).double()


def test_cnn_minilm_starts_from_the_principal_components_of_minilm_embeddings():
    table = _minilm_table()
    projected = minilm_word_embeddings(30522, 64).double()
    centred = table - table.mean(0)
    # Least squares from the projection back to the table: the top 64 components keep much more variance than
    # 64 random directions would (64 / 384 = 17% of it).
    solution = torch.linalg.lstsq(projected, centred).solution
    kept = 1 - ((projected @ solution - centred) ** 2).sum() / (centred**2).sum()
    gaussian = torch.randn(384, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    random_dirs = centred @ torch.linalg.qr(gaussian)[0]
    random_solution = torch.linalg.lstsq(random_dirs, centred).solution
    random_kept = 1 - ((random_dirs @ random_solution - centred) ** 2).sum() / (centred**2).sum()
    assert float(kept) > float(random_kept) + 0.15, (float(kept), float(random_kept))
    assert abs(float(projected.std()) - 1.0) < 1e-6
    # The projection is linear: inner products of centred rows are kept on the kept subspace, so words stay near
    # their pretrained neighbours.
    from transformers import AutoTokenizer

    from tracinwe.models.pretrained import minilm_l6_path

    vocab = AutoTokenizer.from_pretrained(minilm_l6_path()).convert_tokens_to_ids(["good", "great", "football"])
    cos = torch.nn.functional.cosine_similarity
    good, great, football = (projected[i] for i in vocab)
    assert float(cos(good, great, 0)) > float(cos(good, football, 0)) + 0.2


def test_cnn_minilm_seed_changes_only_the_layers_above_the_embeddings():
    config = stable_config("cnn-minilm", num_classes=2, device="cpu")
    a, b = build_model(config, 0), build_model(config, 1)
    assert torch.equal(a.embed.weight, b.embed.weight)
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    assert torch.equal(build_model(config, 0).conv1.weight, a.conv1.weight)


def test_cnn_minilm_refuses_a_shape_it_cannot_start_from():
    with pytest.raises(TracInWEError, match="cnn-minilm needs vocab_size 30522"):
        minilm_word_embeddings(1000, 64)


@pytest.mark.slow
def test_cnn_minilm_learns_real_topics_and_retrains_stably(tokenizer):
    """On 400 BBC News documents the pretrained start learns the topics, and random deletions barely move it."""
    from tracinwe.data import load_dataset_source
    from tracinwe.evaluate.noise import random_deletion_set

    data = load_dataset_source("bundled:bbc-news").dedupe()
    train, heldout = data.split(0.2, seed=0)
    train, heldout = train.sample(400, seed=0), heldout.sample(200, seed=0)
    config = stable_config("cnn-minilm", num_classes=len(data.label_names), max_length=48, device="cpu")
    task = SmallTask.from_texts(config, tokenizer, train.texts, train.labels, heldout.texts, heldout.labels)
    full = task.evaluate(task.train(range(400), 0), range(200))
    accuracy = float((full.argmax(1) == np.asarray(heldout.labels)).mean())
    majority = np.bincount(heldout.labels).max() / 200
    assert accuracy > majority + 0.4, (accuracy, majority)
    keep = sorted(set(range(400)) - set(random_deletion_set(400, 8, 0)))
    moved = np.abs(task.evaluate(task.train(keep, 0), range(200)) - full)[np.arange(200), heldout.labels]
    assert np.median(moved) < 0.02, np.median(moved)
