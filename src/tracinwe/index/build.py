"""Streaming, resumable index builds: a plan, then segments, then the manifest.

Examples are cut into fixed segments (``segment_size`` rows each). A segment is
captured at every checkpoint, laid out token-major, written to a temporary
folder and committed by an atomic rename; memory holds one segment at a time.
The plan (``build-plan.json``) pins everything that determines the result
(inputs' sha256, settings, model fingerprint, dense tokens), so a build killed
at any moment (even ``kill -9``) continues with the segments not yet committed
and ends with the same index. The manifest is written last: its presence means
the index is complete. The same `SegmentBuilder` runs inside Ray actors.
Builds and appends hold the index's writer lock (`tracinwe.index.lock`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracinwe.capture.gradients import capture_checkpoints
from tracinwe.capture.records import TokenGradients
from tracinwe.index import projection as projection_basis
from tracinwe.index.checkpoint_paths import checkpoint_folders, recorded_path
from tracinwe.index.layout import choose_dense_tokens, combine_checkpoints, float16_scale, self_influence
from tracinwe.index.lock import LOCK_FILE, writer_lock
from tracinwe.index.projection import Projection
from tracinwe.index.storage import (
    BUILD_PLAN,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    README,
    IndexBuildError,
    committed_segments,
    file_record,
    model_fingerprint,
    read_json,
    remove_stray,
    segment_name,
    verify_segment,
    write_json_atomic,
    write_segment,
)
from tracinwe.io import fsync_dir, write_bytes_atomic

DEFAULT_SEGMENT_SIZE = 4096
#: Texts tokenised to decide the dense tokens (those in >= 90% of them); the choice only
#: affects speed (dense and posting rows score the same), so a small sample suffices.
DENSE_PROBE = 256
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class Examples:
    """The training examples of a build or append (validated)."""

    texts: list[str]
    labels: list[int]
    ids: list[str]
    pairs: list[str] | None

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for i, (t, y, e) in enumerate(zip(self.texts, self.labels, self.ids)):
            p = self.pairs[i] if self.pairs is not None else ""
            digest.update(f"{e}\x1f{y}\x1f{t}\x1f{p}\x1e".encode())
        return digest.hexdigest()

    def table(self, lo: int, hi: int):
        import pyarrow as pa

        columns = {
            "id": pa.array(self.ids[lo:hi], pa.string()),
            "text": pa.array(self.texts[lo:hi], pa.string()),
            "label": pa.array(self.labels[lo:hi], pa.int64()),
        }
        if self.pairs is not None:
            columns["text_pair"] = pa.array(self.pairs[lo:hi], pa.string())
        return pa.table(columns)


def validated_examples(tw, texts, labels, ids=None, text_pairs=None, existing_ids: set[str] | None = None) -> Examples:
    """Check texts, labels, pairs and ids (unique, also against ``existing_ids``)."""
    texts, labels, pairs = tw._validated(texts, labels, text_pairs, "train")
    if labels is None:
        raise IndexBuildError("train_labels are required: pass one label per text")
    ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(texts):
        raise IndexBuildError(f"{len(ids)} ids for {len(texts)} texts: pass one id per text")
    seen: set[str] = set(existing_ids or ())
    for i, e in enumerate(ids):
        if e in seen:
            raise IndexBuildError(f"id {e!r} (row {i}) is not unique in the index: pass distinct ids")
        seen.add(e)
    return Examples(texts, labels, ids, pairs)


def capture_settings_json(tw) -> dict:
    """What decides the gradients (batch size does not)."""
    s = tw.settings.to_json()
    return {"top_k": s["top_k"], "keep_special_tokens": s["keep_special_tokens"], "max_length": tw.max_length}


def load_classifiers(tw) -> list:
    """Every checkpoint's classifier, each loaded once (folders) and kept for the whole build."""
    return [ckpt.load(tw.device or "cpu") for ckpt in tw.checkpoints]


