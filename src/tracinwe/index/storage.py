"""The index directory on disk: segments, manifest, checksums, model fingerprint.

Layout::

    INDEX/
      manifest.json          format version, settings, checkpoints, fingerprint,
                             dense tokens, projection, segments with sha256 + size of every file
      README.txt             what this directory is
      .lock                  the writer lock builds and appends hold (`tracinwe.index.lock`)
      segments/seg-000000/   one run of examples (committed by an atomic rename)
        examples.parquet     id, text, [text_pair], label
        segment.json         start, counts, checksums of the files below
        dense.npy            (n, C, T, d)     rows of the dense tokens ([CLS]/[SEP])
        tokens.npy           (U,) int32       sorted token ids of the postings
        offsets.npy          (U+1,) int64     token u owns postings[offsets[u]:offsets[u+1]]
        postings.npy         (nnz,) int32     local example of each entry
        rows.npy             (nnz, C, d)      gradient rows / scale (float32, or float16 with a
                                              power-of-two scale per segment that keeps them in range)
        self_influence.npy   (n,) float64     sum_c lr_c ||G_c||^2 at full precision
        row_norms.npy        (nnz, C) float32 ||row|| per checkpoint (of the stored values), and
        dense_norms.npy      (n, C, T)        of the dense rows: search bounds (absent in older indexes)
        dense_basis.npy      (C*T*d, p) f64   the dense rows' principal directions (p <= 16), and per example
        dense_sketch.npy     (n, p) float32   their coordinates and
        dense_residual.npy   (n,) float32     the norm of the rest: tight dense bounds (`tracinwe.index.sketch`;
                                              absent in older indexes)
        rows_proj.npy        (nnz, p)         optional projection (PCA or seeded Gaussian)
        dense_proj.npy       (n, p)           of the rows above
      projection/            rows.npy (C*d, p), dense.npy (C*T*d, p): the projection's basis

Nothing is written in place: files go to a temporary name, are fsynced and are
renamed (`tracinwe.io`); the manifest is written last.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import threading
from mmap import ACCESS_COPY, MADV_DONTNEED, mmap as memory_map
from pathlib import Path

import numpy as np

from tracinwe.capture.gradients import CaptureSettings
from tracinwe.index.errors import IndexBuildError, IndexFormatError, IndexMismatchError
from tracinwe.index.manifest import FileRecord, ModelFingerprint, SegmentRecord
from tracinwe.io import fsync_dir, fsync_file, rename_durably, write_json_atomic

__all__ = ["IndexBuildError", "IndexFormatError", "IndexMismatchError", "write_json_atomic"]

MANIFEST = "manifest.json"
BUILD_PLAN = "build-plan.json"
SEGMENTS = "segments"
ARRAYS = ("dense", "tokens", "offsets", "postings", "rows", "self_influence")
PROJECTED = ("rows_proj", "dense_proj")
#: Written since the pruned search; an index without them still searches exactly, without pruning.
NORMS = ("row_norms", "dense_norms")
#: ``verify="quick"`` hashes files up to this size on open; larger ones are size-checked on open
#: and hashed on the first touch of their segment.
QUICK_HASH_LIMIT = 16 << 20

README = """This directory is a TracIn-WE index built by tracinwe (https://pypi.org/project/tracinwe).
Open it with `tracinwe.index.Index.open(path)` or query it with `tracinwe query PATH TEXT`.
manifest.json records the format, the settings, the checkpoints, a fingerprint of the model
and tokenizer, and the sha256 of every file. Scores: > 0 proponent, < 0 opponent.
"""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise IndexFormatError(f"{what} {str(path)!r} is missing: rebuild the index") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{what} {str(path)!r} is corrupted ({exc}): rebuild the index") from None


def segment_name(number: int) -> str:
    return f"seg-{number:06d}"


def write_segment(root: Path, number: int, start: int, arrays: dict[str, np.ndarray], examples_table,
                  scale: float = 1.0) -> SegmentRecord:
    """Write one segment into a temporary folder, checksum it, and rename it into place.

    ``scale``: the stored gradient arrays hold ``value / scale`` (a power of two
    that keeps float16 rows in range). Returns the segment record for the
    manifest. An existing folder of that name (a leftover of an interrupted
    run) is replaced.
    """
    import pyarrow.parquet as pq

    segments = root / SEGMENTS
    if not segments.is_dir():
        segments.mkdir(parents=True, exist_ok=True)
        fsync_dir(root)
    name = segment_name(number)
    tmp = segments / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files: dict[str, FileRecord] = {}
    for key, array in arrays.items():
        files[f"{key}.npy"] = save_array(tmp / f"{key}.npy", array)
    pq.write_table(examples_table, tmp / "examples.parquet")
    fsync_file(tmp / "examples.parquet")
    files["examples.parquet"] = file_record(tmp / "examples.parquet")
    record = SegmentRecord(name, int(start), int(examples_table.num_rows), int(arrays["postings"].shape[0]), float(scale), files)
    with open(tmp / "segment.json", "w") as f:
        json.dump(record.to_json(), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    final = segments / name
    if final.exists():  # a leftover no manifest references (writers hold the lock)
        shutil.rmtree(final)
    rename_durably(tmp, final)
    return record


def committed_segments(root: Path) -> dict[int, SegmentRecord]:
    """Segments whose folder was renamed into place (a finished write), by number."""
    out = {}
    folder = root / SEGMENTS
    if not folder.is_dir():
        return out
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("seg-") and (entry / "segment.json").is_file():
            try:
                record = SegmentRecord.from_json(json.loads((entry / "segment.json").read_text()))
            except (json.JSONDecodeError, IndexFormatError):
                continue
            out[int(entry.name[4:])] = record
    return out


def remove_stray(root: Path, keep: set[str]) -> None:
    """Delete temporary folders and segments not listed in ``keep`` (interrupted writes).

    Call it holding the writer lock, with ``keep`` = every segment the manifest
    (or build plan) on disk references: nothing else can be in use.
    """
    folder = root / SEGMENTS
    if not folder.is_dir():
        return
    removed = False
    for entry in folder.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
            removed = True
    if removed:
        fsync_dir(folder)


def save_array(path: Path, array: np.ndarray) -> FileRecord:
    """``np.save`` that hashes the bytes as it writes them (no second read); returns the file's record."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    data = memoryview(array.reshape(-1)).cast("B") if array.size else memoryview(b"")
    with open(path, "wb") as f:
        for part in (header.getbuffer(), data):
            digest.update(part)  # releases the GIL on large buffers
            f.write(part)
        size = f.tell()
        f.flush()
        os.fsync(f.fileno())
    return FileRecord(digest.hexdigest(), size)


def file_record(path: Path) -> FileRecord:
    """What the manifest records of a file: its sha256 and size."""
    return FileRecord(sha256_file(path), path.stat().st_size)


def verify_files(folder: Path, files: dict[str, FileRecord], full: bool) -> list[str]:
    """Raise `IndexFormatError` naming the first missing, truncated or corrupted file of ``folder``.

    Unless ``full``, files over `QUICK_HASH_LIMIT` are only size-checked: returns their names.
    """
    unhashed = []
    for fname, info in files.items():
        path = folder / fname
        if not path.is_file():
            raise IndexFormatError(f"index file {str(path)!r} is missing: rebuild the index or restore the file")
        size = path.stat().st_size
        if size != info.bytes:
            raise IndexFormatError(
                f"index file {str(path)!r} is truncated or damaged ({size} bytes, {info.bytes} expected): rebuild the index"
            )
        if not (full or size <= QUICK_HASH_LIMIT):
            unhashed.append(fname)
        elif sha256_file(path) != info.sha256:
            raise IndexFormatError(f"index file {str(path)!r} is corrupted (sha256 mismatch): rebuild the index")
    return unhashed


def verify_segment(root: Path, record: SegmentRecord, full: bool) -> list[str]:
    """Raise `IndexFormatError` naming the first missing, truncated or corrupted file of a segment.

    Returns the files left unhashed (over `QUICK_HASH_LIMIT`, unless ``full``).
    """
    return verify_files(root / SEGMENTS / record.name, record.files, full)


#: Held while a .npy header is parsed: NumPy parses it with ``ast.literal_eval``, and ``ast.parse`` in several threads
#: at once can raise ``SystemError: AST constructor recursion depth mismatch`` (CPython 3.11.7 here: eight threads
#: opening a fresh index's segments hit it).
_HEADER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4096)
def _npy_header(path: str, size: int, mtime_ns: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """dtype, shape and data offset of a .npy file (parsed once: parsing is slower than mapping)."""
    with _HEADER_LOCK, open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise ValueError("Fortran-ordered arrays are not part of the index format")
        return dtype, shape, f.tell()


def open_array(root: Path, record: SegmentRecord, key: str, mmap: bool = True) -> np.ndarray:
    """A segment array: memory-mapped (copy-on-write, never written) or read into memory."""
    path = root / SEGMENTS / record.name / f"{key}.npy"
    try:
        if not mmap:  # the small arrays: read whole, under the header lock
            with _HEADER_LOCK:
                return np.load(path, allow_pickle=False)
        stat = path.stat()
        dtype, shape, offset = _npy_header(str(path), stat.st_size, stat.st_mtime_ns)
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype)
        # a copy-on-write map is a writable view (torch takes it without warnings); nothing is ever written. A plain
        # ndarray over the map opens and slices without np.memmap's per-call Python wrapper
        with open(path, "rb") as f:
            mapped = memory_map(f.fileno(), 0, access=ACCESS_COPY)
        return np.ndarray(shape, dtype, buffer=mapped, offset=offset)
    except (ValueError, TypeError, OSError, EOFError) as exc:
        raise IndexFormatError(f"index file {str(path)!r} cannot be read ({exc}): rebuild the index") from None


