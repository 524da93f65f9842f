"""The Ray build (actors on a local Ray instance) equals the local build; queries fan out and merge."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_bert
from tracinwe import TracInWE
from tracinwe.data import load_dataset_source
from tracinwe.index import Index

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray whose files (auth token, session folder) stay in a temporary folder, removed afterwards."""
    home = Path.home()
    token = home / ".ray" / "auth_token"
    had_token = token.exists()
    scratch = Path(tempfile.mkdtemp(prefix="tw-ray-"))  # short: Ray's socket paths must stay under 107 bytes
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(scratch / "home")  # ray.init writes ~/.ray/auth_token; workers inherit HOME
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(scratch / "ray"))
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved
        shutil.rmtree(scratch, ignore_errors=True)
    assert had_token or not token.exists(), f"the Ray session left {token} behind"


def assert_rows_close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-5) -> None:
    """Equal up to ``rtol`` times each row's norm: a value far below its row's others may differ relatively more
    (another thread count sums in another order), an error relative to the row may not."""
    assert a.shape == b.shape and a.dtype == b.dtype
    a64, b64 = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
    norms = np.maximum(np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1))[:, None]
    bad = np.abs(a64 - b64) > rtol * norms
    assert not bad.any(), f"{int(bad.sum())} of {a64.size} values differ by more than {rtol} x their row's norm"


def save_checkpoints(tokenizer, folder):
    from tracinwe.models.checkpoints import write_checkpoint_info

    paths = []
    for seed, lr in ((5, 0.2), (6, 0.05)):
        path = folder / f"checkpoint-{seed}"
        tiny_bert(seed, 2).save_pretrained(path)
        tokenizer.save_pretrained(path)
        write_checkpoint_info(path, lr, step=seed)
        paths.append(path)
    return paths


def test_rows_close_is_relative_to_the_row():
    row = np.array([[1e-2, 1e-7, 0.0]], np.float32)
    assert_rows_close(row, row + np.array([[0.0, 2.3e-10, 0.0]], np.float32))  # the reported case: 2.6e-4 relative to its value
    with pytest.raises(AssertionError, match="1 of 3"):
        assert_rows_close(row, row + np.array([[0.0, 2e-6, 0.0]], np.float32))


@pytest.mark.slow
def test_ray_build_equals_local_build(ray_instance, tokenizer, tmp_path):
    from dataclasses import replace

    from tracinwe.index import RayBuild
    from tracinwe.index.ray_search import search_on_ray

    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(200, seed=3)
    paths = save_checkpoints(tokenizer, tmp_path)
    options = dict(max_length=64, top_k=10)
    local = Index.build_from_dataset(tmp_path / "local", TracInWE.from_checkpoints(paths, **options), data, chunk_size=50,
                                     projection_dim=8, progress=False)
    remote = Index.build_from_dataset(tmp_path / "ray", TracInWE.from_checkpoints(paths, **options), data, chunk_size=50,
                                      projection_dim=8, progress=False, strategy=RayBuild(num_workers=2))
    assert len(remote) == len(local) == 200 and remote.ids() == local.ids()
    a, b = local.manifest, remote.manifest
    # everything but the segments, incl. the basis sha256
    assert replace(a, segments=None) == replace(b, segments=None)
    for sa, sb in zip(a.segments, b.segments):
        assert sa.name == sb.name and sa.start == sb.start
        for name in ("tokens", "offsets", "postings"):
            np.testing.assert_array_equal(np.load(local.path / "segments" / sa.name / f"{name}.npy"),
                                          np.load(remote.path / "segments" / sb.name / f"{name}.npy"))
        for name in ("rows", "dense", "self_influence", "rows_proj", "dense_proj"):
            assert_rows_close(np.load(local.path / "segments" / sa.name / f"{name}.npy"),
                              np.load(remote.path / "segments" / sb.name / f"{name}.npy"))
    reopened = Index.open(tmp_path / "ray")  # reloads the recorded checkpoint folders
    queries = data.texts[:3] + ["a charming , funny film"]
    records = reopened.tracin.capture(queries)
    expected = local.search(records, k=5, use_projection=False)
    fanned = search_on_ray(reopened, records, k=5, num_workers=2, use_projection=False)
    np.testing.assert_array_equal(fanned.proponent_indices, expected.proponent_indices)
    np.testing.assert_allclose(fanned.opponent_scores, expected.opponent_scores, rtol=1e-5)
    projected = search_on_ray(reopened, records, k=5, num_workers=2, candidates=200)  # every example a candidate
    np.testing.assert_array_equal(projected.proponent_indices, expected.proponent_indices)
    np.testing.assert_allclose(projected.proponent_scores, expected.proponent_scores, rtol=1e-5)


