"""One segment of an index: the validated examples, and capturing + laying out + writing a run of them.

`SegmentBuilder` holds every checkpoint's classifier (loaded once) and the
plan; the local build, an append and each Ray actor run the same builder, so
a segment is the same bytes wherever it was made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracinwe.capture.gradients import capture_checkpoints_with_tokens
from tracinwe.capture.records import TokenGradients
from tracinwe.capture.sequences import TokenSequences
from tracinwe.index import documents, projection as projection_basis
from tracinwe.index.errors import IndexBuildError
from tracinwe.index.layout import combine_checkpoints, float16_scale, self_influence
from tracinwe.index.manifest import IndexManifest, SegmentRecord
from tracinwe.index.projection import Projection
from tracinwe.index.sketch import dense_sketch
from tracinwe.index.storage import write_segment

DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class Examples:
    """The training examples of a build or append (validated).

    ``labels`` is None for a causal language model: its examples are documents (strings,
    prompt/completion dicts, chats) stored as `tracinwe.index.documents` describes.
    """

    texts: list
    labels: list[int] | None
    ids: list[str]
    pairs: list[str] | None

    @property
    def is_causal_lm(self) -> bool:
        return self.labels is None

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for i, (t, e) in enumerate(zip(self.texts, self.ids)):
            y = self.labels[i] if self.labels is not None else ""
            p = self.pairs[i] if self.pairs is not None else ""
            digest.update(f"{e}\x1f{y}\x1f{documents.canonical(t)}\x1f{p}\x1e".encode())
        return digest.hexdigest()

    def part(self, rows: Sequence[int]) -> tuple[list, list[int] | None, list[str] | None]:
        """``(texts, labels, pairs)`` at ``rows``, as the capture takes them."""
        labels = [self.labels[i] for i in rows] if self.labels is not None else None
        pairs = [self.pairs[i] for i in rows] if self.pairs is not None else None
        return [self.texts[i] for i in rows], labels, pairs

    def table(self, lo: int, hi: int):
        import pyarrow as pa

        columns = {"id": pa.array(self.ids[lo:hi], pa.string())}
        if self.labels is None:  # a language model: the readable text and the example itself, no label
            columns["text"] = pa.array([documents.display_text(t) for t in self.texts[lo:hi]], pa.string())
            columns[documents.EXAMPLE_COLUMN] = pa.array([documents.encoded(t) for t in self.texts[lo:hi]], pa.string())
            return pa.table(columns)
        columns["text"] = pa.array(self.texts[lo:hi], pa.string())
        columns["label"] = pa.array(self.labels[lo:hi], pa.int64())
        if self.pairs is not None:
            columns["text_pair"] = pa.array(self.pairs[lo:hi], pa.string())
        return pa.table(columns)


def validated_examples(tw, texts, labels, ids=None, text_pairs=None, existing_ids: set[str] | None = None) -> Examples:
    """Check texts, labels, pairs (`TracInWE.check_inputs`) and ids (unique, also against ``existing_ids``).

    A causal language model takes documents and no labels (``labels`` must be None); a classifier needs labels.
    """
    texts, labels, pairs = tw.check_inputs(texts, labels, text_pairs, "train")
    if labels is None and not tw.is_causal_lm:
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


def row_norms(stored: np.ndarray, chunk: int = 1 << 13) -> np.ndarray:
    """Per-checkpoint L2 norms over the last axis of the stored rows (float64 sums, stored as float32).

    They bound every product in a search (Cauchy-Schwarz, `tracinwe.index.pruning`). Chunks of 8,192 rows keep the
    float64 copy at 8 MB for rows of 128, which malloc reuses; at 65,536 rows each 64 MB copy was mapped afresh and
    page-faulted in (`bench_index_build.py --threads 2`, TokenCNN: build 4,685 -> 5,038 ex/s with this change).
    """
    flat = stored.reshape(-1, stored.shape[-1])
    out = np.empty(flat.shape[0], dtype=np.float32)
    for lo in range(0, flat.shape[0], chunk):
        part = flat[lo : lo + chunk].astype(np.float64)
        out[lo : lo + chunk] = np.sqrt(np.einsum("nd,nd->n", part, part))
    return out.reshape(stored.shape[:-1])


class SegmentBuilder:
    """Captures and writes segments of ``plan`` with the checkpoints' classifiers loaded once."""

    def __init__(self, plan: IndexManifest, classifiers: list, device: str | None = None,
                 projection: Projection | None = None) -> None:
        self.plan = plan
        self.classifiers = classifiers
        self.device = device
        self.projection = projection  # set before the first segment when the plan has a projection
        self.dense_tokens = np.array(plan.dense_token_ids, dtype=np.int64)
        self.dtype = DTYPES[plan.dtype]

    def capture(self, texts, labels, pairs, keep_tokens: bool = True) -> tuple[list[TokenGradients], TokenSequences | None]:
        """Every checkpoint's records of the texts (tokenised once when the tokenizers agree), and the texts' token ids
        (None where the capture did not keep its batches, or ``keep_tokens`` is False)."""
        return capture_checkpoints_with_tokens(self.classifiers, texts, labels, pairs, self.plan.settings.capture,
                                               self.device, chunk_size=len(texts), keep_tokens=keep_tokens)

    def arrays(self, records: Sequence[TokenGradients],
               tokens: TokenSequences | None = None) -> tuple[dict[str, np.ndarray], float]:
        """The segment's arrays from full-precision records, and the scale they are stored at; with ``tokens``, each
        example's token ids too (``example_tokens``, ``example_token_offsets``: the positions of its words at query
        time, without tokenising it again)."""
        block = combine_checkpoints(records, self.dense_tokens)
        full = {"dense": block.dense, "rows": block.rows}
        if self.plan.projection is not None:
            if self.projection is None:
                raise IndexBuildError("the plan has a projection but no basis was fitted: call ensure_projection first")
            full["rows_proj"] = block.rows.reshape(block.rows.shape[0], -1) @ self.projection.rows
            full["dense_proj"] = block.dense.reshape(block.num_examples, -1) @ self.projection.dense
        scale = float16_scale(*full.values()) if self.dtype == np.float16 else 1.0
        arrays = {key: (value if scale == 1.0 else value / np.float32(scale)).astype(self.dtype, copy=False)  # float32: no copy
                  for key, value in full.items()}
        arrays.update(tokens=block.tokens, offsets=block.offsets, postings=block.postings,
                      self_influence=self_influence(records, self.plan.learning_rates),
                      row_norms=row_norms(arrays["rows"]), dense_norms=row_norms(arrays["dense"]),
                      **dense_sketch(arrays["dense"]))
        if tokens is not None:
            arrays.update(example_token_offsets=tokens[0], example_tokens=tokens[1])
        return arrays, scale

    def build(self, root: Path, number: int, start: int, stop: int, examples: Examples, offset: int = 0) -> SegmentRecord:
        """Capture rows ``start:stop`` of ``examples`` (global rows ``offset + ...``) and commit the segment."""
        return self.write(root, number, start, stop, examples, *self.prepare(start, stop, examples), offset)

    def prepare(self, start: int, stop: int, examples: Examples) -> tuple[dict[str, np.ndarray], float]:
        """Capture rows ``start:stop`` and lay them out: the segment's arrays and scale."""
        return self.arrays(*self.capture(*examples.part(range(start, stop))))

    @staticmethod
    def write(root: Path, number: int, start: int, stop: int, examples: Examples, arrays: dict, scale: float,
              offset: int = 0) -> SegmentRecord:
        """Write and rename one laid-out segment into place."""
        return write_segment(root, number, offset + start, arrays, examples.table(start, stop), scale)

    def ensure_projection(self, root: Path, examples: Examples) -> Projection | None:
        """The build's projection basis: the one an interrupted run stored, else fitted on a seeded sample and stored."""
        spec = self.plan.projection
        if spec is None:
            return None
        stored = projection_basis.read(root)
        if stored is None:
            probe = examples.part(projection_basis.probe_rows(len(examples.texts), spec).tolist())
            records, _ = self.capture(*probe, keep_tokens=False)  # the sample fits the basis; its ids are not stored
            block = combine_checkpoints(records, self.dense_tokens)
            stored = projection_basis.fit(spec, block.rows.reshape(block.rows.shape[0], -1),
                                          block.dense.reshape(block.num_examples, -1))
            projection_basis.write(root, stored)
        self.projection = stored
        return stored
