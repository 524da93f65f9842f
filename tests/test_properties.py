"""Behaviour of TracIn-WE that follows from its definition."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import LABELS, TEXTS, minilm_classifier, tiny_bert
from tracinwe import TracInWE


@pytest.fixture(scope="module")
def tw(tokenizer, minilm_folder):
    models = [minilm_classifier(minilm_folder, seed) for seed in (3, 4)]
    return TracInWE([(models[0], 0.1), (models[1], 0.05)], tokenizer=tokenizer, batch_size=4)


def test_duplicate_is_top_proponent_and_flipped_copy_top_opponent(tw):
    test_text, test_label = TEXTS[2], LABELS[2]
    train = TEXTS + [test_text]
    labels = LABELS + [1 - test_label]
    train[2] = test_text  # exact copy with the same label at index 2, flipped copy at the end
    scores = tw.scores(train, labels, [test_text], [test_label])[0]
    assert int(np.argmax(scores)) == 2 and scores[2] > 0
    assert int(np.argmin(scores)) == len(train) - 1 and scores[-1] < 0
    idx, vals = tw.influence(train, labels, [test_text], [test_label], k=1, proponents=False)
    assert idx[0, 0] == len(train) - 1 and vals[0, 0] == pytest.approx(scores[-1])


def test_self_influence_is_the_diagonal(tw):
    s = tw.scores(TEXTS, LABELS, TEXTS, LABELS)
    np.testing.assert_allclose(tw.self_influence(TEXTS, LABELS), np.diag(s), rtol=1e-6)
    np.testing.assert_allclose(s, s.T, rtol=1e-5, atol=1e-12)  # same labels both sides: symmetric


def test_word_contributions_sum_to_score(tw, tokenizer):
    s = tw.scores(TEXTS[:2], LABELS[:2], TEXTS[4:], LABELS[4:])
    for i, test_text in enumerate(TEXTS[4:]):
        for j, train_text in enumerate(TEXTS[:2]):
            words = tw.word_contributions(train_text, LABELS[j], test_text, LABELS[4 + i])
            assert sum(c for _, c in words) == pytest.approx(s[i, j], rel=1e-6)
            tokens = {w.token for w in words}
            assert {"[CLS]", "[SEP]"} <= tokens  # special tokens are kept by default
            shared = set(tokenizer.tokenize(train_text)) & set(tokenizer.tokenize(test_text))
            assert tokens - {"[CLS]", "[SEP]"} == shared
            for w in words:  # positions point at the token in both texts
                train_ids = tokenizer(train_text)["input_ids"]
                assert all(train_ids[p] == w.token_id for p in w.train_positions) and w.test_positions


def test_top_k_at_least_length_equals_full(tokenizer, tw):
    full = tw.scores(TEXTS, LABELS, TEXTS[:2], LABELS[:2])
    models = [(c.classifier, c.learning_rate) for c in tw.checkpoints]
    topk = TracInWE(models, top_k=64, batch_size=4).scores(TEXTS, LABELS, TEXTS[:2], LABELS[:2])
    np.testing.assert_allclose(topk, full, rtol=1e-6)
    top3 = TracInWE(models, top_k=3, batch_size=4)
    records = top3.capture(TEXTS, LABELS)
    for rec in records:  # at most 3 distinct tokens kept per example
        assert int((rec.offsets[1:] - rec.offsets[:-1]).max()) <= 3
    # top-k converges to the full score as k grows
    errors = [np.abs(TracInWE(models, top_k=k).scores(TEXTS, LABELS, TEXTS[:2], LABELS[:2]) - full).sum() for k in (1, 4, 16)]
    assert errors[0] >= errors[1] >= errors[2] and errors[2] < errors[0]


def test_dropping_special_tokens(tw):
    models = [(c.classifier, c.learning_rate) for c in tw.checkpoints]
    no_special = TracInWE(models, keep_special_tokens=False)
    only_cls = TracInWE(models, keep_special_tokens=["[CLS]"])
    words = no_special.word_contributions(TEXTS[0], 1, TEXTS[2], 1)
    assert not {"[CLS]", "[SEP]"} & {w.token for w in words}
    words = only_cls.word_contributions(TEXTS[0], 1, TEXTS[3], 0)
    assert {w.token for w in words} == {"[CLS]", ",", "."}


def test_predicted_label_is_default_for_test_side(tw):
    pred = tw.predict(TEXTS).argmax(1).tolist()
    np.testing.assert_allclose(tw.scores(TEXTS, LABELS, TEXTS), tw.scores(TEXTS, LABELS, TEXTS, pred), rtol=1e-12)


def test_sentence_pairs(tokenizer, tw):
    models = [(c.classifier, c.learning_rate) for c in tw.checkpoints]
    tw2 = TracInWE(models)
    premises, hypotheses = TEXTS[:3], TEXTS[3:]
    s = tw2.scores(premises, [0, 1, 0], premises, [0, 1, 0], train_pairs=hypotheses, test_pairs=hypotheses)
    single = tw2.scores(premises, [0, 1, 0], premises, [0, 1, 0])
    assert s.shape == (3, 3) and not np.allclose(s, single)
    words = tw2.word_contributions(premises[0], 0, premises[0], 0, train_pair=hypotheses[0], test_pair=hypotheses[0])
    assert sum(c for _, c in words) == pytest.approx(s[0, 0], rel=1e-6)


def test_model_comes_back_unchanged(tokenizer):
    model = tiny_bert(5, num_labels=2)
    model.train()
    model.classifier.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    TracInWE([(model, 1.0)], tokenizer=tokenizer).scores(TEXTS, LABELS, TEXTS[:1])
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model.bert.embeddings.word_embeddings._forward_hooks


def test_checkpoint_folders_and_trainer_learning_rates(tmp_path, tokenizer, tw):
    models = [c.classifier.module for c in tw.checkpoints]
    paths = []
    for step, model in enumerate(models[:2], start=1):
        folder = tmp_path / "run" / f"checkpoint-{step * 100}"
        model.save_pretrained(folder)
        log = [{"step": s, "learning_rate": 0.1 if s <= 100 else 0.05, "loss": 1.0} for s in (50, 100, 150, 200)]
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step * 100, "log_history": log}))
        paths.append(folder)
    tokenizer.save_pretrained(tmp_path / "run")  # the Trainer keeps the tokenizer in the run folder
    from_disk = TracInWE.from_checkpoints(paths)
    assert from_disk.learning_rates == [0.1, 0.05]
    np.testing.assert_allclose(
        from_disk.scores(TEXTS, LABELS, TEXTS[:2], LABELS[:2]), tw.scores(TEXTS, LABELS, TEXTS[:2], LABELS[:2]), rtol=1e-5
    )
