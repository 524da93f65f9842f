"""A moved run folder: checkpoint paths are recorded relative to the index, and can be re-pointed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import TracInWE
from tracinwe.cli.app import app
from tracinwe.errors import CheckpointError
from tracinwe.index import Index, IndexMismatchError

TRAIN = [f"{t} #{i}" for i, t in enumerate(TEXTS * 2)]
TRAIN_LABELS = [y % 2 for y in LABELS] * 2


def save_run(tokenizer, run, seeds=(3, 4)):
    from tracinwe.models.checkpoints import write_checkpoint_info

    for step, (seed, lr) in enumerate(zip(seeds, (0.2, 0.05)), start=1):
        folder = run / f"checkpoint-{step}"
        tiny_bert(seed, 2).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_checkpoint_info(folder, lr, step=step)
    return sorted(run.glob("checkpoint-*"))


@pytest.fixture()
def project(tokenizer, tmp_path):
    """``project/run`` (two checkpoints) and ``project/index`` built from them."""
    folders = save_run(tokenizer, tmp_path / "project" / "run")
    tw = TracInWE.from_checkpoints(folders, max_length=64, top_k=10)
    Index.build(tmp_path / "project" / "index", tw, TRAIN, TRAIN_LABELS, chunk_size=5, progress=False)
    return tmp_path / "project", tw.scores(TRAIN, TRAIN_LABELS, TEXTS[:2])


def test_paths_are_recorded_relative_to_the_index(project):
    root, _ = project
    manifest = json.loads((root / "index" / "manifest.json").read_text())
    assert [c["path"] for c in manifest["checkpoints"]] == ["../run/checkpoint-1", "../run/checkpoint-2"]


def test_run_and_index_moved_together_still_open(project, tmp_path):
    root, brute = project
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(root, moved)
    index = Index.open(moved / "index", verify="full")
    np.testing.assert_allclose(index.scores(TEXTS[:2]), brute, rtol=1e-5, atol=1e-9)


def test_moved_run_is_re_pointed_with_checkpoints_from(project, tmp_path):
    root, brute = project
    new_run = tmp_path / "archive" / "run-2026"
    new_run.parent.mkdir()
    shutil.move(root / "run", new_run)
    with pytest.raises(CheckpointError, match=r"checkpoint '\.\./run/checkpoint-1' is missing.*--checkpoints-from"):
        Index.open(root / "index")
    index = Index.open(root / "index", checkpoints_from=new_run)
    assert index.tracin.learning_rates == [0.2, 0.05]
    np.testing.assert_allclose(index.scores(TEXTS[:2]), brute, rtol=1e-5, atol=1e-9)
    with pytest.raises(CheckpointError, match=r"'checkpoint-1' of the index is not in"):
        Index.open(root / "index", checkpoints_from=tmp_path / "archive")
    runner = CliRunner()
    failed = runner.invoke(app, ["query", str(root / "index"), TEXTS[0], "--json"])
    assert failed.exit_code == 2 and "--checkpoints-from" in failed.output
    out = runner.invoke(app, ["query", str(root / "index"), TEXTS[0], "--k", "2", "--json", "--checkpoints-from", str(new_run)])
    assert out.exit_code == 0, out.output
    found = json.loads(out.stdout)["results"][0]["proponents"]
    assert [n["row"] for n in found] == np.argsort(-brute[0], kind="stable")[:2].tolist()
    np.testing.assert_allclose([n["score"] for n in found], np.sort(brute[0])[::-1][:2], rtol=1e-5)
    for command in (["explain", TEXTS[0], "--index"], ["self-influence", "--index"]):  # every command that opens an index
        args = [*command, str(root / "index"), "--k", "2", "--json"]
        assert runner.invoke(app, args).exit_code == 2
        out = runner.invoke(app, [*args, "--checkpoints-from", str(new_run)])
        assert out.exit_code == 0, out.output


def test_re_pointed_checkpoints_must_match_the_fingerprint(project, tokenizer, tmp_path):
    root, _ = project
    other = tmp_path / "other-run"
    save_run(tokenizer, other, seeds=(3, 9))  # same folder names, other weights at checkpoint 2
    with pytest.raises(IndexMismatchError, match="checkpoint 1 has different weights"):
        Index.open(root / "index", checkpoints_from=other)


def test_absolute_paths_of_older_indexes_still_open(project):
    root, brute = project
    manifest_path = root / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for c in manifest["checkpoints"]:
        c["path"] = str((root / "index" / c["path"]).resolve())
    manifest_path.write_text(json.dumps(manifest))
    np.testing.assert_allclose(Index.open(root / "index").scores(TEXTS[:2]), brute, rtol=1e-5, atol=1e-9)