@pytest.mark.slow
def test_cli_ray_build_equals_local_build(ray_instance, tokenizer, tmp_path):
    """`tracinwe index build --ray` passes RayBuild to Index.build: same manifest (but segments) and scores as a local build."""
    import csv
    from dataclasses import replace

    from typer.testing import CliRunner

    from tracinwe.cli.app import app

    paths = save_checkpoints(tokenizer, tmp_path)
    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(40, seed=4)
    table = tmp_path / "train.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((t, data.label_names[y]) for t, y in zip(data.texts, data.labels))
    args = ["index", "build", "--data", str(table), "--max-length", "64", "--top-k", "10", "--chunk-size", "15"]
    args += [a for p in paths for a in ("--checkpoint", str(p))]
    out = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ray"), "--ray", "--num-workers", "2"])
    assert out.exit_code == 0, out.output
    local = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    remote, here = Index.open(tmp_path / "ray"), Index.open(tmp_path / "local")
    assert len(remote.manifest.segments) == 3 and replace(remote.manifest, segments=None) == replace(here.manifest, segments=None)
    queries = ["a charming , funny film", "a dull mess"]
    np.testing.assert_allclose(remote.scores(queries), here.scores(queries), rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_ray_build_of_lm_documents_equals_the_local_build(ray_instance, tmp_path):
    """Ray actors load decoder checkpoint folders and build the index a local build does: brute-force scores and top-k."""
    from tracinwe.index import RayBuild
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    texts = [t for t in load_dataset_source("bundled:rotten-tomatoes").sample(300, seed=5).texts if 20 <= len(t) <= 100][:80]
    pairs = [{"prompt": " ".join(t.split()[:3]), "completion": " " + " ".join(t.split()[3:])} for t in texts[70:]]
    docs: list = texts[:70] + pairs
    config = DecoderConfig(n_layer=2, n_embd=32, n_head=2, n_positions=96, vocab_size=400, epochs=2, batch_size=16,
                           num_checkpoints=2, max_length=96, seed=0)
    run = train_decoder(docs, tmp_path / "run", config)
    tw = TracInWE.from_checkpoints(run.checkpoints, max_length=96)
    queries = [docs[72], "a movie that is sharp and funny ."]
    brute = tw.scores(docs, None, queries, None)
    local = Index.build(tmp_path / "local", tw, docs, None, chunk_size=30, progress=False)
    remote = Index.build(tmp_path / "ray", tw, docs, None, chunk_size=30, strategy=RayBuild(num_workers=2), progress=False)
    assert remote.manifest.task == "causal-lm" and len(remote.manifest.segments) == 3 and remote.examples() == docs
    tol = 1e-6 * np.abs(brute).max()
    np.testing.assert_allclose(remote.scores(queries), brute, rtol=0, atol=tol)
    np.testing.assert_allclose(remote.scores(queries), local.scores(queries), rtol=0, atol=tol)
    found = remote.search(queries, k=5)
    np.testing.assert_allclose(found.proponent_scores, -np.sort(-brute, axis=1)[:, :5], rtol=0, atol=tol)
    np.testing.assert_allclose(found.opponent_scores, np.sort(brute, axis=1)[:, :5], rtol=0, atol=tol)
