"""Baselines: each equals its definition computed the slow way, and all share TracIn-WE's sign."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import TorchTextClassifier, TracInWEError
from tracinwe.evaluate.baselines import (
    GradCosLastLayer,
    InfluenceFunctionLastLayer,
    LossSelfInfluence,
    RandomInfluence,
    RepresenterPoints,
    TfIdfVariant,
    TracInLastLayer,
    TracInLayer,
    TracInWEMethod,
    find_final_linear,
    last_layer_records,
)
from tracinwe.evaluate.baselines.tfidf import tfidf_cosine
from tracinwe.models.small import TokenCNN

LRS = (0.1, 0.03)


def cnn_classifier(seed: int, tokenizer, num_classes: int = 2) -> TorchTextClassifier:
    torch.manual_seed(seed)
    model = TokenCNN(tokenizer.vocab_size, num_classes, dim=8, channels=6).eval()
    with torch.no_grad():
        model.embed.weight.normal_(0, 1.0)
    return TorchTextClassifier(model, model.embed, num_classes, hf_tokenizer=tokenizer,
                               forward=lambda b: model(b["input_ids"], b["attention_mask"]))


@pytest.fixture(scope="module")
def cnn_models(tokenizer):
    return [(cnn_classifier(s, tokenizer), lr) for s, lr in zip((1, 2), LRS)]


@pytest.fixture(scope="module")
def bert_models():
    return [(tiny_bert(s, num_labels=2), lr) for s, lr in zip((5, 6), LRS)]


def dense_last_layer_grads(clf, texts, labels) -> torch.Tensor:
    """Autograd of each example's loss w.r.t. the final linear layer's [weight | bias] (n, C*(D+1))."""
    layer = find_final_linear(clf.module, clf.num_classes)
    rows = []
    for text, label in zip(texts, labels):
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(clf.logits(clf.tokenize([text])), torch.tensor([label]))
            gw, gb = torch.autograd.grad(loss, [layer.weight, layer.bias])
        rows.append(torch.cat([gw, gb[:, None]], dim=1).flatten().double())
    return torch.stack(rows)


def test_tracin_last_equals_dense_autograd_on_weight_and_bias(cnn_models, tokenizer):
    method = TracInLastLayer(cnn_models, tokenizer)
    test_texts, test_labels = TEXTS[:2], [1, 1]
    expected = sum(lr * (dense_last_layer_grads(m, test_texts, test_labels) @ dense_last_layer_grads(m, TEXTS, LABELS).T)
                   for m, lr in cnn_models)
    np.testing.assert_allclose(method.scores(TEXTS, LABELS, test_texts, test_labels), expected.numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(method.self_influence(TEXTS, LABELS),
                               np.diag(method.scores(TEXTS, LABELS, TEXTS, LABELS)), rtol=1e-9)


def test_influence_function_equals_explicit_autograd_hessian(bert_models, tokenizer):
    models = bert_models
    damping = 0.05
    method = InfluenceFunctionLastLayer(models, tokenizer, damping=damping)
    clf = method.final
    train = last_layer_records(clf, TEXTS, LABELS)
    features = train.activations[:, :-1]
    c, d = train.logits.shape[1], features.shape[1]

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        wb = flat.reshape(c, d + 1)
        logits = features @ wb[:, :-1].T + wb[:, -1]
        return torch.nn.functional.cross_entropy(logits, torch.tensor(LABELS))

    layer = find_final_linear(clf.module, c)
    flat = torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], 1).double().flatten()
    hessian = torch.autograd.functional.hessian(mean_loss, flat) + damping * torch.eye(flat.numel(), dtype=torch.float64)
    g_train = dense_last_layer_grads(clf, TEXTS, LABELS)
    g_test = dense_last_layer_grads(clf, TEXTS[:3], [0, 1, 1])
    expected = g_test @ torch.linalg.inv(hessian) @ g_train.T
    np.testing.assert_allclose(method.scores(TEXTS, LABELS, TEXTS[:3], [0, 1, 1]), expected.numpy(), rtol=1e-6, atol=1e-12)


def test_representer_matches_hand_formula(cnn_models, tokenizer):
    method = RepresenterPoints(cnn_models, tokenizer, l2=0.5)
    clf = cnn_models[-1][0]
    model = clf.module
    scores = method.scores(TEXTS, LABELS, [TEXTS[0]], [1])[0]
    with torch.no_grad():
        batch = clf.tokenize([TEXTS[0]])
        a_test = torch.cat([model.features(batch["input_ids"], batch["attention_mask"])[0], torch.ones(1)]).double()
        for i, (text, label) in enumerate(zip(TEXTS, LABELS)):
            b = clf.tokenize([text])
            h = model.features(b["input_ids"], b["attention_mask"])[0]
            p = torch.softmax(model.classifier(h), 0).double()
            a = torch.cat([h, torch.ones(1)]).double()
            # alpha_j = -(1 / (2 lambda n)) dloss/df_j with j = 1, dloss/df_1 = p_1 - [label == 1]
            alpha = -(p[1] - float(label == 1)) / (2 * 0.5 * len(TEXTS))
            assert scores[i] == pytest.approx(float(alpha * (a @ a_test)), rel=1e-6)


def test_grad_cos_is_one_for_an_identical_example_and_bounded(cnn_models, tokenizer):
    scores = GradCosLastLayer(cnn_models, tokenizer).scores(TEXTS, LABELS, TEXTS, LABELS)
    np.testing.assert_allclose(np.diag(scores), 1.0, rtol=1e-9)
    assert np.all(np.abs(scores) <= 1.0 + 1e-9)


def test_tfidf_cosine_by_hand():
    train = [torch.tensor([1, 2, 2]), torch.tensor([2, 3])]
    test = [torch.tensor([1, 3])]
    idf = {1: np.log(3 / 2) + 1, 2: np.log(3 / 3) + 1, 3: np.log(3 / 2) + 1}
    v0 = np.array([idf[1], 2 * idf[2], 0.0])
    v1 = np.array([0.0, idf[2], idf[3]])
    t = np.array([idf[1], 0.0, idf[3]])
    expected = [v @ t / np.linalg.norm(v) / np.linalg.norm(t) for v in (v0, v1)]
    np.testing.assert_allclose(tfidf_cosine(train, test, vocab_size=5).numpy()[0], expected, rtol=1e-12)


def test_tracin_layer_on_classifier_equals_tracin_last(cnn_models, tokenizer):
    dense = TracInLayer("classifier", cnn_models, tokenizer, batch_size=4)
    np.testing.assert_allclose(dense.scores(TEXTS, LABELS, TEXTS[:2], [0, 1]),
                               TracInLastLayer(cnn_models, tokenizer).scores(TEXTS, LABELS, TEXTS[:2], [0, 1]),
                               rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(dense.self_influence(TEXTS, LABELS),
                               np.diag(dense.scores(TEXTS, LABELS, TEXTS, LABELS)), rtol=1e-9)


def test_tracin_layer_unknown_name_lists_blocks(cnn_models, tokenizer):
    with pytest.raises(TracInWEError, match="conv1"):
        TracInLayer("encoder.layer.7", cnn_models, tokenizer)


@pytest.mark.parametrize("family", ["cnn", "bert"])
def test_duplicate_of_test_point_scores_positive_for_every_method(family, cnn_models, bert_models, tokenizer):
    models = cnn_models if family == "cnn" else bert_models
    middle = "conv1" if family == "cnn" else "bert.encoder.layer.0"
    methods = [
        TracInWEMethod.from_models(models, tokenizer),
        TracInWEMethod.from_models(models, tokenizer, top_k=3),
        TracInLastLayer(models, tokenizer),
        RepresenterPoints(models, tokenizer),
        InfluenceFunctionLastLayer(models, tokenizer),
        GradCosLastLayer(models, tokenizer),
        TfIdfVariant(models, tokenizer),
        TracInLayer(middle, models, tokenizer),
    ]
    test_text, test_label = TEXTS[2], LABELS[2]
    train, labels = TEXTS + [test_text], LABELS + [test_label]
    for method in methods:
        scores = method.scores(train, labels, [test_text], [test_label])
        assert scores.shape == (1, len(train)), method.name
        assert scores[0, -1] > 0, f"{method.name}: the duplicate scores {scores[0, -1]}"
    names = [m.name for m in methods]
    assert names[:2] == ["TracIn-WE", "TracIn-WE-Top3"] and len(set(names)) == len(names)


def test_predicted_labels_used_when_test_labels_missing(cnn_models, tokenizer):
    method = TracInLastLayer(cnn_models, tokenizer)
    predicted = method.predicted_labels(TEXTS[:3])
    np.testing.assert_allclose(method.scores(TEXTS, LABELS, TEXTS[:3]), method.scores(TEXTS, LABELS, TEXTS[:3], predicted))


def test_random_and_loss_reference_points(cnn_models, tokenizer):
    r = RandomInfluence(seed=4)
    np.testing.assert_array_equal(r.scores(TEXTS, LABELS, TEXTS[:2]), RandomInfluence(seed=4).scores(TEXTS, LABELS, TEXTS[:2]))
    assert r.scores(TEXTS, LABELS, TEXTS[:2]).shape == (2, len(TEXTS))
    loss = LossSelfInfluence(cnn_models, tokenizer)
    clf = cnn_models[-1][0]
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(clf.logits(clf.tokenize(TEXTS)), torch.tensor(LABELS), reduction="none")
    np.testing.assert_allclose(loss.self_influence(TEXTS, LABELS), expected.numpy(), rtol=1e-5)
    with pytest.raises(TracInWEError, match="self_influence"):
        loss.scores(TEXTS, LABELS, TEXTS[:1])


def test_bad_checkpoint_list_is_one_line_error(tokenizer):
    with pytest.raises(TracInWEError, match="no checkpoints"):
        TracInLastLayer([], tokenizer)
    with pytest.raises(TracInWEError, match="learning rate"):
        TracInLastLayer([(tiny_bert(0, 2), -1.0)], tokenizer)
