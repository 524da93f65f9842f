"""Streaming, resumable index builds: a plan, then segments, then the manifest.

Examples are cut into fixed segments (``segment_size`` rows each). A segment is
captured at every checkpoint, laid out token-major, written to a temporary
folder and committed by an atomic rename; memory holds one segment at a time.
The plan (``build-plan.json``) pins everything that determines the result
(inputs' sha256, settings, model fingerprint, dense tokens), so a build killed
at any moment (even ``kill -9``) continues with the segments not yet committed
and ends with the same index. The manifest is written last: its presence means
the index is complete. Builds and appends hold the index's writer lock
(`tracinwe.index.lock`).

Who builds the missing segments is a strategy passed in: `LocalBuild` (this
process) or `tracinwe.index.ray_build.RayBuild` (Ray actors); both run the same
`SegmentBuilder` on the same segment cuts, so they produce the same index.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from tracinwe.index import projection as projection_basis
from tracinwe.index.checkpoint_paths import recorded_path
from tracinwe.index.errors import IndexBuildError
from tracinwe.index.layout import choose_dense_tokens
from tracinwe.index.lock import LOCK_FILE, writer_lock
from tracinwe.index.manifest import CheckpointRecord, DenseToken, IndexManifest, IndexSettings, SegmentRecord
from tracinwe.index.segments import DTYPES, Examples, SegmentBuilder
from tracinwe.index.storage import (
    BUILD_PLAN,
    MANIFEST,
    README,
    committed_segments,
    file_record,
    model_fingerprint,
    read_json,
    remove_stray,
    segment_name,
    verify_segment,
    write_json_atomic,
)
from tracinwe.io import fsync_dir, write_bytes_atomic

DEFAULT_SEGMENT_SIZE = 4096
#: Texts tokenised to decide the dense tokens (those in >= 90% of them); the choice only
#: affects speed (dense and posting rows score the same), so a small sample suffices.
DENSE_PROBE = 256

#: ``(segment number, start, stop)`` of one segment to build.
SegmentRange = tuple[int, int, int]


class BuildStrategy(Protocol):
    """Builds the given segments of a plan (each committed by `SegmentBuilder.build`); the caller commits the manifest."""

    def build_segments(self, root: Path, tw, builder: SegmentBuilder, examples: Examples, todo: list[SegmentRange],
                       progress: bool) -> None: ...


@dataclass(frozen=True)
class LocalBuild:
    """Build in this process: segment i is written while segment i + 1 is captured."""

    def build_segments(self, root: Path, tw, builder: SegmentBuilder, examples: Examples, todo: list[SegmentRange],
                       progress: bool) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(examples.texts), initial=len(examples.texts) - sum(hi - lo for _, lo, hi in todo),
                   desc="building index", unit="ex", disable=not progress)
        # File writes and sha256 release the GIL; at most two segments are in memory. The layout stays in this
        # thread: moved into the writer, it slowed the capture more than it saved (bench_index_build.py, TokenCNN).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracinwe-index-writer") as writer:
            pending: list[tuple[int, Future]] = []  # (examples, write) of the segment being written
            for number, lo, hi in todo:
                arrays, scale = builder.prepare(lo, hi, examples)
                for size, write in pending:
                    write.result()
                    bar.update(size)
                pending = [(hi - lo, writer.submit(builder.write, root, number, lo, hi, examples, arrays, scale))]
            for size, write in pending:
                write.result()
                bar.update(size)
        bar.close()


def build_index(root: Path, tw, examples: Examples, *, label_names=None, dtype: str = "float32", projection_dim=None,
                projection_method: str = "pca", seed: int = 0, segment_size: int = DEFAULT_SEGMENT_SIZE,
                strategy: BuildStrategy | None = None, progress: bool = True) -> IndexManifest:
    """Load the checkpoints once, plan, and build the index with ``strategy`` (default `LocalBuild`); returns the manifest."""
    classifiers = tw.load_classifiers()
    plan = make_plan(tw, classifiers, examples, label_names, dtype, projection_dim, seed, segment_size, projection_method, root)
    return run_plan(root, tw, examples, plan, classifiers, strategy or LocalBuild(), progress)


def run_plan(root: Path, tw, examples: Examples, plan: IndexManifest, classifiers: list, strategy: BuildStrategy,
             progress: bool) -> IndexManifest:
    """Under the writer lock: resume or start, fit the projection, build the missing segments, commit the manifest."""
    refuse_foreign_folder(root)  # before the lock file is created in it
    with writer_lock(root):
        done = set(start_or_resume(root, plan))
        builder = SegmentBuilder(plan, classifiers, tw.device)
        builder.ensure_projection(root, examples)  # fitted once, here, before any worker starts
        todo = [r for r in segment_ranges(plan.num_examples, plan.settings.segment_size) if r[0] not in done]
        if todo:
            strategy.build_segments(root, tw, builder, examples, todo, progress)
        return finish_build(root, plan, list(committed_segments(root).values()))


def make_plan(tw, classifiers, examples: Examples, label_names, dtype: str, projection_dim, seed: int, segment_size: int,
              projection_method: str = "pca", root: Path | None = None) -> IndexManifest:
    """Everything that decides the index, recorded before the first segment.

    ``root``: the index folder; checkpoint paths are recorded relative to it.
    """
    if dtype not in DTYPES:
        raise IndexBuildError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}: pass 'float32' or 'float16'")
    if segment_size < 1:
        raise IndexBuildError(f"chunk_size {segment_size} must be at least 1")
    try:
        projection = projection_basis.spec(projection_dim, projection_method, seed)
    except ValueError as exc:
        raise IndexBuildError(str(exc)) from None
    final = classifiers[-1]
    if tw.is_causal_lm and label_names is not None:
        raise IndexBuildError("label_names were passed but a causal language model takes no labels: pass None")
    probe = examples.texts[:DENSE_PROBE]
    probe_pairs = examples.pairs[:DENSE_PROBE] if examples.pairs is not None else None
    ids = final.tokenize(probe, probe_pairs)
    mask = ids.get("attention_mask")
    token_lists = [
        [t for t, m in zip(row.tolist(), (mask[i].tolist() if mask is not None else [1] * len(row))) if m]
        for i, row in enumerate(ids["input_ids"])
    ]
    dense = choose_dense_tokens(token_lists)
    if tw.settings.keep_special_tokens is False:
        dense = dense[~np.isin(dense, sorted(final.special_token_ids))]
    names = list(label_names) if label_names is not None else [str(c) for c in range(final.num_classes)]
    if tw.is_causal_lm:  # no labels: the text is its own target
        names = []
    elif len(names) != final.num_classes:
        raise IndexBuildError(f"{len(names)} label names for a model with {final.num_classes} classes: pass one name per class")
    return IndexManifest(
        settings=IndexSettings(tw.settings, dtype, int(segment_size)),
        checkpoints=tuple(CheckpointRecord(recorded_path(p, root), float(lr))
                          for p, lr in zip(tw.checkpoint_paths, tw.learning_rates)),
        fingerprint=model_fingerprint(classifiers, tw.settings),
        dense_tokens=tuple(DenseToken(int(t), s) for t, s in zip(dense.tolist(), final.token_strings(dense.tolist()))),
        projection=projection,
        label_names=tuple(names),
        data_sha256=examples.sha256(),
        num_examples=len(examples.texts),
        task=tw.task,
    )


def segment_ranges(n: int, size: int, first_number: int = 0) -> list[SegmentRange]:
    """``(segment number, start, stop)`` covering ``n`` examples in runs of ``size``."""
    return [(first_number + i, lo, min(lo + size, n)) for i, lo in enumerate(range(0, n, size))]


def _plan_differences(previous: IndexManifest, plan: IndexManifest) -> list[str]:
    """What an interrupted build's plan pins differently from this one."""
    pinned = {
        "data sha256": (previous.data_sha256, plan.data_sha256),
        "settings": (previous.settings.to_json(), plan.settings.to_json()),
        "fingerprint": (previous.fingerprint, plan.fingerprint),
        "projection": (previous.projection, plan.projection),
        "checkpoints": (previous.checkpoints, plan.checkpoints),
        "dense tokens": (previous.dense_tokens, plan.dense_tokens),
        "task": (previous.task, plan.task),
    }
    return [what for what, (a, b) in pinned.items() if a != b]


