"""`IndexManifest` reads and writes the on-disk JSON unchanged; the facade is rebuilt from the recorded settings."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import CaptureSettings, TracInWE
from tracinwe.data import load_dataset_source
from tracinwe.index import Index, IndexFormatError, IndexManifest
from tracinwe.index.integrity import read_manifest
from tracinwe.results import TopInfluences

TRAIN = TEXTS * 3
TRAIN_LABELS = [y % 2 for y in LABELS] * 3


@pytest.fixture(scope="module")
def tw(tokenizer):
    return TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03)], tokenizer=tokenizer, top_k=5, max_length=48,
                    keep_special_tokens=["[CLS]"])


@pytest.fixture(scope="module")
def built(tw, tmp_path_factory):
    path = tmp_path_factory.mktemp("manifest") / "index"
    Index.build(path, tw, TRAIN, TRAIN_LABELS, chunk_size=7, projection_dim=4, progress=False)
    return path


def test_manifest_json_round_trips_exactly(tw, built):
    raw = json.loads((built / "manifest.json").read_text())
    manifest = IndexManifest.from_json(raw)
    assert manifest.to_json() == raw  # the format on disk is unchanged by reading and writing it
    assert manifest == read_manifest(built) == Index.open(built, tracin=tw).manifest
    assert raw["format_version"] == 2 and raw["settings"]["max_length"] == 48
    assert manifest.settings.capture == replace(tw.settings, length_sorted=True)  # max_length travels with the settings
    assert manifest.settings.capture.keep_special_tokens == frozenset({"[CLS]"})
    assert [s.start for s in manifest.segments] == [0, 7, 14] and manifest.num_examples == len(TRAIN)
    assert manifest.plan().segments is None and manifest.plan().projection.files is None


def test_older_manifest_without_batch_size_still_opens(tw, built, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(built, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    del raw["settings"]["batch_size"]  # manifests written before the batch size was recorded
    (copy / "manifest.json").write_text(json.dumps(raw))
    index = Index.open(copy, tracin=tw)
    assert index.manifest.settings.capture.batch_size == 32
    np.testing.assert_allclose(index.scores(TEXTS[:2], [1, 0]), Index.open(built, tracin=tw).scores(TEXTS[:2], [1, 0]))


@pytest.mark.parametrize("change", [{"format_version": 1}, {"format_version": 3}, {"format": "other-index"}])
def test_other_formats_are_refused(tw, built, tmp_path, change):
    import shutil

    copy = tmp_path / "other"
    shutil.copytree(built, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises(IndexFormatError, match="not a tracinwe index of format version 2"):
        Index.open(copy, tracin=tw)


def test_from_settings_captures_as_the_original(tw, tokenizer):
    models = [(c.classifier, c.learning_rate) for c in tw.checkpoints]
    again = TracInWE.from_settings(tw.settings, models, tokenizer=tokenizer)
    assert again.settings == tw.settings and again.max_length == 48
    np.testing.assert_array_equal(again.scores(TRAIN, TRAIN_LABELS, TEXTS[:2], [1, 0]),
                                  tw.scores(TRAIN, TRAIN_LABELS, TEXTS[:2], [1, 0]))
    with pytest.raises(ValueError, match="max_length"):
        CaptureSettings(max_length=0)


def test_topk_without_special_tokens_and_projection_rescoring_equal_brute_force(tokenizer, tmp_path):
    """TracIn-WE-Topk with [CLS]/[SEP] dropped and a projected screen: exact top-k on real text.

    "." is a dense token that Top-k drops in some examples (zero rows); [CLS]/[SEP] must not be dense.
    """
    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(48, seed=2)
    tw = TracInWE([(tiny_bert(2, 2), 0.2), (tiny_bert(3, 2), 0.05)], tokenizer=tokenizer, top_k=4, max_length=48,
                  keep_special_tokens=False)
    queries = ["a warm , funny and moving film .", "dull , lifeless and far too long ."]
    brute = tw.scores(data.texts, data.labels, queries, [1, 0])
    index = Index.build_from_dataset(tmp_path / "i", tw, data, chunk_size=20, projection_dim=3, progress=False)
    assert [t.token for t in index.manifest.dense_tokens] == ["."]
    records = tw.capture(queries, [1, 0])
    ref = TopInfluences.from_scores(brute, 6)
    scale = np.abs(brute).max()
    for hits in (index.search(records, k=6, candidates=len(data)), index.search(records, k=6, use_projection=False)):
        np.testing.assert_allclose(hits.proponent_scores, ref.proponent_scores, rtol=1e-5, atol=1e-7 * scale)
        np.testing.assert_allclose(hits.opponent_scores, ref.opponent_scores, rtol=1e-5, atol=1e-7 * scale)
        rows = np.arange(len(queries))[:, None]
        np.testing.assert_allclose(brute[rows, hits.proponent_indices], hits.proponent_scores, rtol=1e-5, atol=1e-7 * scale)
    np.testing.assert_allclose(index.scores(queries, [1, 0]), brute, rtol=1e-5, atol=1e-7 * scale)
