"""End to end on real data: fine-tune, save checkpoints, score, and check the answers make sense."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracinwe import TracInWE
from tracinwe.data import load_dataset_source
from tracinwe.models.small import bert_small_config
from tracinwe.training import TrainConfig, train_classifier


@pytest.fixture(scope="module")
def spam_run(tmp_path_factory, tokenizer):
    """The paper's BERT-small shape trained from scratch on real SMS messages (3 checkpoints on disk)."""
    from transformers import BertForSequenceClassification

    data = load_dataset_source("bundled:sms-spam")
    train_pool, test_pool = data.split(test_fraction=0.2, seed=0)
    train = train_pool.sample(600, seed=0)
    test = test_pool.sample(60, seed=0)
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_small_config(num_labels=2, max_position_embeddings=64))
    folder = tmp_path_factory.mktemp("spam-run")
    config = TrainConfig(epochs=4, learning_rate=1e-3, batch_size=32, num_checkpoints=3, max_length=48, seed=0)
    run = train_classifier(model, tokenizer, train.texts, train.labels, folder, config, progress=False)
    return train, test, run


def test_spam_influence_is_meaningful(spam_run):
    train, test, run = spam_run
    tw = TracInWE.from_checkpoints(run.checkpoints, max_length=48, batch_size=64)
    assert tw.learning_rates == pytest.approx([1e-3] * 3)
    probs = tw.predict(test.texts)
    accuracy = (probs.argmax(1) == np.array(test.labels)).mean()
    assert accuracy > 0.85  # spam is easy; a model that learned nothing scores ~0.87 only by saying "ham"
    spam_test = [i for i, y in enumerate(test.labels) if y == 1 and probs[i, 1] > 0.5]
    assert len(spam_test) >= 3
    # A planted duplicate: put the first spam test message into the training set.
    planted = test.texts[spam_test[0]]
    train_texts, train_labels = train.texts + [planted], train.labels + [1]
    scores = tw.scores(train_texts, train_labels, [test.texts[i] for i in spam_test], [1] * len(spam_test))
    # The copy's score is exactly the test example's self-influence, and it ranks among the strongest proponents
    # (TracIn can rank a high-loss training example above an exact copy of a well-fit one).
    assert scores[0, -1] == pytest.approx(tw.self_influence([planted], [1])[0], rel=1e-6)
    assert int((scores[0] > scores[0, -1]).sum()) < len(train_texts) // 20
    # Normalised by self-influence (Cauchy-Schwarz over the checkpoint-weighted gradients), the copy is the
    # unique best match: cosine 1, every other training example below it.
    train_si = tw.self_influence(train_texts, train_labels)
    cosine = scores[0] / np.sqrt(train_si * train_si[-1])
    assert cosine[-1] == pytest.approx(1.0, rel=1e-5) and int(np.argmax(cosine)) == len(train_texts) - 1
    assert np.all(np.abs(cosine[:-1]) < 1.0 - 1e-4)
    # Proponents of a spam prediction are spam, and spam (13% of the training set) carries most of the
    # influence. (Opponents are not asserted: with [CLS]/[SEP] shared, nearly every score here is > 0 and
    # the few negative ones are tiny.)
    top = np.argsort(-scores, axis=1)[:, :10]
    labels = np.array(train_labels)
    assert labels[top].mean() > 0.8 and labels.mean() < 0.2
    spam_share = np.abs(scores[:, labels == 1]).sum(axis=1) / np.abs(scores).sum(axis=1)
    assert np.median(spam_share) > 0.5, spam_share
    # The word-level split of the strongest proponent adds up to its score.
    j = int(top[1, 0])
    words = tw.word_contributions(train_texts[j], train_labels[j], test.texts[spam_test[1]], 1)
    assert sum(c for _, c in words) == pytest.approx(scores[1, j], rel=1e-5)


@pytest.mark.slow
def test_minilm_fine_tuned_on_rotten_tomatoes(tmp_path, tokenizer, minilm_folder):
    """MiniLM-L6 fine-tuned on real reviews: proponents agree with the prediction, opponents oppose it."""
    from transformers import AutoModelForSequenceClassification, logging

    logging.set_verbosity_error()
    data = load_dataset_source("bundled:rotten-tomatoes")
    train_pool, test_pool = data.split(test_fraction=0.2, seed=1)
    train, test = train_pool.sample(240, seed=1), test_pool.sample(12, seed=1)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_folder, num_labels=2)
    config = TrainConfig(epochs=1, learning_rate=5e-5, batch_size=16, num_checkpoints=3, max_length=48, seed=1)
    run = train_classifier(model, tokenizer, train.texts, train.labels, tmp_path, config, progress=False)
    tw = TracInWE.from_checkpoints(run.checkpoints, max_length=48, top_k=10)
    preds = tw.predict(test.texts).argmax(1)
    scores = tw.scores(train.texts, train.labels, test.texts)  # explains the predictions
    labels = np.array(train.labels)
    agree_top = (labels[np.argsort(-scores, axis=1)[:, :5]] == preds[:, None]).mean()
    agree_bottom = (labels[np.argsort(scores, axis=1)[:, :5]] == preds[:, None]).mean()
    assert agree_top > 0.7 and agree_bottom < 0.4
