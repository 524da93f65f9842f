"""`RayBuild`: an index build whose segments are captured and written by Ray actors.

Pass it to `Index.build` (``strategy=RayBuild(num_workers=16)``). Each actor
loads every checkpoint folder once (the facade's `Checkpoint` records), then
takes segments from a `ray.util.ActorPool` and writes them straight into the
index folder, which must be on storage every node can write (NFS, a shared
volume). Segments are cut exactly as in a local build, so the result equals
it, and a killed Ray build resumes like a local one. The driver holds the
index's writer lock, fits the projection, and writes the manifest last.

On a real cluster::

    ray start --head                     # on the head node
    ray start --address=HEAD:6379        # on each worker node
    tracinwe index build --out /shared/idx --checkpoint /shared/run/checkpoint-1 --checkpoint /shared/run/checkpoint-2 \
        --data /shared/train.csv --ray --num-workers 16

(or ``ray.init(address="auto")`` before ``Index.build(..., strategy=RayBuild(...))``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracinwe.index.errors import IndexBuildError
from tracinwe.index.segments import Examples, SegmentBuilder


def _segment_worker_class():
    import ray

    @ray.remote(num_cpus=1)
    class SegmentWorker:
        """Loads the checkpoints once; builds the segments it is given."""

        def __init__(self, checkpoints: list, builder: SegmentBuilder, root: str) -> None:
            import torch

            torch.set_num_threads(1)
            builder.classifiers = [c.load(builder.device or "cpu") for c in checkpoints]
            self.builder = builder
            self.root = Path(root)

        def build(self, number: int, lo: int, hi: int, examples: Examples):
            return self.builder.build(self.root, number, lo, hi, examples)

    return SegmentWorker


@dataclass(frozen=True)
class RayBuild:
    """Build the missing segments with ``num_workers`` Ray actors (starts a local Ray unless ``ray.init`` ran)."""

    num_workers: int = 2

    def build_segments(self, root: Path, tw, builder: SegmentBuilder, examples: Examples, todo: list,
                       progress: bool) -> None:
        import ray
        from ray.util import ActorPool
        from tqdm.auto import tqdm

        if any(c.path is None for c in tw.checkpoints):
            raise IndexBuildError("a Ray build loads checkpoint folders on every worker: pass folders, not in-memory models")
        if not ray.is_initialized():
            ray.init()
        shipped = SegmentBuilder(builder.plan, [], builder.device, builder.projection)  # the actors load their own models
        worker = _segment_worker_class()
        actors = [worker.remote(list(tw.checkpoints), shipped, str(Path(root).resolve()))
                  for _ in range(max(1, min(self.num_workers, len(todo))))]
        examples_ref = ray.put(examples)
        bar = tqdm(total=len(todo), desc="building index on ray", unit="segment", disable=not progress)
        try:
            for _ in ActorPool(actors).map_unordered(lambda a, r: a.build.remote(r[0], r[1], r[2], examples_ref), todo):
                bar.update(1)
        finally:
            bar.close()
            for actor in actors:
                ray.kill(actor)
