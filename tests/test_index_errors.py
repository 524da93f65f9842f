"""A damaged index names the damaged file; a different model, tokenizer or settings is refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import TracInWE
from tracinwe.errors import CheckpointError, TracInWEError
from tracinwe.index import Index, IndexBuildError, IndexFormatError, IndexMismatchError

TRAIN = TEXTS * 3
TRAIN_LABELS = [y % 2 for y in LABELS] * 3
IDS = [f"ex{i}" for i in range(len(TRAIN))]


def make_tw(tokenizer, seeds=(0, 1), top_k=10):
    return TracInWE([(tiny_bert(s, 2), lr) for s, lr in zip(seeds, (0.1, 0.03))], tokenizer=tokenizer, top_k=top_k, max_length=64)


@pytest.fixture(scope="module")
def built(tokenizer, tmp_path_factory):
    tw = make_tw(tokenizer)
    path = tmp_path_factory.mktemp("errors") / "index"
    Index.build(path, tw, TRAIN, TRAIN_LABELS, ids=IDS, chunk_size=8, progress=False)
    return tw, path


@pytest.fixture()
def copy(built, tmp_path):
    tw, path = built
    target = tmp_path / "copy"
    shutil.copytree(path, target)
    return tw, target


def test_errors_are_one_line_tracinwe_errors():
    for cls in (IndexBuildError, IndexFormatError, IndexMismatchError):
        assert issubclass(cls, TracInWEError)


def test_truncated_file_is_named(copy):
    tw, path = copy
    rows = path / "segments" / "seg-000001" / "rows.npy"
    data = rows.read_bytes()
    rows.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match=r"seg-000001/rows\.npy.*truncated"):
        Index.open(path, tracin=tw)


def test_truncated_rows_unchecked_fail_on_search_with_the_file_named(copy):
    """With the checks skipped, the memory map of a file shorter than its header says is refused when a search maps it."""
    tw, path = copy
    rows = path / "segments" / "seg-000001" / "rows.npy"
    data = rows.read_bytes()
    rows.write_bytes(data[: len(data) // 2])
    index = Index.open(path, tracin=tw, verify="none")
    with pytest.raises(IndexFormatError, match=r"seg-000001/rows\.npy.*cannot be read.*rebuild the index"):
        index.search(TEXTS[:2], k=2)


@pytest.mark.parametrize("name", ["tokens.npy", "rows.npy", "examples.parquet"])
def test_corrupted_file_is_named(copy, name):
    tw, path = copy
    target = path / "segments" / "seg-000000" / name
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=rf"seg-000000/{name.replace('.', '[.]')}.*corrupted"):
        Index.open(path, tracin=tw)
    Index.open(path, tracin=tw, verify="none")  # the checks can be skipped


def test_damaged_projection_basis_is_named(built, tmp_path):
    tw, _ = built
    path = tmp_path / "projected"
    Index.build(path, tw, TRAIN, TRAIN_LABELS, ids=IDS, chunk_size=8, projection_dim=4, progress=False)
    basis = path / "projection" / "rows.npy"
    data = bytearray(basis.read_bytes())
    data[-1] ^= 0xFF
    basis.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"projection/rows\.npy.*corrupted"):
        Index.open(path, tracin=tw)
    basis.unlink()
    with pytest.raises(IndexFormatError, match=r"projection/rows\.npy.*missing"):
        Index.open(path, tracin=tw)


def test_bad_projection_settings_are_refused(built, tmp_path):
    tw, _ = built
    with pytest.raises(IndexBuildError, match="projection method 'svd'"):
        Index.build(tmp_path / "x", tw, TRAIN, TRAIN_LABELS, projection_dim=4, projection_method="svd", progress=False)


def test_missing_or_damaged_manifest(copy):
    tw, path = copy
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="manifest.*corrupted"):
        Index.open(path, tracin=tw)
    (path / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="manifest.*missing"):
        Index.open(path, tracin=tw)
    with pytest.raises(IndexFormatError, match="no index"):
        Index.open(path / "nowhere", tracin=tw)


def test_other_model_tokenizer_or_settings_are_refused(built, tokenizer, minilm_folder):
    tw, path = built
    with pytest.raises(IndexMismatchError, match="checkpoint 1 has different weights"):
        Index.open(path, tracin=make_tw(tokenizer, seeds=(0, 7)))
    with pytest.raises(IndexMismatchError, match="capture settings"):
        Index.open(path, tracin=make_tw(tokenizer, top_k=None))
    with pytest.raises(IndexMismatchError, match="built with 2"):
        Index.open(path, tracin=TracInWE([(tiny_bert(0, 2), 0.1)], tokenizer=tokenizer, top_k=10, max_length=64))
    # same size, one vocabulary entry changed
    from transformers import BertTokenizerFast

    vocab = (minilm_folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab[1] = "zzzzzz"
    other = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    assert len(other) == len(tokenizer)
    with pytest.raises(IndexMismatchError, match="tokenizer differs"):
        Index.open(path, tracin=make_tw(other))


def test_in_memory_models_need_tracin(built):
    _, path = built
    with pytest.raises(CheckpointError, match="in-memory models.*tracin="):
        Index.open(path)


def test_build_refuses_existing_index_and_changed_inputs(built, tmp_path):
    tw, path = built
    with pytest.raises(IndexBuildError, match="already holds an index"):
        Index.build(path, tw, TRAIN, TRAIN_LABELS, progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(IndexBuildError, match="not empty"):
        Index.build(tmp_path / "junk", tw, TRAIN, TRAIN_LABELS, progress=False)
    with pytest.raises(IndexBuildError, match="dtype"):
        Index.build(tmp_path / "a", tw, TRAIN, TRAIN_LABELS, dtype="int8", progress=False)
    with pytest.raises(IndexBuildError, match="not unique"):
        Index.build(tmp_path / "b", tw, TRAIN[:2], TRAIN_LABELS[:2], ids=["x", "x"], progress=False)
    # an interrupted build (plan written, no manifest) cannot be resumed with other data
    from tracinwe.index.build import make_plan, start_or_resume
    from tracinwe.index.segments import validated_examples

    ex = validated_examples(tw, TRAIN, TRAIN_LABELS)
    start_or_resume(tmp_path / "c", make_plan(tw, tw.load_classifiers(), ex, None, "float32", None, 0, 8))
    with pytest.raises(IndexBuildError, match="interrupted build with a different data sha256"):
        Index.build(tmp_path / "c", tw, TRAIN[::-1], TRAIN_LABELS[::-1], chunk_size=8, progress=False)


def test_query_gradients_of_other_checkpoint_count(built, tokenizer):
    tw, path = built
    index = Index.open(path, tracin=tw)
    one = TracInWE([(tiny_bert(0, 2), 0.1)], tokenizer=tokenizer, top_k=10, max_length=64)
    with pytest.raises(IndexMismatchError, match="1 checkpoints of query gradients"):
        index.search(one.capture(TEXTS[:1], [0]))
    with pytest.raises(IndexMismatchError, match="no projection"):
        index.search(tw.capture(TEXTS[:1], [0]), use_projection=True)
    assert np.isfinite(index.scores(TEXTS[:1], [0])).all()
