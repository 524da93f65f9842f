"""Grad-Dot and TracIn-all-params: brute-force autograd equality, the size limit, the sign, the registry."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import CheckpointMethod, TracInWEError
from tracinwe.evaluate.baselines.all_params import TracInAllParameters
from tracinwe.evaluate.baselines.grad_dot import GradDot
from tracinwe.evaluate.registry import METHODS, MethodContext, build_method

LRS = (0.1, 0.03)
TEST_TEXTS, TEST_LABELS = [TEXTS[2], "boring and witty ."], [1, 0]


def varied_bert(seed: int):
    """`tiny_bert` with its weight matrices drawn at std 0.3: at BERT's 0.02 every text gets nearly the same gradient."""
    model = tiny_bert(seed, num_labels=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "word_embeddings" not in name:
                p.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def models():
    return [(varied_bert(s), lr) for s, lr in zip((5, 6), LRS)]


def loss_of(model, tokenizer, text: str, label: int) -> torch.Tensor:
    """Cross-entropy of one text, straight through the HF model (no tracinwe code)."""
    batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=128)
    return torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([label]))


def brute_gradients(model, tokenizer, texts, labels, parameters) -> torch.Tensor:
    """One autograd call per example: (n, P) float64 flattened gradients of ``parameters``."""
    rows = []
    for text, label in zip(texts, labels):
        with torch.enable_grad():
            grads = torch.autograd.grad(loss_of(model, tokenizer, text, label), parameters)
        rows.append(torch.cat([g.flatten() for g in grads]).double())
    return torch.stack(rows)


def assert_close_scaled(got: np.ndarray, expected: np.ndarray) -> None:
    """rtol 1e-4, plus an absolute slack of 1e-5 of the largest |score| (float32 models)."""
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))


def last_layer(model) -> list[torch.nn.Parameter]:
    return [model.classifier.weight, model.classifier.bias]


def test_grad_dot_equals_autograd_on_the_final_layer_of_the_final_checkpoint(models, tokenizer):
    method = GradDot(models, tokenizer)
    final = models[-1][0]
    g_train = brute_gradients(final, tokenizer, TEXTS, LABELS, last_layer(final))
    g_test = brute_gradients(final, tokenizer, TEST_TEXTS, TEST_LABELS, last_layer(final))
    expected = (g_test @ g_train.T).numpy()  # no learning rate, no earlier checkpoint
    scores = method.scores(TEXTS, LABELS, TEST_TEXTS, TEST_LABELS)
    assert scores.shape == (2, len(TEXTS)) and np.abs(expected).max() > 0
    assert_close_scaled(scores, expected)
    assert_close_scaled(method.self_influence(TEXTS, LABELS), (g_train ** 2).sum(1).numpy())


def test_tracin_all_params_equals_autograd_over_every_parameter(models, tokenizer):
    method = TracInAllParameters(models, tokenizer, batch_size=4)
    expected, embeddings = 0.0, 0.0
    for model, lr in models:
        params = list(model.parameters())
        g_train = brute_gradients(model, tokenizer, TEXTS, LABELS, params)
        g_test = brute_gradients(model, tokenizer, TEST_TEXTS, TEST_LABELS, params)
        expected = expected + lr * (g_test @ g_train.T)
        rows = model.bert.embeddings.word_embeddings.weight.numel()  # the first parameter: 30522 x 16
        embeddings = embeddings + lr * (g_test[:, :rows] @ g_train[:, :rows].T)
    scores = method.scores(TEXTS, LABELS, TEST_TEXTS, TEST_LABELS)
    assert_close_scaled(scores, expected.numpy())
    with pytest.raises(AssertionError):  # leaving out one block (here the word embeddings) would fail the check above
        assert_close_scaled(scores, (expected - embeddings).numpy())
    np.testing.assert_allclose(method.self_influence(TEXTS[:3], LABELS[:3]),
                               np.diag(method.scores(TEXTS[:3], LABELS[:3], TEXTS[:3], LABELS[:3])), rtol=1e-9)


def test_tracin_all_params_refuses_a_large_model_in_one_line(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    big = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=192, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32, num_labels=2))
    with pytest.raises(TracInWEError) as exc:
        TracInAllParameters([(big, 0.1)], tokenizer)
    message = str(exc.value)
    assert "\n" not in message and "TracIn-all-params" in message and "5,000,000" in message
    assert f"{sum(p.numel() for p in big.parameters()):,}" in message
    with pytest.raises(TracInWEError, match="over the limit of 1,000"):
        TracInAllParameters([(tiny_bert(0, 2), 0.1)], tokenizer, max_parameters=1_000)


