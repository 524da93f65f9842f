"""The stored training examples (id, text, label, [text_pair]): one Parquet table per segment."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from tracinwe.index.manifest import SegmentRecord
from tracinwe.index.storage import read_examples

#: Bytes of example tables kept in memory (the least recently read go first): 1M short texts take ~120 MB.
CACHE_BYTES = 512 << 20


class ExampleTables:
    """Row access across segments; the tables read last are kept, up to `CACHE_BYTES` (thread-safe)."""

    def __init__(self, path, segments: Sequence[SegmentRecord], cached: int | None = None,
                 before_read: Callable[[SegmentRecord], None] | None = None) -> None:
        """``cached``: bytes of tables kept (default `CACHE_BYTES`); ``before_read(record)``: called before a segment's
        table is read (its checksum check)."""
        self.path = path
        self.before_read = before_read
        self.segments = segments
        self.starts = np.array([s.start for s in segments], dtype=np.int64)
        self.total = sum(s.num_examples for s in segments)
        self.cached = CACHE_BYTES if cached is None else cached
        self._tables: dict[str, object] = {}
        self._lock = threading.Lock()

    def table(self, number: int):
        name = self.segments[number].name
        with self._lock:
            table = self._tables.pop(name, None)
            if table is not None:
                self._tables[name] = table  # now the most recently used
        if table is None:
            if self.before_read is not None:
                self.before_read(self.segments[number])
            table = read_examples(self.path, self.segments[number])
            with self._lock:
                self._tables[name] = table
                while len(self._tables) > 1 and sum(t.nbytes for t in self._tables.values()) > self.cached:
                    self._tables.pop(next(iter(self._tables)))
        return table

    def column_names(self) -> list[str]:
        return self.table(0).column_names if self.segments else []

    def column(self, column: str, rows=None) -> list:
        """Values of ``column`` at global ``rows`` (all rows when None), in the order given."""
        return self.columns([column], rows)[0]

    def columns(self, names: Sequence[str], rows=None) -> list[list]:
        """Values of each of ``names`` at global ``rows`` (all rows when None), in the order given: one read per
        segment for all of them."""
        if rows is None:
            return [[v for i in range(len(self.segments)) for v in self.table(i).column(c).to_pylist()] for c in names]
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.total):
            raise IndexError(f"row out of range for an index of {self.total} examples")
        seg = np.searchsorted(self.starts, rows, side="right") - 1
        out: list[list] = [[None] * rows.size for _ in names]
        for s in np.unique(seg):
            at = np.flatnonzero(seg == s).tolist()
            taken = self.table(int(s)).select(list(names)).take(rows[at] - self.starts[s])
            for column, name in zip(out, names):
                for i, v in zip(at, taken.column(name).to_pylist()):
                    column[i] = v
        return out
