"""The cancellation diagnostic: hand-made ratios, a brute-force dense loop, the CLI on real data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import TorchTextClassifier
from tracinwe.evaluate.cancellation import (
    WORD_EMBEDDINGS,
    CancellationAccumulator,
    cancellation_ratio,
    default_group_by,
    layer_cancellation,
)
from tracinwe.models.small import TokenCNN


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small models run fastest on one thread, and far faster on a busy machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ratio_of(rows) -> float:
    return _accumulated(rows).ratio


def _accumulated(rows) -> CancellationAccumulator:
    acc = CancellationAccumulator(len(rows[0]))
    acc.add(torch.tensor(rows, dtype=torch.float64))
    return acc


def test_hand_made_ratios():
    assert _ratio_of([[1.0, 2.0], [-1.0, -2.0]]) == math.inf  # exact cancellation
    assert _ratio_of([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]) == pytest.approx(1.0)  # aligned
    assert _ratio_of([[3.0, 4.0], [0.0, -4.0]]) == pytest.approx(9.0 / 3.0)  # (5 + 4) / ||(3, 0)||
    assert _ratio_of(np.eye(16).tolist()) == pytest.approx(4.0)  # orthogonal, equal norms: sqrt(n)
    assert math.isnan(cancellation_ratio(0.0, 0.0))
    acc = CancellationAccumulator(2)  # adding one at a time equals adding a batch
    for row in ([3.0, 4.0], [0.0, -4.0]):
        acc.add(torch.tensor(row))
    assert acc.ratio == pytest.approx(3.0) and acc.count == 2


def test_mean_pairwise_cosine_tells_opposition_from_orthogonality():
    assert _accumulated([[1.0, 2.0], [-1.0, -2.0]]).mean_pairwise_cosine == pytest.approx(-1.0)
    assert _accumulated([[1.0, 2.0], [2.0, 4.0]]).mean_pairwise_cosine == pytest.approx(1.0)
    assert _accumulated(np.eye(5).tolist()).mean_pairwise_cosine == pytest.approx(0.0)  # C = sqrt(5), yet nothing opposes
    rows = np.random.default_rng(0).normal(size=(6, 4))
    norms = np.linalg.norm(rows, axis=1)
    pairs = [(rows[i] @ rows[j], norms[i] * norms[j]) for i in range(6) for j in range(6) if i != j]
    expected = sum(p for p, _ in pairs) / sum(w for _, w in pairs)
    assert _accumulated(rows.tolist()).mean_pairwise_cosine == pytest.approx(expected)


def _brute_force(module: torch.nn.Module, batches, labels, word_name: str, group_by) -> dict[str, float]:
    """Dense per-example gradients of every parameter (word embedding weight included), one backward each."""
    per_group: dict[str, list[np.ndarray]] = {}
    module.eval()
    for batch, label in zip(batches, labels):
        module.zero_grad(set_to_none=True)
        logits = module(**batch).logits if hasattr(module, "config") else module(**batch)
        torch.nn.functional.cross_entropy(logits, torch.tensor([label])).backward()
        flat: dict[str, list[np.ndarray]] = {}
        for name, p in module.named_parameters():
            key = WORD_EMBEDDINGS if name == word_name else group_by(name)
            flat.setdefault(key, []).append(p.grad.detach().double().reshape(-1).numpy())
        for key, parts in flat.items():
            per_group.setdefault(key, []).append(np.concatenate(parts))
    module.zero_grad(set_to_none=True)
    return {k: float(np.linalg.norm(np.stack(g), axis=1).sum() / np.linalg.norm(np.stack(g).sum(0)))
            for k, g in per_group.items()}


def test_tiny_bert_matches_dense_brute_force(tokenizer):
    model = tiny_bert(1, num_labels=2)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    report = layer_cancellation(model, TEXTS, LABELS, tokenizer=tokenizer, batch_size=4)
    names = [layer.name for layer in report.layers]
    assert names == [WORD_EMBEDDINGS, "embeddings (rest)", "layer.0", "layer.1", "pooler", "classifier"]
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags and not model.training
    batches = [dict(tokenizer([t], return_tensors="pt")) for t in TEXTS]
    expected = _brute_force(model, batches, LABELS, "bert.embeddings.word_embeddings.weight", default_group_by(model))
    expected["embeddings (rest)"] = expected.pop("embeddings")
    for layer in report.layers:
        assert layer.ratio == pytest.approx(expected[layer.name], rel=1e-5), layer.name
        assert layer.ratio >= 1.0 and -1.0 <= layer.mean_pairwise_cosine <= 1.0
    assert report.ratio("classifier") == report.layers[-1].ratio
    assert sum(layer.num_parameters for layer in report.layers) == sum(p.numel() for p in model.parameters())


def test_token_cnn_padding_does_not_change_the_ratios(tokenizer):
    torch.manual_seed(0)
    cnn = TokenCNN(tokenizer.vocab_size, num_classes=2, dim=8, channels=8)
    clf = TorchTextClassifier(cnn, cnn.embed, 2, hf_tokenizer=tokenizer,
                              forward=lambda b: cnn(b["input_ids"], b["attention_mask"]))
    report = layer_cancellation(clf, TEXTS, LABELS, batch_size=3)  # batched: texts are padded together
    assert [layer.name for layer in report.layers] == [WORD_EMBEDDINGS, "conv1", "conv2", "classifier"]
    batches = [{"input_ids": tokenizer([t], return_tensors="pt")["input_ids"]} for t in TEXTS]
    expected = _brute_force(cnn, batches, LABELS, "embed.weight", default_group_by(cnn))
    for layer in report.layers:
        assert layer.ratio == pytest.approx(expected[layer.name], rel=1e-5), layer.name


def test_report_files_and_json(tmp_path, tokenizer):
    report = layer_cancellation(tiny_bert(2, 2), TEXTS, LABELS, tokenizer=tokenizer)
    json_path, png_path = report.save(tmp_path, "tiny")
    data = json.loads(json_path.read_text())
    assert data["num_examples"] == len(TEXTS) and [layer["name"] for layer in data["layers"]][0] == WORD_EMBEDDINGS
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_on_real_data(tmp_path, tokenizer):
    from typer.testing import CliRunner

    from tracinwe.cli.app import app

    model_dir = tmp_path / "tiny"
    tiny_bert(3, num_labels=2).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["cancellation", "--model", str(model_dir), "--data", "bundled:sms-spam", "--n", "24", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "cancellation.json").read_text())
    assert data["num_examples"] == 24 and data["settings"]["data"] == "bundled:sms-spam"
    assert all(float(layer["ratio"]) >= 1.0 for layer in data["layers"])
    assert (out / "cancellation.png").is_file() and "word embeddings" in result.output
    as_json = CliRunner().invoke(app, ["cancellation", "--model", str(model_dir), "--data", "bundled:sms-spam", "--n", "24",
                                       "--out", str(tmp_path / "again"), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == json.loads((tmp_path / "again" / "cancellation.json").read_text())

    bad = CliRunner().invoke(app, ["cancellation", "--model", str(model_dir), "--data", "bundled:bbc-news", "--n", "8",
                                   "--out", str(out)])
    assert bad.exit_code != 0 and "5 classes" in bad.output