class SegmentBuilder:
    """Captures and writes segments with the checkpoints loaded once."""

    def __init__(self, tw, plan: dict, classifiers: list | None = None, projection: Projection | None = None) -> None:
        self.tw = tw
        self.plan = plan
        self.classifiers = classifiers if classifiers is not None else load_classifiers(tw)
        self.projection = projection  # set before the first segment when the plan has a projection
        self.dense_tokens = np.array([t["id"] for t in plan["dense_tokens"]], dtype=np.int64)
        self.dtype = DTYPES[plan["dtype"]]
        self.learning_rates = [c["learning_rate"] for c in plan["checkpoints"]]

    def capture(self, texts, labels, pairs) -> list[TokenGradients]:
        """Every checkpoint's records of the texts (tokenised once when the tokenizers agree)."""
        return capture_checkpoints(self.classifiers, texts, labels, pairs, self.tw.settings, self.tw.device,
                                   chunk_size=len(texts))

    def arrays(self, records: Sequence[TokenGradients]) -> tuple[dict[str, np.ndarray], float]:
        """The segment's arrays from full-precision records, and the scale they are stored at."""
        block = combine_checkpoints(records, self.dense_tokens)
        full = {"dense": block.dense, "rows": block.rows}
        if self.plan.get("projection"):
            if self.projection is None:
                raise IndexBuildError("the plan has a projection but no basis was fitted: call ensure_projection first")
            full["rows_proj"] = block.rows.reshape(block.rows.shape[0], -1) @ self.projection.rows
            full["dense_proj"] = block.dense.reshape(block.num_examples, -1) @ self.projection.dense
        scale = float16_scale(*full.values()) if self.dtype == np.float16 else 1.0
        arrays = {key: (value if scale == 1.0 else value / np.float32(scale)).astype(self.dtype, copy=False)  # float32: no copy
                  for key, value in full.items()}
        arrays.update(tokens=block.tokens, offsets=block.offsets, postings=block.postings,
                      self_influence=self_influence(records, self.learning_rates))
        return arrays, scale

    def build(self, root: Path, number: int, start: int, stop: int, examples: Examples, offset: int = 0) -> dict:
        """Capture rows ``start:stop`` of ``examples`` (global rows ``offset + ...``) and commit the segment."""
        return self.write(root, number, start, stop, examples, *self.prepare(start, stop, examples), offset)

    def prepare(self, start: int, stop: int, examples: Examples) -> tuple[dict[str, np.ndarray], float]:
        """Capture rows ``start:stop`` and lay them out: the segment's arrays and scale."""
        pairs = examples.pairs[start:stop] if examples.pairs is not None else None
        return self.arrays(self.capture(examples.texts[start:stop], examples.labels[start:stop], pairs))

    @staticmethod
    def write(root: Path, number: int, start: int, stop: int, examples: Examples, arrays: dict, scale: float,
              offset: int = 0) -> dict:
        """Write and rename one laid-out segment into place."""
        return write_segment(root, number, offset + start, arrays, examples.table(start, stop), scale)


def ensure_projection(root: Path, plan: dict, builder: SegmentBuilder, examples: Examples) -> Projection | None:
    """The build's projection basis: the one an interrupted run stored, else fitted on a seeded sample and stored."""
    spec = plan.get("projection")
    if not spec:
        return None
    stored = projection_basis.read(root)
    if stored is None:
        rows = projection_basis.probe_rows(len(examples.texts), spec).tolist()
        pairs = [examples.pairs[i] for i in rows] if examples.pairs is not None else None
        records = builder.capture([examples.texts[i] for i in rows], [examples.labels[i] for i in rows], pairs)
        block = combine_checkpoints(records, builder.dense_tokens)
        stored = projection_basis.fit(spec, block.rows.reshape(block.rows.shape[0], -1),
                                      block.dense.reshape(block.num_examples, -1))
        projection_basis.write(root, stored)
    builder.projection = stored
    return stored


def make_plan(tw, classifiers, examples: Examples, label_names, dtype: str, projection_dim, seed: int, segment_size: int,
              projection_method: str = "pca", root: Path | None = None) -> dict:
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
    probe = examples.texts[:DENSE_PROBE]
    probe_pairs = examples.pairs[:DENSE_PROBE] if examples.pairs is not None else None
    ids = final.tokenize(probe, probe_pairs)
    mask = ids.get("attention_mask")
    token_lists = [
        [t for t, m in zip(row.tolist(), (mask[i].tolist() if mask is not None else [1] * len(row))) if m]
        for i, row in enumerate(ids["input_ids"])
    ]
    dense = choose_dense_tokens(token_lists)
    settings = capture_settings_json(tw)
    if settings["keep_special_tokens"] is False:
        dense = dense[~np.isin(dense, sorted(final.special_token_ids))]
    names = list(label_names) if label_names is not None else [str(c) for c in range(final.num_classes)]
    if len(names) != final.num_classes:
        raise IndexBuildError(f"{len(names)} label names for a model with {final.num_classes} classes: pass one name per class")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": {**settings, "dtype": dtype, "segment_size": int(segment_size), "batch_size": tw.settings.batch_size},
        "dtype": dtype,
        "checkpoints": [
            {"path": recorded_path(c.path, root), "learning_rate": float(c.learning_rate)}
            for c in tw.checkpoints
        ],
        "fingerprint": model_fingerprint(classifiers, settings),
        "dense_tokens": [{"id": int(t), "token": s} for t, s in zip(dense.tolist(), final.token_strings(dense.tolist()))],
        "projection": projection,
        "label_names": names,
        "data_sha256": examples.sha256(),
        "num_examples": len(examples.texts),
    }


def segment_ranges(n: int, size: int, first_number: int = 0) -> list[tuple[int, int, int]]:
    """``(segment number, start, stop)`` covering ``n`` examples in runs of ``size``."""
    return [(first_number + i, lo, min(lo + size, n)) for i, lo in enumerate(range(0, n, size))]


