"""Records aggregated without waiting for the device equal the waiting aggregation; bfloat16 capture is close and named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_bert
from tracinwe import TracInWE
from tracinwe.capture.aggregate import (
    aggregate_by_token,
    assemble_in_input_order,
    deferred_aggregate,
    held_positions,
    in_input_order,
    sum_in_input_order,
)
from tracinwe.capture.gradients import CaptureSettings, batch_token_gradients, prepared_for_capture
from tracinwe.index.manifest import IndexSettings
from tracinwe.models.huggingface import HuggingFaceClassifier

TEXTS = ["the film was good , the film was good", "a dull , dull and boring plot", "good", "boring boring boring !"]


def assert_same_records(got, want) -> None:
    for name in ("offsets", "token_ids", "rows", "labels", "logits"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deferred_aggregation_equals_the_waiting_one_bit_for_bit(seed):
    generator = torch.Generator().manual_seed(seed)
    n, t, d, vocab = 5, 9, 4, 7  # few token ids: many repeats within an example
    ids = torch.randint(0, vocab, (n, t), generator=generator)
    grad = torch.randn(n, t, d, generator=generator)
    kept = torch.rand(n, t, generator=generator) > 0.3
    kept[2] = False  # an example with no kept position: empty records
    labels, logits = torch.randint(0, 3, (n,), generator=generator), torch.randn(n, 3, generator=generator)
    want = aggregate_by_token(ids, grad, kept, vocab, labels, logits)
    got = assemble_in_input_order([(np.arange(n), deferred_aggregate(ids, grad, kept, vocab, labels, logits))])
    assert_same_records(got, want)
    assert int(got.offsets[3] - got.offsets[2]) == 0
    # hand check of one example: its rows are the sums of its kept positions per token id
    for i in range(n):
        token_ids, rows = got.example(i)
        for w, row in zip(token_ids.tolist(), rows):
            where = (ids[i] == w) & kept[i]
            torch.testing.assert_close(row, grad[i][where].sum(0), rtol=1e-5, atol=1e-6 * float(grad.abs().max()))


def test_a_chunk_of_deferred_batches_comes_back_in_input_order_as_the_waiting_one():
    generator = torch.Generator().manual_seed(3)
    vocab, d = 11, 3
    order = torch.randperm(10, generator=generator).numpy()  # batches of 4, 4, 2 examples, of 6, 3 and 5 positions
    waiting, deferred = [], []
    for rows, t in ((order[:4], 6), (order[4:8], 3), (order[8:], 5)):
        ids = torch.randint(0, vocab, (rows.size, t), generator=generator)
        grad = torch.randn(rows.size, t, d, generator=generator)
        kept = torch.rand(rows.size, t, generator=generator) > 0.2
        labels, logits = torch.randint(0, 2, (rows.size,), generator=generator), torch.randn(rows.size, 2, generator=generator)
        waiting.append((rows, aggregate_by_token(ids, grad, kept, vocab, labels, logits)))
        deferred.append((rows, deferred_aggregate(ids, grad, kept, vocab, labels, logits)))
    assert_same_records(assemble_in_input_order(deferred), in_input_order(waiting))


@pytest.mark.parametrize("kept_share", [0.8, 0.2], ids=["every-position-held", "kept-positions-gathered"])
def test_a_chunk_summed_at_once_equals_the_batches_summed_one_by_one_bit_for_bit(kept_share):
    """The CPU path: each batch's rows held unsummed, the chunk summed once in input order (dropped positions and an
    example with nothing kept included; a low kept share, as with Top-k, keeps the kept rows alone)."""
    generator = torch.Generator().manual_seed(4)
    vocab, d = 7, 5  # few token ids: many repeats within an example
    order = torch.randperm(11, generator=generator).numpy()
    waiting, held = [], []
    for rows, t in ((order[:4], 8), (order[4:9], 3), (order[9:], 6)):
        ids = torch.randint(0, vocab, (rows.size, t), generator=generator)
        grad = torch.randn(rows.size, t, d, generator=generator).transpose(1, 2).contiguous().transpose(1, 2)  # as a CNN's
        kept = torch.rand(rows.size, t, generator=generator) < kept_share
        kept[0] = False
        labels, logits = torch.randint(0, 2, (rows.size,), generator=generator), torch.randn(rows.size, 2, generator=generator)
        waiting.append((rows, aggregate_by_token(ids, grad, kept, vocab, labels, logits)))
        held.append((rows, held_positions(ids, grad, kept, vocab, labels, logits)))
    got = sum_in_input_order(held, vocab)
    assert_same_records(got, in_input_order(waiting))
    assert int(got.offsets[order[0] + 1] - got.offsets[order[0]]) == 0


def test_a_deferred_batch_equals_a_waiting_batch_of_a_real_model(tokenizer):
    clf = HuggingFaceClassifier(tiny_bert(0, 2), tokenizer, max_length=32)
    settings = CaptureSettings(max_length=32)
    batch = clf.tokenize(TEXTS)
    with prepared_for_capture(clf.module, None), torch.inference_mode(False):
        want = batch_token_gradients(clf, batch, torch.tensor([1, 0, 1, 0]), settings)
        deferred = batch_token_gradients(clf, batch, torch.tensor([1, 0, 1, 0]), settings, deferred=True)
    got = assemble_in_input_order([(np.arange(len(TEXTS)), deferred)])
    assert_same_records(got, want)


def test_bfloat16_capture_is_close_to_float32_and_named_in_the_identity(tokenizer):
    models = [(tiny_bert(s, 2), lr) for s, lr in ((0, 0.1), (1, 0.05))]
    exact = TracInWE(models, tokenizer=tokenizer, max_length=32).scores(TEXTS, [1, 0, 1, 0], TEXTS[:2], [1, 0])
    bf16 = TracInWE(models, tokenizer=tokenizer, max_length=32, precision="bfloat16")
    fast = bf16.scores(TEXTS, [1, 0, 1, 0], TEXTS[:2], [1, 0])
    assert not np.array_equal(fast, exact)  # the autocast ran
    np.testing.assert_allclose(fast, exact, rtol=0, atol=0.05 * np.abs(exact).max())
    assert np.array_equal(np.sign(fast[np.abs(exact) > 0.1 * np.abs(exact).max()]),
                          np.sign(exact[np.abs(exact) > 0.1 * np.abs(exact).max()]))
    assert "precision" not in CaptureSettings().identity()  # earlier artefacts keep their identity
    assert bf16.settings.identity()["precision"] == "bfloat16"
    assert IndexSettings.from_json({"precision": "bfloat16"}).capture.precision == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        CaptureSettings(precision="float16")