def release_pages(array: np.ndarray) -> None:
    """Unmap the pages read from a memory-mapped array (`open_array`) from this process: they stay in the page cache
    and a later read maps them again, but they no longer count as resident. Arrays read into memory are left alone."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memory_map):
        base.madvise(MADV_DONTNEED)


def read_examples(root: Path, record: SegmentRecord):
    import pyarrow.parquet as pq

    path = root / SEGMENTS / record.name / "examples.parquet"
    try:  # one file: ParquetFile reads it without importing pyarrow.dataset (~0.16 s of a fresh process's first query)
        with pq.ParquetFile(path) as table:
            return table.read()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise IndexFormatError(f"index file {str(path)!r} cannot be read ({exc}): rebuild the index") from None


def model_fingerprint(classifiers, settings: CaptureSettings) -> ModelFingerprint:
    """sha256 of every checkpoint's weights, the tokenizer vocabulary hash and the capture settings."""
    import torch

    weights = []
    for clf in classifiers:
        digest = hashlib.sha256()
        for name, tensor in sorted(clf.module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            if t.numel():
                digest.update(t.view(torch.uint8).numpy())  # the buffer itself, no copy
        weights.append(digest.hexdigest())
    final = classifiers[-1]
    parts = dict(final.fingerprint_parts())
    parts.pop("tokenizer", None)  # a folder name, not an identity
    return ModelFingerprint(tuple(weights), json.loads(json.dumps(parts)), int(final.num_classes), int(final.vocab_size),
                            settings.identity())


def compare_fingerprints(recorded: ModelFingerprint | None, actual: ModelFingerprint) -> None:
    """Raise `IndexMismatchError` saying what differs between the index's model and the one given."""
    if recorded is None:
        raise IndexMismatchError("the index records no model (it was written without one): it cannot check this model")
    if recorded.tokenizer != actual.tokenizer:
        raise IndexMismatchError(
            f"the tokenizer differs from the one the index was built with ({recorded.tokenizer} vs "
            f"{actual.tokenizer}): query with the index's own tokenizer"
        )
    if recorded.settings != actual.settings:
        raise IndexMismatchError(
            f"capture settings {actual.settings} differ from the index's {recorded.settings}: "
            "use the settings recorded in the manifest"
        )
    rec_w, act_w = recorded.weights_sha256, actual.weights_sha256
    if len(rec_w) != len(act_w):
        raise IndexMismatchError(
            f"{len(act_w)} checkpoints given, the index was built with {len(rec_w)}: pass the same checkpoints")
    for c, (a, b) in enumerate(zip(rec_w, act_w)):
        if a != b:
            raise IndexMismatchError(
                f"checkpoint {c} has different weights from the one the index was built with: "
                "query with the recorded checkpoints (Index.open(path) reloads them)"
            )
