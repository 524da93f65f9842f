"""`IndexManifest`: what an index folder holds and how it was made, typed; JSON only at the edges.

The manifest (``manifest.json``) and the build plan (``build-plan.json``, the
same minus the segments) are read with `IndexManifest.from_json` and written
with `to_json`; index code reads fields, never string keys. The JSON layout is
format version 2, unchanged, so indexes written before this class still open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from tracinwe.capture.gradients import CaptureSettings
from tracinwe.index.errors import IndexFormatError

FORMAT = "tracinwe-index"
FORMAT_VERSION = 2
#: What a manifest may name: segment folders and the files inside them.
SEGMENT_NAME = re.compile(r"seg-[0-9]{6,}")
FILE_NAME = re.compile(r"[a-z_]+\.(npy|parquet)")
_DAMAGED = "rebuild the index"


@dataclass(frozen=True)
class FileRecord:
    """A file's sha256 and size in bytes."""

    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}


def _files(raw: dict, owner: str) -> dict[str, FileRecord]:
    for name in raw:
        if not FILE_NAME.fullmatch(name):
            raise IndexFormatError(f"the index manifest names file {name!r} {owner}, not an index file: {_DAMAGED}")
    return {name: FileRecord(str(f["sha256"]), int(f["bytes"])) for name, f in raw.items()}


@dataclass(frozen=True)
class SegmentRecord:
    """One committed segment: its folder name, first global row, size, scale and files (also its ``segment.json``)."""

    name: str
    start: int
    num_examples: int
    nnz: int
    scale: float
    files: dict[str, FileRecord]

    def to_json(self) -> dict:
        return {"name": self.name, "start": self.start, "num_examples": self.num_examples, "nnz": self.nnz,
                "scale": self.scale, "files": {k: f.to_json() for k, f in self.files.items()}}

    @classmethod
    def from_json(cls, raw: dict) -> "SegmentRecord":
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not SEGMENT_NAME.fullmatch(name):
            raise IndexFormatError(f"the index manifest names segment {name!r}, not a segment name (seg-NNNNNN): {_DAMAGED}")
        return cls(name, int(raw["start"]), int(raw["num_examples"]), int(raw.get("nnz", 0)), float(raw.get("scale", 1.0)),
                   _files(raw.get("files", {}), f"in segment {name}"))


@dataclass(frozen=True)
class ProjectionSpec:
    """The projection a build stores: size ``dim``, ``method`` ("pca"/"gaussian"), seed, probe size, basis files."""

    dim: int
    method: str
    seed: int
    probe: int
    files: dict[str, FileRecord] | None = None

    def to_json(self) -> dict:
        out = {"dim": self.dim, "method": self.method, "seed": self.seed, "probe": self.probe}
        if self.files is not None:
            out["files"] = {k: f.to_json() for k, f in self.files.items()}
        return out

    @classmethod
    def from_json(cls, raw: dict | None) -> "ProjectionSpec | None":
        if not raw:
            return None
        files = _files(raw["files"], "of the projection") if "files" in raw else None
        return cls(int(raw["dim"]), str(raw.get("method", "gaussian")), int(raw["seed"]), int(raw.get("probe", 1)), files)


@dataclass(frozen=True)
class IndexSettings:
    """How the stored gradients were captured (`CaptureSettings`) and stored (dtype, segment size)."""

    capture: CaptureSettings
    dtype: str = "float32"
    segment_size: int = 4096

    def to_json(self) -> dict:
        return {**self.capture.identity(), "dtype": self.dtype, "segment_size": self.segment_size,
                "batch_size": self.capture.batch_size}

    @classmethod
    def from_json(cls, raw: dict) -> "IndexSettings":
        keep = raw.get("keep_special_tokens", True)
        capture = CaptureSettings(top_k=raw.get("top_k"), keep_special_tokens=keep if isinstance(keep, bool) else frozenset(keep),
                                  batch_size=int(raw.get("batch_size", 32)), max_length=int(raw.get("max_length", 128)),
                                  precision=str(raw.get("precision", "float32")))
        return cls(capture, str(raw.get("dtype", "float32")), int(raw.get("segment_size", 4096)))


