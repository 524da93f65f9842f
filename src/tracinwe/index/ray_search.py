"""Queries fanned out over an index's segments with Ray actors, merged on the driver.

Each actor opens the index once (memory maps only, no model) and runs
`SegmentSearcher.screen` over its share of the segments; the driver starts the
search and ranks the merged candidates with the same `SegmentSearcher`
(rescoring exactly where the screen is approximate), so the result equals
`Index.search`. The index folder must be readable from every node.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tracinwe.capture.records import TokenGradients
from tracinwe.results import TopInfluences


def _searcher_class():
    import ray

    @ray.remote(num_cpus=1)
    class ShareScreener:
        """Screens a fixed share of the segments of one index."""

        def __init__(self, path: str, manifest, numbers: list[int]) -> None:
            from tracinwe.index.index import Index

            self.searcher = Index(path, manifest, tracin=None).searcher
            self.numbers = numbers

        def screen(self, search):
            return self.searcher.screen(search, self.numbers)

    return ShareScreener


class RaySearch:
    """Long-lived searchers over one index: create once, query many times."""

    def __init__(self, index, num_workers: int = 2) -> None:
        import ray

        if not ray.is_initialized():
            ray.init()
        self.index = index
        for number in range(index.searcher.num_segments):  # the actors read without checks: hash pending files here, once
            index.segment(number)
        shares = np.array_split(np.arange(index.searcher.num_segments), max(1, num_workers))
        searcher = _searcher_class()
        self.actors = [searcher.remote(str(index.path), index.manifest, s.tolist()) for s in shares if s.size]

    def search(self, records: Sequence[TokenGradients], k: int = 10, candidates: int | None = None,
               use_projection: bool | None = None) -> TopInfluences:
        import ray

        search = self.index.searcher.start(records, k, candidates, use_projection)
        parts = ray.get([a.screen.remote(search) for a in self.actors])
        top = parts[0]
        for part in parts[1:]:
            top.merge(part)
        return self.index.searcher.rank(search, top)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def search_on_ray(index, records: Sequence[TokenGradients], k: int = 10, num_workers: int = 2, **kwargs) -> TopInfluences:
    """One fanned-out search (starts and stops its actors; use `RaySearch` for many)."""
    searcher = RaySearch(index, num_workers)
    try:
        return searcher.search(records, k, **kwargs)
    finally:
        searcher.close()