def start_or_resume(root: Path, plan: IndexManifest) -> list[int]:
    """Record the plan (or check it against an interrupted build's); return the segments already committed."""
    if (root / MANIFEST).exists():
        raise IndexBuildError(f"{str(root)!r} already holds an index: open it, append to it, or delete the folder")
    plan_path = root / BUILD_PLAN
    if plan_path.exists():
        differences = _plan_differences(IndexManifest.from_json(read_json(plan_path, "build plan"), repr(str(root))), plan)
        if differences:
            raise IndexBuildError(
                f"{str(root)!r} holds an interrupted build with a different {differences[0]}: "
                "rerun with the same inputs to resume, or delete the folder"
            )
    else:
        refuse_foreign_folder(root)
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(plan_path, plan.to_json())
    expected = {number: (lo, hi) for number, lo, hi in segment_ranges(plan.num_examples, plan.settings.segment_size)}
    valid = []
    for number, record in committed_segments(root).items():
        lo_hi = expected.get(number)
        if lo_hi and record.start == lo_hi[0] and record.num_examples == lo_hi[1] - lo_hi[0]:
            try:
                verify_segment(root, record, full=False)
            except Exception:
                continue
            valid.append(number)
    remove_stray(root, {segment_name(n) for n in valid})
    return sorted(valid)


