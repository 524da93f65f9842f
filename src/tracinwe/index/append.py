"""Appending examples to an index: one writer at a time, on top of the manifest on disk.

Under the writer lock the manifest is re-read: segments another handle appended
since this one opened are adopted (the new segments go after them and the row
numbers continue); an index rebuilt or changed otherwise is refused. Only
segments no manifest on disk references are cleaned up, and the manifest is
replaced last, durably, so a crash at any point leaves the previous index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from tracinwe.index.build import segment_ranges
from tracinwe.index.errors import IndexBuildError
from tracinwe.index.integrity import read_manifest
from tracinwe.index.lock import writer_lock
from tracinwe.index.manifest import IndexManifest, SegmentRecord
from tracinwe.index.segments import SegmentBuilder, validated_examples
from tracinwe.index.storage import MANIFEST, remove_stray, write_json_atomic

CHANGED = "index changed since you opened it: reopen it and append again"


def _fixed_part(manifest: IndexManifest) -> IndexManifest:
    """What an append leaves alone: all but the segments, the count and the data's sha256."""
    return replace(manifest, segments=None, num_examples=0, data_sha256=None)


def rebased(opened: IndexManifest, disk: IndexManifest) -> list[SegmentRecord]:
    """The segments on disk that ``opened`` lacks; raises `IndexBuildError` unless ``disk`` only grew from it."""
    ours, theirs = opened.segments or (), disk.segments or ()
    if _fixed_part(opened) != _fixed_part(disk) or theirs[: len(ours)] != ours:
        raise IndexBuildError(f"{CHANGED} ({opened.num_examples} examples then, {disk.num_examples} now)")
    return list(theirs[len(ours):])


def append_examples(index, texts: Sequence[str], labels: Sequence[int | str], ids: Sequence[str] | None,
                    text_pairs: Sequence[str] | None) -> IndexManifest:
    """Write ``texts`` as new segments of ``index`` and commit the manifest; returns it (``index`` is rebased)."""
    with writer_lock(index.path):
        index.adopt(read_manifest(index.path))
        if (text_pairs is None) != ("text_pair" not in index.column_names()):
            raise IndexBuildError("text_pairs must be given exactly when the index was built with pairs")
        segments = list(index.manifest.segments or ())
        n0 = index.manifest.num_examples
        if ids is None:
            ids = [str(n0 + i) for i in range(len(texts))]
        examples = validated_examples(index.tracin, texts, labels, ids, text_pairs, existing_ids=set(index.ids()))
        remove_stray(index.path, {s.name for s in segments})  # we hold the lock: nothing else is being written
        builder = SegmentBuilder(index.manifest, index.tracin.load_classifiers(), index.tracin.device, index.projection)
        new = [builder.build(index.path, number, lo, hi, examples, offset=n0)
               for number, lo, hi in segment_ranges(len(examples.texts), index.manifest.settings.segment_size,
                                                    first_number=len(segments))]
        manifest = index.manifest.with_segments(segments + new, data_sha256=None)  # the union has no single input list
        write_json_atomic(index.path / MANIFEST, manifest.to_json())
        return manifest