def start_or_resume(root: Path, plan: dict) -> list[int]:
    """Record the plan (or check it against an interrupted build's); return the segments already committed."""
    if (root / MANIFEST).exists():
        raise IndexBuildError(f"{str(root)!r} already holds an index: open it, append to it, or delete the folder")
    plan_path = root / BUILD_PLAN
    if plan_path.exists():
        previous = read_json(plan_path, "build plan")
        for key in ("data_sha256", "settings", "fingerprint", "projection", "checkpoints", "dense_tokens"):
            if previous.get(key) != plan.get(key):
                raise IndexBuildError(
                    f"{str(root)!r} holds an interrupted build with a different {key.replace('_', ' ')}: "
                    "rerun with the same inputs to resume, or delete the folder"
                )
    else:
        refuse_foreign_folder(root)
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(plan_path, plan)
    done = committed_segments(root)
    ranges = segment_ranges(plan["num_examples"], plan["settings"]["segment_size"])
    expected = {number: (lo, hi) for number, lo, hi in ranges}
    valid = []
    for number, record in done.items():
        lo_hi = expected.get(number)
        if lo_hi and record.get("start") == lo_hi[0] and record.get("num_examples") == lo_hi[1] - lo_hi[0]:
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


def check_coverage(root: Path, plan: dict, records: list[dict]) -> list[dict]:
    """The records sorted by start; raises `IndexBuildError` unless they are exactly the plan's segments."""
    records = sorted(records, key=lambda r: r["start"])
    ranges = segment_ranges(plan["num_examples"], plan["settings"]["segment_size"])
    expected = [(segment_name(n), lo, hi - lo) for n, lo, hi in ranges]
    got = [(r.get("name"), r.get("start"), r.get("num_examples")) for r in records]
    if got != expected:
        raise IndexBuildError(
            f"the committed segments of {str(root)!r} do not cover the plan exactly "
            f"({len(got)} segments, {len(expected)} planned): rerun the same build to resume it"
        )
    return records


def finish_build(root: Path, plan: dict, records: list[dict]) -> dict:
    """Check the segments cover the plan, write the manifest (durably) and drop the plan: the index is complete."""
    manifest = dict(plan)
    manifest["segments"] = check_coverage(root, plan, records)
    manifest["num_examples"] = sum(r["num_examples"] for r in records)
    if plan.get("projection"):
        folder = root / projection_basis.FOLDER
        manifest["projection"] = {**plan["projection"], "files": {f: file_record(folder / f) for f in projection_basis.FILES}}
    write_bytes_atomic(root / "README.txt", README.encode())
    write_json_atomic(root / MANIFEST, manifest)
    (root / BUILD_PLAN).unlink(missing_ok=True)
    fsync_dir(root)
    return manifest


def build_local(root: Path, tw, examples: Examples, plan: dict, progress: bool, classifiers: list | None = None) -> dict:
    """Build every segment not yet committed, in this process, then commit the manifest.

    ``classifiers``: the checkpoints already loaded (by `make_plan`'s caller), so folders load once.
    """
    refuse_foreign_folder(root)  # before the lock file is created in it
    with writer_lock(root):
        return _build_locked(root, tw, examples, plan, progress, classifiers)


def _build_locked(root: Path, tw, examples: Examples, plan: dict, progress: bool, classifiers: list | None) -> dict:
    from tqdm.auto import tqdm

    done = set(start_or_resume(root, plan))
    ranges = segment_ranges(plan["num_examples"], plan["settings"]["segment_size"])
    todo = [r for r in ranges if r[0] not in done]
    builder = SegmentBuilder(tw, plan, classifiers)
    ensure_projection(root, plan, builder, examples)
    bar = tqdm(total=len(examples.texts), initial=len(examples.texts) - sum(hi - lo for _, lo, hi in todo),
               desc="building index", unit="ex", disable=not progress)
    # Segment i is written (file writes and sha256 release the GIL) while segment i + 1 is captured;
    # at most two segments are in memory. The layout stays in this thread: moved into the writer,
    # it slowed the capture more than it saved (profiled on the TokenCNN of bench_index_build.py).
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
    return finish_build(root, plan, list(committed_segments(root).values()))


def tracin_from_manifest(manifest: dict, root: Path | None = None, checkpoints_from: str | Path | None = None):
    """A TracInWE over the recorded checkpoint folders (relative ones under ``root``), with the recorded settings.

    ``checkpoints_from``: a folder holding the checkpoints (by folder name), for a run that moved.
    """
    from tracinwe.tracin import TracInWE

    paths = checkpoint_folders(manifest, Path(root) if root is not None else Path.cwd(), checkpoints_from)
    s = manifest["settings"]
    keep = s["keep_special_tokens"]
    return TracInWE.from_checkpoints(
        paths, [c["learning_rate"] for c in manifest["checkpoints"]], max_length=s["max_length"], top_k=s["top_k"],
        keep_special_tokens=keep if isinstance(keep, bool) else list(keep), batch_size=s.get("batch_size", 32),
    )
