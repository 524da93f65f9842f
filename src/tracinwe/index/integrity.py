"""Checks before use: the manifest's format and names, and each segment's checksums.

``verify="quick"`` hashes small files when the index opens and only size-checks
large ones (opening stays fast); `LazyChecksums` hashes a segment's large files
on the first touch of that segment, once, so a corrupted file is refused before
any query reads it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tracinwe.index.manifest import IndexManifest, SegmentRecord
from tracinwe.index.storage import MANIFEST, SEGMENTS, read_json, verify_files, verify_segment

VERIFY_MODES = ("quick", "full", "none")


def read_manifest(root: Path) -> IndexManifest:
    """The index manifest on disk, checked for its format and for names outside the index."""
    return IndexManifest.from_json(read_json(Path(root) / MANIFEST, "index manifest"), repr(str(root)))


class LazyChecksums:
    """Per segment, the sha256 of the files not hashed on open, checked on first touch (once, thread-safe)."""

    def __init__(self, root: Path, verify: str = "none") -> None:
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify={verify!r}: pass 'quick', 'full' or 'none'")
        self.root = Path(root)
        self.verify = verify
        self._pending: dict[str, list[str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def add(self, record: SegmentRecord) -> None:
        """Check a segment as ``verify`` says: now ("full"), now and on first touch ("quick"), or not ("none")."""
        if self.verify == "none":
            return
        unhashed = verify_segment(self.root, record, full=self.verify == "full")
        if unhashed:
            with self._guard:
                self._pending[record.name] = unhashed
                self._locks[record.name] = threading.Lock()

    def ensure(self, record: SegmentRecord) -> None:
        """Hash the segment's remaining files unless done: raises `IndexFormatError` naming a corrupted one."""
        name = record.name
        with self._guard:
            lock = self._locks.get(name) if name in self._pending else None
        if lock is None:
            return
        with lock:
            with self._guard:
                files = self._pending.get(name)
            if files is None:  # another thread finished it meanwhile
                return
            verify_files(self.root / SEGMENTS / name, {f: record.files[f] for f in files}, full=True)
            with self._guard:
                self._pending.pop(name, None)
