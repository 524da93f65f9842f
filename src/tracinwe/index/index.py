"""`Index`: a persistent TracIn-WE index: build once, query the top proponents and opponents fast.

Sign convention as everywhere in tracinwe: a score > 0 marks a proponent.
Scores are exact (they equal ``TracInWE.scores`` on the same texts, up to
float32 rounding; float16 indexes score the float16-rounded rows exactly).
A search opens the segment arrays as memory maps and drops them afterwards, so
resident memory does not grow with the index, and searches share no mutable
state: several threads may query one `Index` at once. Appends and builds take
the index's writer lock (`tracinwe.index.lock`); a segment's large files are
hashed on its first touch (`tracinwe.index.integrity`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from tracinwe.capture.records import TokenGradients
from tracinwe.index import documents, projection as projection_basis
from tracinwe.index.append import append_examples, rebased
from tracinwe.index.build import DEFAULT_SEGMENT_SIZE, BuildStrategy, build_index
from tracinwe.index.checkpoint_paths import checkpoint_folders
from tracinwe.index.errors import IndexFormatError, IndexMismatchError
from tracinwe.index.examples import ExampleTables
from tracinwe.index.integrity import LazyChecksums, read_manifest
from tracinwe.index.manifest import IndexManifest
from tracinwe.index.projection import Projection
from tracinwe.index.queries import QUERY_CHUNK, capture_queries, iter_query
from tracinwe.index.search import QueryBlock, SegmentArrays, screen
from tracinwe.index.searcher import SegmentSearcher
from tracinwe.index.segments import validated_examples
from tracinwe.index.storage import compare_fingerprints, model_fingerprint, open_array, verify_files
from tracinwe.models.tasks import CAUSAL_LM
from tracinwe.results import Neighbor, QueryResult, TopInfluences
from tracinwe.scoring.words import word_contributions

#: Segments whose memory maps an open index keeps (least recently used closed first).
OPEN_SEGMENTS = 1024


class Index:
    """A TracIn-WE index on disk. Create with `Index.build`, load with `Index.open`."""

    def __init__(self, path: Path, manifest: IndexManifest, tracin, checks: LazyChecksums | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.tracin = tracin
        self._checks = checks if checks is not None else LazyChecksums(self.path, "none")
        self._lock = threading.Lock()
        self._open: dict[str, SegmentArrays] = {}  # by segment, least recently used first
        self._refresh()

    def _refresh(self) -> None:
        self._segments = self.manifest.segments or ()
        self._examples = ExampleTables(self.path, self._segments, before_read=self._checks.ensure)
        self._projection = projection_basis.read(self.path) if self.manifest.projection is not None else None
        if self.manifest.projection is not None and self._projection is None:
            folder = str(self.path / projection_basis.FOLDER)
            raise IndexFormatError(f"the projection basis in {folder!r} is missing or damaged: rebuild the index")
        self.searcher = SegmentSearcher(self.manifest, self.segment, self._projection)

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def build(
        cls, path: str | Path, tw, train_texts: Sequence, train_labels: Sequence[int | str] | None, *,
        ids: Sequence[str] | None = None, label_names: Sequence[str] | None = None, text_pairs: Sequence[str] | None = None,
        dtype: str = "float32", projection_dim: int | None = None, projection_method: str = "pca", seed: int = 0,
        chunk_size: int | None = None, progress: bool = True, strategy: BuildStrategy | None = None,
    ) -> "Index":
        """Capture every training example at every checkpoint once and store it (resumes an interrupted build).

        ``projection_dim``: also store a ``projection_method`` ("pca", fitted on a
        seeded sample, or "gaussian") projection of the rows to this size, which
        screens large indexes faster; the top candidates are rescored exactly.
        ``strategy``: who builds the segments: `LocalBuild()` (this process, the default) or
        ``tracinwe.index.ray_build.RayBuild(num_workers=...)`` (Ray actors; checkpoint folders only).
        A causal language model (``tw.is_causal_lm``) takes documents (strings, prompt/completion dicts,
        chats) and ``train_labels=None``; the manifest records the task.
        """
        root = Path(path)
        examples = validated_examples(tw, train_texts, train_labels, ids, text_pairs)
        manifest = build_index(root, tw, examples, label_names=label_names, dtype=dtype, projection_dim=projection_dim,
                               projection_method=projection_method, seed=seed,
                               segment_size=chunk_size or DEFAULT_SEGMENT_SIZE, strategy=strategy, progress=progress)
        return cls(root, manifest, tw)

    @classmethod
    def build_from_dataset(cls, path: str | Path, tw, dataset, **kwargs) -> "Index":
        """`build` from a `tracinwe.data.TextDataset` (its ids, label names and pairs)."""
        return cls.build(
            path, tw, dataset.texts, dataset.labels, ids=dataset.ids, label_names=dataset.label_names,
            text_pairs=dataset.text_pairs, **kwargs,
        )

    @classmethod
    def open(cls, path: str | Path, tracin=None, verify: str = "quick", checkpoints_from: str | Path | None = None) -> "Index":
        """Open an index; ``tracin=None`` reloads the recorded checkpoints.

        ``verify``: "quick" checks every file's size and the sha256 of files up to
        16 MB on open, and of larger ones on the first touch of their segment;
        "full" hashes everything on open; "none" skips the checks.
        ``checkpoints_from``: a folder holding the index's checkpoints (by folder
        name), when the run folder moved; the model fingerprint is still checked.
        """
        root = Path(path)
        if not root.is_dir():
            raise IndexFormatError(f"no index at {str(root)!r}: build one with Index.build or `tracinwe index build`")
        manifest = read_manifest(root)
        checks = LazyChecksums(root, verify)
        for record in manifest.segments or ():
            checks.add(record)
        if verify != "none" and manifest.projection is not None:
            verify_files(root / projection_basis.FOLDER, manifest.projection.files or {}, full=True)
        if tracin is None:
            from tracinwe.tracin import TracInWE

            folders = checkpoint_folders(manifest.checkpoints, root, checkpoints_from)
            tracin = TracInWE.from_settings(manifest.settings.capture, folders, manifest.learning_rates)
        elif checkpoints_from is not None:
            raise ValueError("pass tracin= or checkpoints_from=, not both")
        check_task(manifest.task, tracin.task, root)
        compare_fingerprints(manifest.fingerprint, model_fingerprint(tracin.load_classifiers(), tracin.settings))
        return cls(root, manifest, tracin, checks)

    def append(self, texts: Sequence, labels: Sequence[int | str] | None = None, ids: Sequence[str] | None = None,
               text_pairs: Sequence[str] | None = None, progress: bool = False) -> None:
        """Add training examples as new segments, after any another handle appended; the manifest is replaced last.

        A classifier's index needs ``labels``; a causal-LM index takes documents and ``labels=None``.
        """
        manifest = append_examples(self, texts, labels, ids, text_pairs)
        with self._lock:
            self.manifest = manifest
            self._refresh()

    def adopt(self, disk: IndexManifest) -> None:
        """Take the manifest on disk when it only grew from this handle's (`IndexBuildError` otherwise)."""
        for record in rebased(self.manifest, disk):
            self._checks.add(record)
        with self._lock:
            self.manifest = disk
            self._refresh()

    # -- stored examples -------------------------------------------------------------------

    def __len__(self) -> int:
        return self.manifest.num_examples

    @property
    def is_causal_lm(self) -> bool:
        """Whether the index holds causal-LM documents (no labels) rather than labelled classifier texts."""
        return self.manifest.task == CAUSAL_LM

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest.label_names)

    @property
    def projection_dim(self) -> int | None:
        p = self.manifest.projection
        return p.dim if p is not None else None

    @property
    def projection(self) -> Projection | None:
        """The stored projection basis (None without one)."""
        return self._projection

    def column_names(self) -> list[str]:
        """The stored columns: id, text, label and text_pair when the index has pairs."""
        return self._examples.column_names()

    def column(self, column: str, rows=None) -> list:
        """A stored column at global ``rows`` (all rows when None), in the order given."""
        return self._examples.column(column, rows)

    def columns(self, names: Sequence[str], rows=None) -> list[list]:
        """Stored columns at global ``rows`` (all rows when None), in the order given, read together."""
        return self._examples.columns(names, rows)

    def texts(self, rows=None) -> list[str]:
        return self.column("text", rows)

    def labels(self, rows=None) -> list[int]:
        """Stored labels; -1 for every document of a causal-LM index (it has none)."""
        if self.is_causal_lm:
            return [-1] * (len(self) if rows is None else int(np.asarray(rows).size))
        return self.column("label", rows)

    def examples(self, rows=None) -> list:
        """The stored examples as the model takes them: texts, or a causal LM's documents (dicts and chats included)."""
        if not self.is_causal_lm:
            return self.texts(rows)
        return documents.decoded(self.texts(rows), self.column(documents.EXAMPLE_COLUMN, rows))

    def ids(self, rows=None) -> list[str]:
        return self.column("id", rows)

    # -- search ------------------------------------------------------------------------------

    def segment(self, number: int, projected: bool = False) -> SegmentArrays:
        """Segment ``number``'s arrays, memory-mapped (its large files are hashed on the first touch).

        The bounds, postings and sketch of the last `OPEN_SEGMENTS` segments used stay open (a query touches every
        segment: opening ten memory maps per segment cost a 1M-example index ~30 ms per query); the gradient rows
        are mapped afresh on every call, so the pages a search reads from them are not held after it.
        """
        record = self._segments[number]
        seg = self._kept_open(number)
        fresh = ("rows", "dense", "rows_proj", "dense_proj") if projected else ("rows", "dense")
        return dataclasses.replace(seg, **{name: open_array(self.path, record, name) for name in fresh})

    def _kept_open(self, number: int) -> SegmentArrays:
        """Segment ``number``'s arrays that stay open (`segment`), opened (and checked) on first use."""
        record = self._segments[number]
        self._checks.ensure(record)
        key = record.name
        with self._lock:
            seg = self._open.pop(key, None)
            if seg is not None:
                self._open[key] = seg  # now the most recently used
        if seg is None:
            seg = self._open_segment(record)
            with self._lock:
                self._open[key] = seg
                while len(self._open) > OPEN_SEGMENTS:
                    self._open.pop(next(iter(self._open)))
        return seg

    def token_ids(self, rows) -> list[list[int]] | None:
        """Each of ``rows``' token ids as the model tokenised it at build time (padding dropped), in the order given;
        None when a segment of these rows does not store them (indexes built before they were kept)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out: list = [None] * rows.size
        for number, at, local in self.searcher.by_segment(rows):
            seg = self._kept_open(number)
            if seg.example_tokens is None:
                return None
            bounds = seg.example_token_offsets[np.stack([local, local + 1])].tolist()
            for i, lo, hi in zip(at.tolist(), bounds[0], bounds[1]):
                out[i] = seg.example_tokens[lo:hi].tolist()
        return out

    def _open_segment(self, record) -> SegmentArrays:
        """The segment's arrays that stay open (the gradient rows are left empty); plain array views of the maps,
        which slice faster than `np.memmap` objects."""
        def mapped(name: str) -> np.ndarray:
            return np.asarray(open_array(self.path, record, name))

        seg = SegmentArrays(
            record.start, record.num_examples, open_array(self.path, record, "tokens", mmap=False),
            open_array(self.path, record, "offsets", mmap=False), mapped("postings"), rows=np.zeros(0), dense=np.zeros(0),
            scale=record.scale,
        )
        if "row_norms.npy" in record.files:  # older indexes have none: they search without pruning
            seg.row_norms, seg.dense_norms = mapped("row_norms"), mapped("dense_norms")
        if "example_tokens.npy" in record.files:  # indexes built before them tokenise the found examples again
            seg.example_tokens, seg.example_token_offsets = mapped("example_tokens"), mapped("example_token_offsets")
        if "dense_sketch.npy" in record.files:  # indexes built before the sketch bound the dense block less tightly
            seg.dense_basis = open_array(self.path, record, "dense_basis", mmap=False)
            seg.dense_sketch, seg.dense_residual = mapped("dense_sketch"), mapped("dense_residual")
        return seg

    def query_block(self, records: Sequence[TokenGradients], projected: bool = False) -> QueryBlock:
        """The captured queries in the index layout, learning-rate weighted (and projected)."""
        return self.searcher.query_block(records, projected)

    def search(self, records: Sequence, k: int = 10, candidates: int | None = None,
               use_projection: bool | None = None, prune: bool | None = None) -> TopInfluences:
        """Top-k proponents/opponents (rows, exact scores) of queries (`SegmentSearcher.search`).

        ``records``: captured queries (``index.tracin.capture(...)``, one `TokenGradients` per checkpoint) or the
        query examples themselves (a causal LM's documents; a classifier's texts, explained at their predictions).
        ``prune`` (default: on when the index stores row norms) skips postings that cannot reach the top k, same result.
        """
        if not all(isinstance(r, TokenGradients) for r in records):
            records = capture_queries(self.tracin, *self.tracin.check_inputs(records, None, None, "test"))
        return self.searcher.search(records, k, candidates, use_projection, prune)

    # -- the user-facing calls ----------------------------------------------------------------

    def query(self, test_texts: Sequence[str], test_labels: Sequence[int | str] | None = None, k: int = 10,
              words: int | None = 5, test_pairs: Sequence[str] | None = None, candidates: int | None = None,
              use_projection: bool | None = None, chunk_size: int = QUERY_CHUNK,
              prune: bool | None = None) -> list[QueryResult]:
        """Top-k proponents and opponents per test text, with exact scores and their top ``words`` shared words.

        ``words=0`` lists no words (fastest); ``words=None`` lists every shared word.

        Texts are captured and scored ``chunk_size`` at a time; `iter_query` yields the results as they come.
        """
        return list(self.iter_query(test_texts, test_labels, k, words, test_pairs, candidates, use_projection, chunk_size,
                                    prune))

    def iter_query(self, test_texts: Sequence[str], test_labels: Sequence[int | str] | None = None, k: int = 10,
                   words: int | None = 5, test_pairs: Sequence[str] | None = None, candidates: int | None = None,
                   use_projection: bool | None = None, chunk_size: int = QUERY_CHUNK,
                   prune: bool | None = None) -> Iterator[QueryResult]:
        """`query`'s results one at a time: memory bounded by ``chunk_size``, not by the number of texts."""
        return iter_query(self, test_texts, test_labels, k, words, test_pairs, candidates, use_projection, chunk_size, prune)

    def scores(self, test_texts: Sequence[str], test_labels: Sequence[int | str] | None = None,
               test_pairs: Sequence[str] | None = None) -> np.ndarray:
        """The full (n_test, len(index)) score matrix; equals ``index.tracin.scores`` on the stored texts."""
        q = self.query_block(self.tracin.capture(test_texts, test_labels, test_pairs), False)
        out = np.zeros((q.n, len(self)))
        for number, record in enumerate(self._segments):
            block = screen(self.segment(number), q, projected=False, fast_half=False)
            out[:, record.start : record.start + record.num_examples] = block.T
        return out

    def self_influence(self) -> np.ndarray:
        """Each stored example's influence on itself (len(index),): high values flag mislabels."""
        parts = []
        for record in self._segments:
            self._checks.ensure(record)
            parts.append(np.asarray(open_array(self.path, record, "self_influence", mmap=False)))
        return np.concatenate(parts) if parts else np.zeros(0)

    def suspicious(self, k: int = 20, words: int = 5) -> list[Neighbor]:
        """The k examples of highest self-influence (score = self-influence), with their heaviest tokens."""
        s = self.self_influence()
        rows = np.lexsort((np.arange(s.size), -s))[:k]
        texts, labels, ids = self.texts(rows), self.labels(rows), self.ids(rows)
        names = self.label_names
        out = []
        for j, r in enumerate(rows.tolist()):
            heavy = self._own_tokens(r)[:words] if words > 0 else []
            label = int(labels[j])
            out.append(Neighbor(r, ids[j], float(s[r]), texts[j], label, names[label] if label >= 0 else "", heavy))
        return out

    def _own_tokens(self, row: int) -> list:
        """The example's tokens by their share of its self-influence (lr-weighted squared norms)."""
        s, _, local = next(self.searcher.by_segment(np.array([row])))
        seg = self.segment(s)
        lrs = np.array(self.manifest.learning_rates)
        totals: dict[int, float] = {}
        dense = np.asarray(seg.dense[int(local[0])], dtype=np.float64) * seg.scale  # (C, T, d)
        for t, v in zip(self.manifest.dense_token_ids, np.einsum("c,ctd->t", lrs, dense**2).tolist()):
            if v:
                totals[t] = v
        hit = np.flatnonzero(np.asarray(seg.postings) == local[0])
        tokens = seg.tokens[np.searchsorted(seg.offsets, hit, side="right") - 1]
        values = np.einsum("c,hcd->h", lrs, (np.asarray(seg.rows[hit], dtype=np.float64) * seg.scale) ** 2)
        for t, v in zip(tokens.tolist(), values.tolist()):
            totals[t] = v
        final = self.tracin.final
        batch = final.tokenize(self.examples([row]))
        ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
        return word_contributions(totals, final.token_strings(sorted(totals)), ids, ids)


def check_task(recorded: str, actual: str, root: Path) -> None:
    """One-line `IndexMismatchError` when the facade's model is not of the task the index was built for."""
    if recorded != actual:
        raise IndexMismatchError(
            f"the index {str(root)!r} was built for a {recorded} model but the facade holds a {actual} model: "
            "open it with the checkpoints it was built with"
        )
