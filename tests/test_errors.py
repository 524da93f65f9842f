"""Bad input gets a one-line error that names the problem and the fix."""

from __future__ import annotations

import pytest

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import CheckpointError, InputTextError, LabelError, TokenizerMismatchError, TracInWE


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def tw(tokenizer):
    return TracInWE([(tiny_bert(0, num_labels=2), 0.1)], tokenizer=tokenizer)


def test_labels_outside_the_classes(tw):
    with pytest.raises(LabelError) as exc:
        tw.scores(TEXTS, [0, 1, 2, 0, 1, 0], TEXTS[:1], [0])
    assert "train_labels[2] = 2" in one_line(exc) and "2 classes" in one_line(exc)
    with pytest.raises(LabelError) as exc:
        tw.scores(TEXTS, LABELS, TEXTS[:1], [-1])
    assert "test_labels[0]" in one_line(exc)
    with pytest.raises(LabelError) as exc:
        tw.scores(TEXTS, LABELS[:3], TEXTS[:1], [0])
    assert "one label per text" in one_line(exc)
    with pytest.raises(LabelError) as exc:
        tw.scores(TEXTS, ["great"] * 6, TEXTS[:1], [0])
    assert "'great'" in one_line(exc)


def test_empty_and_non_text_rows(tw):
    with pytest.raises(InputTextError) as exc:
        tw.scores(TEXTS[:2] + ["   "], [0, 1, 0], TEXTS[:1], [0])
    assert "train_texts[2] is empty" in one_line(exc)
    with pytest.raises(InputTextError) as exc:
        tw.self_influence([TEXTS[0], None], [0, 1])
    assert "NoneType" in one_line(exc)
    with pytest.raises(InputTextError) as exc:
        tw.scores(TEXTS, LABELS, "a single string", [0])
    assert "single string" in one_line(exc)


def test_tokenizer_that_does_not_match_the_checkpoint(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    small_vocab = BertForSequenceClassification(
        BertConfig(vocab_size=1000, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    )
    with pytest.raises(TokenizerMismatchError) as exc:
        TracInWE([(small_vocab, 0.1)], tokenizer=tokenizer)
    assert "30522 tokens" in one_line(exc) and "1000 rows" in one_line(exc)


def test_missing_and_corrupt_checkpoints(tmp_path, tokenizer):
    with pytest.raises(CheckpointError) as exc:
        TracInWE.from_checkpoints([tmp_path / "nope"], learning_rates=[0.1])
    assert "does not exist" in one_line(exc)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError) as exc:
        TracInWE.from_checkpoints([empty], learning_rates=[0.1])
    assert "config.json" in one_line(exc)
    model = tiny_bert(0, num_labels=2)
    good = tmp_path / "good"
    model.save_pretrained(good)
    tokenizer.save_pretrained(good)
    with pytest.raises(CheckpointError) as exc:  # no learning rate recorded anywhere
        TracInWE.from_checkpoints([good])
    assert "learning_rates=" in one_line(exc)
    corrupt = tmp_path / "corrupt"
    model.save_pretrained(corrupt)
    tokenizer.save_pretrained(corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    tw = TracInWE.from_checkpoints([corrupt], learning_rates=[0.1])
    with pytest.raises(CheckpointError) as exc:
        tw.scores(TEXTS, LABELS, TEXTS[:1], [0])
    assert "corrupt" in one_line(exc) and "could not be loaded" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        TracInWE([(model, 0.0)], tokenizer=tokenizer)
    assert "positive" in one_line(exc)


def test_checkpoints_of_different_runs(tokenizer):
    with pytest.raises(CheckpointError) as exc:
        TracInWE([(tiny_bert(0, num_labels=2), 0.1), (tiny_bert(0, num_labels=3), 0.1)], tokenizer=tokenizer)
    assert "disagree" in one_line(exc)
