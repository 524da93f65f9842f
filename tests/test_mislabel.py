"""Mislabel detection: the flips, hand-checked ranking metrics, and an end-to-end run on real data."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from tracinwe.data import TextDataset
from tracinwe.errors import TracInWEError
from tracinwe.evaluate.mislabel import (
    average_ranks,
    confidence_relation,
    detection_auc,
    flip_labels,
    share_found,
    spearman,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small models run fastest on one thread, and far faster on a busy machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dataset(n: int, classes: int) -> TextDataset:
    return TextDataset([f"text {i}" for i in range(n)], [i % classes for i in range(n)], [f"c{k}" for k in range(classes)],
                       extra={"confidence": [float(i) for i in range(n)]})


def test_flip_labels_changes_exactly_the_chosen_share():
    data = _dataset(200, 3)
    flipped = flip_labels(data, 0.1, seed=4)
    new, old = np.asarray(flipped.dataset.labels), np.asarray(data.labels)
    assert flipped.flipped.sum() == 20
    assert np.all(new[flipped.flipped] != old[flipped.flipped]) and np.all(new[~flipped.flipped] == old[~flipped.flipped])
    assert set(new[flipped.flipped]) == {0, 1, 2}  # flips reach every other class
    assert np.array_equal(flipped.original_labels, old) and data.labels == old.tolist()  # the input is untouched
    again = flip_labels(data, 0.1, seed=4)
    assert np.array_equal(again.flipped, flipped.flipped) and again.dataset.labels == flipped.dataset.labels
    assert not np.array_equal(flip_labels(data, 0.1, seed=5).flipped, flipped.flipped)
    assert flipped.dataset.extra["confidence"] == data.extra["confidence"]
    with pytest.raises(TracInWEError, match="flip fraction"):
        flip_labels(data, 1.5)


def test_average_ranks_and_auc_by_hand():
    np.testing.assert_array_equal(average_ranks([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
    # Pairs (positive, negative): 0.35 > 0.1, 0.35 < 0.4, 0.8 > both -> 3 of 4.
    assert detection_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    # A tie counts half: positive 1 vs negatives 1 (tie) and 2 (loss) -> 0.5 / 2.
    assert detection_auc([1.0, 1.0, 2.0], [True, False, False]) == pytest.approx(0.25)
    assert detection_auc([5, 4, 1, 0], [True, True, False, False]) == 1.0
    rng = np.random.default_rng(0)  # against the definition, pair by pair, with many ties
    scores, pos = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.3
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(scores[pos], scores[~pos])]
    assert detection_auc(scores, pos) == pytest.approx(np.mean(pairs))
    with pytest.raises(TracInWEError):
        detection_auc([1.0, 2.0], [False, False])


def test_share_found_by_hand():
    scores = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    flipped = [True, False, False, True, False, False, False, False, False, True]
    assert share_found(scores, flipped, 0.1) == pytest.approx(1 / 3)  # top 1: index 0
    assert share_found(scores, flipped, 0.2) == pytest.approx(1 / 3)
    assert share_found(scores, flipped, 0.4) == pytest.approx(2 / 3)  # top 4 holds indices 0 and 3
    assert share_found(scores, flipped, 1.0) == 1.0


def test_spearman_and_confidence_relation_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks a = (1, 2, 3), b = (1, 3, 2): centred (-1, 0, 1) . (-1, 1, 0) = 1, norms sqrt(2) * sqrt(2) -> 0.5
    assert spearman([1, 2, 3], [1, 9, 5]) == pytest.approx(0.5)
    scores = np.arange(20, dtype=float)  # highest self-influence = lowest confidence
    conf = np.r_[np.linspace(1.0, 0.5, 20)]
    conf[3] = np.nan  # skipped
    rel = confidence_relation("m", scores, conf)
    assert rel.n == 19 and rel.spearman == pytest.approx(-1.0)
    assert rel.mean_confidence_top_decile == pytest.approx(np.mean(conf[[18, 19]]))
    assert rel.mean_confidence_rest == pytest.approx(np.nanmean(conf[:18]))


def test_end_to_end_on_real_data_flipped_labels_rank_high(tmp_path):
    """SMS spam, 10% flipped with a fixed seed: an easy, planted case where self-influence must beat chance."""
    from typer.testing import CliRunner

    from tracinwe.cli.app import app

    out = tmp_path / "mislabel.json"
    result = CliRunner().invoke(app, [
        "mislabel-eval", "--data", "bundled:sms-spam", "--flip", "0.1", "--seed", "0", "--n", "300", "--heldout", "60",
        "--methods", "TracIn-WE,TracIn-WE-Top10,TracIn-last,loss,random", "--epochs", "3", "--device", "cpu", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["setup"]["flip_fraction"] == 0.1 and report["setup"]["model"]["architecture"] == "cnn"
    assert report["training"]["n_train"] == 300 and report["training"]["n_flipped"] == 30
    auc = {d["method"]: d["auc"] for d in report["detection"]}
    assert set(auc) == {"TracIn-WE", "TracIn-WE-Top10", "TracIn-last", "loss", "random"}
    assert auc["TracIn-WE"] > 0.6 and auc["TracIn-WE-Top10"] > 0.6 and auc["loss"] > 0.6
    found = {d["method"]: d["found"] for d in report["detection"]}
    assert found["TracIn-WE"]["top 20%"] > 0.2  # more than the 20% a random ranking finds on average
    assert "TracIn-WE" in result.output

    bad = CliRunner().invoke(app, ["mislabel-eval", "--data", "bundled:sms-spam", "--flip", "0", "--n", "50", "--out", str(out)])
    assert bad.exit_code != 0 and "no confidence column" in bad.output


@pytest.mark.slow
def test_confidence_relation_end_to_end_on_twitter():
    """Twitter's crowd-labelled tweets, no flips: the relation to the annotators' confidence is reported."""
    from tracinwe.evaluate.mislabel import MislabelSetup, run_mislabel_detection
    from tracinwe.training.small import SmallModelConfig

    setup = MislabelSetup("bundled:twitter-sentiment", n=200, flip_fraction=0.0, n_heldout=40,
                          methods=("TracIn-WE", "loss"), model=SmallModelConfig(epochs=2, device="cpu"))
    report = run_mislabel_detection(setup, progress=False)
    assert report.detection == [] and [c.method for c in report.confidence] == ["TracIn-WE", "loss"]
    for rel in report.confidence:
        assert rel.n == 200 and -1.0 <= rel.spearman <= 1.0 and 0.0 < rel.mean_confidence_rest <= 1.0