def refuse_foreign_folder(root: Path) -> None:
    """Raise `IndexBuildError` when ``root`` holds files but neither an index nor an interrupted build."""
    if (root / MANIFEST).exists() or (root / BUILD_PLAN).exists():
        return
    if root.exists() and (not root.is_dir() or any(e.name != LOCK_FILE for e in root.iterdir())):
        raise IndexBuildError(f"{str(root)!r} is not empty and is not an index: pass a new folder")


def check_coverage(root: Path, plan: IndexManifest, records: list[SegmentRecord]) -> list[SegmentRecord]:
    """The records sorted by start; raises `IndexBuildError` unless they are exactly the plan's segments."""
    records = sorted(records, key=lambda r: r.start)
    expected = [(segment_name(n), lo, hi - lo) for n, lo, hi in segment_ranges(plan.num_examples, plan.settings.segment_size)]
    got = [(r.name, r.start, r.num_examples) for r in records]
    if got != expected:
        raise IndexBuildError(
            f"the committed segments of {str(root)!r} do not cover the plan exactly "
            f"({len(got)} segments, {len(expected)} planned): rerun the same build to resume it"
        )
    return records


def finish_build(root: Path, plan: IndexManifest, records: list[SegmentRecord]) -> IndexManifest:
    """Check the segments cover the plan, write the manifest (durably) and drop the plan: the index is complete."""
    projection = plan.projection
    if projection is not None:
        folder = root / projection_basis.FOLDER
        projection = replace(projection, files={f: file_record(folder / f) for f in projection_basis.FILES})
    manifest = plan.with_segments(check_coverage(root, plan, records), projection=projection)
    write_bytes_atomic(root / "README.txt", README.encode())
    write_json_atomic(root / MANIFEST, manifest.to_json())
    (root / BUILD_PLAN).unlink(missing_ok=True)
    fsync_dir(root)
    return manifest
