"""The Ray build (actors on a local Ray instance) equals the local build; queries fan out and merge."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_bert
from tracinwe import TracInWE
from tracinwe.data import load_dataset_source
from tracinwe.index import Index

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


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


@pytest.mark.slow
def test_ray_build_equals_local_build(ray_instance, tokenizer, tmp_path):
    from tracinwe.index.ray_build import build_index_on_ray
    from tracinwe.index.ray_search import search_on_ray

    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(200, seed=3)
    paths = save_checkpoints(tokenizer, tmp_path)
    options = dict(max_length=64, top_k=10)
    local = Index.build_from_dataset(tmp_path / "local", TracInWE.from_checkpoints(paths, **options), data, chunk_size=50,
                                     projection_dim=8, progress=False)
    remote = build_index_on_ray(
        tmp_path / "ray", paths, None, data.texts, data.labels, num_workers=2, ids=data.ids,
        label_names=data.label_names, chunk_size=50, projection_dim=8, progress=False, **options,
    )
    assert len(remote) == len(local) == 200 and remote.ids() == local.ids()
    a, b = local.manifest, remote.manifest
    assert {k: v for k, v in a.items() if k != "segments"} == {k: v for k, v in b.items() if k != "segments"}  # incl. the basis sha256
    for sa, sb in zip(a["segments"], b["segments"]):
        assert sa["name"] == sb["name"] and sa["start"] == sb["start"]
        for name in ("tokens", "offsets", "postings"):
            np.testing.assert_array_equal(np.load(local.path / "segments" / sa["name"] / f"{name}.npy"),
                                          np.load(remote.path / "segments" / sb["name"] / f"{name}.npy"))
        for name in ("rows", "dense", "self_influence", "rows_proj", "dense_proj"):
            np.testing.assert_allclose(np.load(local.path / "segments" / sa["name"] / f"{name}.npy"),
                                       np.load(remote.path / "segments" / sb["name"] / f"{name}.npy"), rtol=1e-5, atol=1e-12)
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
