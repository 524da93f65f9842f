"""The same index build on a Ray cluster: actors capture and write segments, the driver commits.

Each actor loads every checkpoint once (`SegmentBuilder`), then takes segments
from a `ray.util.ActorPool` and writes them straight into the index folder,
which must be on storage every node can write (NFS, a shared volume). Segments
are cut exactly as in a local build, so the result equals it, and a killed
Ray build resumes like a local one. The driver holds the index's writer lock
for the whole build and writes the manifest last.

On a real cluster::

    ray start --head                     # on the head node
    ray start --address=HEAD:6379        # on each worker node
    tracinwe index build --out /shared/idx --checkpoint /shared/run/checkpoint-1 --checkpoint /shared/run/checkpoint-2 \
        --data /shared/train.csv --ray --num-workers 16

(or ``ray.init(address="auto")`` before calling `build_index_on_ray`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tracinwe.index import projection as projection_basis
from tracinwe.index.build import (
    DEFAULT_SEGMENT_SIZE,
    SegmentBuilder,
    ensure_projection,
    finish_build,
    load_classifiers,
    make_plan,
    refuse_foreign_folder,
    segment_ranges,
    start_or_resume,
    validated_examples,
)
from tracinwe.index.lock import writer_lock
from tracinwe.index.storage import committed_segments


def _tracin(checkpoint_paths, learning_rates, options: dict):
    from tracinwe.tracin import TracInWE

    return TracInWE.from_checkpoints([str(p) for p in checkpoint_paths], learning_rates, **options)


def _segment_worker_class():
    import ray

    @ray.remote(num_cpus=1)
    class SegmentWorker:
        """Loads the checkpoints once; builds the segments it is given."""

        def __init__(self, checkpoint_paths, learning_rates, options: dict, plan: dict, root: str) -> None:
            import torch

            torch.set_num_threads(1)
            self.tw = _tracin(checkpoint_paths, learning_rates, options)
            self.root = Path(root)
            projection = projection_basis.read(self.root) if plan.get("projection") else None
            self.builder = SegmentBuilder(self.tw, plan, projection=projection)

        def build(self, number: int, lo: int, hi: int, examples) -> dict:
            return self.builder.build(self.root, number, lo, hi, examples)

    return SegmentWorker


def build_index_on_ray(
    path: str | Path,
    checkpoint_paths: Sequence[str | Path],
    learning_rates: Sequence[float] | None,
    texts: Sequence[str],
    labels: Sequence[int | str],
    num_workers: int = 2,
    *,
    ids: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    text_pairs: Sequence[str] | None = None,
    dtype: str = "float32",
    projection_dim: int | None = None,
    projection_method: str = "pca",
    seed: int = 0,
    chunk_size: int | None = None,
    max_length: int = 128,
    top_k: int | None = None,
    keep_special_tokens: bool | Sequence[str] = True,
    batch_size: int = 32,
    progress: bool = True,
):
    """Build (or resume) an index with ``num_workers`` Ray actors; returns the opened `Index`.

    Starts a local Ray instance unless one is already initialised (``ray.init``).
    """
    from tracinwe.index.index import Index

    options = {"max_length": max_length, "top_k": top_k, "keep_special_tokens": keep_special_tokens, "batch_size": batch_size}
    tw = _tracin(checkpoint_paths, learning_rates, options)
    root = Path(path).resolve()
    examples = validated_examples(tw, texts, labels, ids, text_pairs)
    classifiers = load_classifiers(tw)
    plan = make_plan(tw, classifiers, examples, label_names, dtype, projection_dim, seed, chunk_size or DEFAULT_SEGMENT_SIZE,
                     projection_method, root=root)
    refuse_foreign_folder(root)
    with writer_lock(root):
        manifest = _build_locked(root, tw, checkpoint_paths, examples, plan, classifiers, options, num_workers, progress)
    return Index(root, manifest, tw)


def _build_locked(root: Path, tw, checkpoint_paths, examples, plan: dict, classifiers: list, options: dict, num_workers: int,
                  progress: bool) -> dict:
    """Resume or start the build, run the missing segments on Ray actors, commit the manifest."""
    import ray
    from ray.util import ActorPool
    from tqdm.auto import tqdm

    done = set(start_or_resume(root, plan))
    ensure_projection(root, plan, SegmentBuilder(tw, plan, classifiers), examples)  # fitted once, by the driver
    todo = [r for r in segment_ranges(len(examples.texts), plan["settings"]["segment_size"]) if r[0] not in done]
    if todo:
        if not ray.is_initialized():
            ray.init()
        worker = _segment_worker_class()
        lrs = [c["learning_rate"] for c in plan["checkpoints"]]
        n_actors = max(1, min(num_workers, len(todo)))
        actors = [worker.remote(list(map(str, checkpoint_paths)), lrs, options, plan, str(root)) for _ in range(n_actors)]
        examples_ref = ray.put(examples)
        bar = tqdm(total=len(todo), desc="building index on ray", unit="segment", disable=not progress)
        pool = ActorPool(actors)
        for _ in pool.map_unordered(lambda a, r: a.build.remote(r[0], r[1], r[2], examples_ref), todo):
            bar.update(1)
        bar.close()
        for actor in actors:
            ray.kill(actor)
    return finish_build(root, plan, list(committed_segments(root).values()))
