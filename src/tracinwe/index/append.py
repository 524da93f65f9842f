"""Appending examples to an index: one writer at a time, on top of the manifest on disk.

Under the writer lock the manifest is re-read: segments another handle appended
since this one opened are adopted (the new segments go after them and the row
numbers continue); an index rebuilt or changed otherwise is refused. Only
segments no manifest on disk references are cleaned up, and the manifest is
replaced last, durably, so a crash at any point leaves the previous index.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracinwe.index.build import SegmentBuilder, segment_ranges, validated_examples
from tracinwe.index.integrity import read_manifest
from tracinwe.index.lock import writer_lock
from tracinwe.index.storage import MANIFEST, IndexBuildError, remove_stray, write_json_atomic

#: Manifest entries an append leaves alone; any other change means the index is not the one opened.
GROWING = ("segments", "num_examples", "data_sha256")
CHANGED = "index changed since you opened it: reopen it and append again"


def rebased(opened: dict, disk: dict) -> list[dict]:
    """The segments on disk that ``opened`` lacks; raises `IndexBuildError` unless ``disk`` only grew from it."""
    same = all(opened.get(k) == disk.get(k) for k in set(opened) | set(disk) if k not in GROWING)
    ours = opened["segments"]
    if not same or disk["segments"][: len(ours)] != ours:
        raise IndexBuildError(f"{CHANGED} ({opened.get('num_examples')} examples then, {disk.get('num_examples')} now)")
    return disk["segments"][len(ours):]


def append_examples(index, texts: Sequence[str], labels: Sequence[int | str], ids: Sequence[str] | None,
                    text_pairs: Sequence[str] | None) -> dict:
    """Write ``texts`` as new segments of ``index`` and commit the manifest; returns it (``index`` is rebased)."""
    with writer_lock(index.path):
        index.adopt(read_manifest(index.path))
        if (text_pairs is None) != ("text_pair" not in index._column_names()):
            raise IndexBuildError("text_pairs must be given exactly when the index was built with pairs")
        segments = list(index.manifest["segments"])
        n0 = int(index.manifest["num_examples"])
        if ids is None:
            ids = [str(n0 + i) for i in range(len(texts))]
        examples = validated_examples(index.tracin, texts, labels, ids, text_pairs, existing_ids=set(index.ids()))
        remove_stray(index.path, {s["name"] for s in segments})  # we hold the lock: nothing else is being written
        builder = SegmentBuilder(index.tracin, {**index.manifest, "segments": None}, projection=index._projection)
        new = [builder.build(index.path, number, lo, hi, examples, offset=n0)
               for number, lo, hi in segment_ranges(len(examples.texts), index.manifest["settings"]["segment_size"],
                                                    first_number=len(segments))]
        manifest = {**index.manifest, "segments": segments + new, "num_examples": n0 + len(examples.texts),
                    "data_sha256": None}  # the union has no single input list
        write_json_atomic(index.path / MANIFEST, manifest)
        return manifest