@dataclass(frozen=True)
class ModelFingerprint:
    """What identifies the model of an index: each checkpoint's weights' sha256, the tokenizer, sizes, capture settings.

    ``tokenizer`` holds the model's JSON fingerprint parts; ``settings`` is `CaptureSettings.identity`.
    """

    weights_sha256: tuple[str, ...]
    tokenizer: dict
    num_classes: int
    vocab_size: int
    settings: dict

    def to_json(self) -> dict:
        return {"weights_sha256": list(self.weights_sha256), "tokenizer": self.tokenizer, "num_classes": self.num_classes,
                "vocab_size": self.vocab_size, "settings": self.settings}

    @classmethod
    def from_json(cls, raw: dict | None) -> "ModelFingerprint | None":
        if not raw:
            return None
        return cls(tuple(raw["weights_sha256"]), dict(raw["tokenizer"]), int(raw["num_classes"]), int(raw["vocab_size"]),
                   dict(raw["settings"]))


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint folder (relative to the index folder, or absolute; None: an in-memory model) and its learning rate."""

    path: str | None
    learning_rate: float


@dataclass(frozen=True)
class DenseToken:
    """A token present in nearly every example, stored densely."""

    id: int
    token: str


@dataclass(frozen=True)
class IndexManifest:
    """Everything that decides an index; ``segments`` is None in a build plan (nothing committed yet).

    ``fingerprint`` is None only for indexes written without a model (synthetic benchmarks, tests).
    ``task``: "classification" or "causal-lm" (indexes written before the field are classification);
    a causal-LM index stores no labels and has no label names.
    """

    settings: IndexSettings
    checkpoints: tuple[CheckpointRecord, ...]
    fingerprint: ModelFingerprint | None
    dense_tokens: tuple[DenseToken, ...]
    label_names: tuple[str, ...]
    num_examples: int
    projection: ProjectionSpec | None = None
    data_sha256: str | None = None
    segments: tuple[SegmentRecord, ...] | None = field(default=None)
    task: str = "classification"

    @property
    def dtype(self) -> str:
        return self.settings.dtype

    @property
    def learning_rates(self) -> list[float]:
        return [c.learning_rate for c in self.checkpoints]

    @property
    def dense_token_ids(self) -> list[int]:
        return [t.id for t in self.dense_tokens]

    def with_segments(self, segments, num_examples: int | None = None, **changes) -> "IndexManifest":
        """A copy holding ``segments`` (and ``num_examples``, default their total)."""
        segments = tuple(segments)
        total = sum(s.num_examples for s in segments) if num_examples is None else num_examples
        return replace(self, segments=segments, num_examples=total, **changes)

    def plan(self) -> "IndexManifest":
        """The build plan of this manifest: no segments, no projection files."""
        proj = replace(self.projection, files=None) if self.projection is not None else None
        return replace(self, segments=None, projection=proj)

    def to_json(self) -> dict:
        out = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "settings": self.settings.to_json(),
            "dtype": self.dtype,
            "checkpoints": [{"path": c.path, "learning_rate": c.learning_rate} for c in self.checkpoints],
            "fingerprint": self.fingerprint.to_json() if self.fingerprint is not None else None,
            "dense_tokens": [{"id": t.id, "token": t.token} for t in self.dense_tokens],
            "projection": self.projection.to_json() if self.projection is not None else None,
            "label_names": list(self.label_names),
            "data_sha256": self.data_sha256,
            "num_examples": self.num_examples,
        }
        if self.segments is not None:
            out["segments"] = [s.to_json() for s in self.segments]
        return out

    @classmethod
    def from_json(cls, raw: dict, where: str = "the index") -> "IndexManifest":
        """Parse a manifest or plan; raises `IndexFormatError` for another format, version or unsafe names."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            found = (raw.get("format"), raw.get("format_version")) if isinstance(raw, dict) else (None, None)
            raise IndexFormatError(
                f"{where} is not a tracinwe index of format version {FORMAT_VERSION} "
                f"(found {found[0]!r} v{found[1]}): rebuild it with this version"
            )
        segments = raw.get("segments")
        try:
            settings = IndexSettings.from_json({**raw.get("settings", {}), "dtype": raw.get("dtype", "float32")})
            return cls(
                settings=settings,
                checkpoints=tuple(CheckpointRecord(c.get("path"), float(c["learning_rate"])) for c in raw["checkpoints"]),
                fingerprint=ModelFingerprint.from_json(raw.get("fingerprint")),
                dense_tokens=tuple(DenseToken(int(t["id"]), str(t["token"])) for t in raw.get("dense_tokens", [])),
                label_names=tuple(raw.get("label_names", [])),
                num_examples=int(raw["num_examples"]),
                projection=ProjectionSpec.from_json(raw.get("projection")),
                data_sha256=raw.get("data_sha256"),
                segments=tuple(SegmentRecord.from_json(s) for s in segments) if segments is not None else None,
                task=str(raw.get("task", "classification")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IndexFormatError(f"the manifest of {where} is damaged ({type(exc).__name__}: {exc}): {_DAMAGED}") from None