def all_parameters(model) -> list[torch.nn.Parameter]:
    return list(model.parameters())


@pytest.mark.parametrize("method_class, parameters", [(GradDot, last_layer), (TracInAllParameters, all_parameters)])
def test_positive_score_means_a_step_on_the_training_example_lowers_the_test_loss(models, tokenizer, method_class, parameters):
    """First order: one SGD step of size t on z moves the test loss by -t * grad(z').grad(z) = -t * score / lr."""
    lr = models[-1][1]
    method = method_class(models[-1:], tokenizer)  # one checkpoint: score = weight * g(z').g(z)
    weight = 1.0 if method_class is GradDot else lr
    scores = method.scores(TEXTS, LABELS, TEST_TEXTS[:1], TEST_LABELS[:1])[0] / weight
    model = copy.deepcopy(models[-1][0]).double()
    before = float(loss_of(model, tokenizer, TEST_TEXTS[0], TEST_LABELS[0]).detach())
    step = 1e-4 / float(np.abs(scores).max())
    changes = []
    for text, label in zip(TEXTS, LABELS):
        moved = copy.deepcopy(model)
        grads = torch.autograd.grad(loss_of(moved, tokenizer, text, label), parameters(moved))
        with torch.no_grad():
            for p, g in zip(parameters(moved), grads):
                p -= step * g
        changes.append(float(loss_of(moved, tokenizer, TEST_TEXTS[0], TEST_LABELS[0]).detach()) - before)
    changes = np.array(changes)
    assert (scores > 0).any() and (scores < 0).any()  # both proponents and opponents are checked
    np.testing.assert_allclose(changes, -step * scores, rtol=1e-2, atol=1e-4 * step * np.abs(scores).max())
    assert np.all(np.sign(changes) == -np.sign(scores))


def test_duplicate_of_the_test_point_scores_positive(models, tokenizer):
    train, labels = TEXTS + TEST_TEXTS[:1], LABELS + TEST_LABELS[:1]
    for method in (GradDot(models, tokenizer), TracInAllParameters(models, tokenizer)):
        scores = method.scores(train, labels, TEST_TEXTS[:1], TEST_LABELS[:1])[0]
        assert scores[-1] > 0, method.name
        assert scores[-1] == pytest.approx(method.self_influence(TEST_TEXTS[:1], TEST_LABELS[:1])[0], rel=1e-6)


def test_registry_builds_every_method_under_its_name(models, tokenizer):
    ctx = MethodContext(models, tokenizer, middle_layer="bert.encoder.layer.0")
    for name in METHODS:
        method = build_method(name, ctx)
        assert method.name == name
    grad_dot = build_method("Grad-Dot", ctx)
    assert isinstance(grad_dot, GradDot) and isinstance(grad_dot, CheckpointMethod)
    np.testing.assert_array_equal(grad_dot.scores(TEXTS, LABELS, TEST_TEXTS, TEST_LABELS),
                                  GradDot(models, tokenizer).scores(TEXTS, LABELS, TEST_TEXTS, TEST_LABELS))
    assert isinstance(build_method("TracIn-all-params", ctx), TracInAllParameters)


def test_the_template_checks_inputs_once_for_every_method(models, tokenizer):
    for method in (GradDot(models, tokenizer), TracInAllParameters(models, tokenizer)):
        with pytest.raises(TracInWEError, match="train_labels are required"):
            method.scores(TEXTS, None, TEST_TEXTS)
        with pytest.raises(TracInWEError, match=r"test_texts\[1\] is empty"):
            method.scores(TEXTS, LABELS, ["fine", " "])
        with pytest.raises(TracInWEError, match="sentence pairs"):
            method.scores(TEXTS, LABELS, TEST_TEXTS, TEST_LABELS, test_pairs=["a", "b"])
        predicted = method.predicted_labels(TEST_TEXTS)
        without = method.scores(TEXTS, LABELS, TEST_TEXTS)
        np.testing.assert_array_equal(without, method.scores(TEXTS, LABELS, TEST_TEXTS, predicted))
    with pytest.raises(TracInWEError, match="no checkpoints"):
        GradDot([], tokenizer)
    with pytest.raises(TracInWEError, match="learning rate"):
        TracInAllParameters([(models[0][0], 0)], tokenizer)
