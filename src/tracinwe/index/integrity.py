"""Checks before use: the manifest's format and names, and each segment's checksums.

``verify="quick"`` hashes small files when the index opens and only size-checks
large ones (opening stays fast); `LazyChecksums` hashes a segment's large files
before the first read of that segment, once, so a corrupted file is refused before
any query reads it. A query touches every segment, so the first touch starts the
hashing of all of them, side by side (`HASH_THREADS`): the first query of a fresh
process (every `tracinwe query`) waits for one segment's hash, not for each
in turn. The hashing threads are daemons: a process that read one segment and
ends does not wait for the rest of the index to be hashed.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from pathlib import Path

from tracinwe.index.manifest import IndexManifest, SegmentRecord
from tracinwe.index.storage import MANIFEST, SEGMENTS, read_json, verify_files, verify_segment

VERIFY_MODES = ("quick", "full", "none")
#: Threads hashing the segments' large files once the first is touched (hashlib releases the GIL while it hashes);
#: None: one per usable core, at most 4.
HASH_THREADS: int | None = None


def hash_threads() -> int:
    """Threads hashing segments side by side: `HASH_THREADS`, or one per usable core (at most 4)."""
    from tracinwe.capture.batching import usable_cores

    return max(1, HASH_THREADS if HASH_THREADS is not None else min(4, usable_cores()))


def read_manifest(root: Path) -> IndexManifest:
    """The index manifest on disk, checked for its format and for names outside the index."""
    return IndexManifest.from_json(read_json(Path(root) / MANIFEST, "index manifest"), repr(str(root)))


class LazyChecksums:
    """Per segment, the sha256 of the files not hashed on open, checked before its first read (once, thread-safe).

    The first `ensure` starts hashing every pending segment in a small thread pool, in segment order; each `ensure`
    waits for its own segment's result (a corrupted file raises there, for every caller, every time).
    """

    def __init__(self, root: Path, verify: str = "none") -> None:
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify={verify!r}: pass 'quick', 'full' or 'none'")
        self.root = Path(root)
        self.verify = verify
        self._pending: dict[str, dict] = {}  # segment name -> {file: FileRecord} still to hash
        self._hashing: dict[str, Future] = {}
        self._guard = threading.Lock()

    def add(self, record: SegmentRecord) -> None:
        """Check a segment as ``verify`` says: now ("full"), now and before its first read ("quick"), or not ("none")."""
        if self.verify == "none":
            return
        unhashed = verify_segment(self.root, record, full=self.verify == "full")
        if unhashed:
            with self._guard:
                self._pending[record.name] = {f: record.files[f] for f in unhashed}

    def ensure(self, record: SegmentRecord) -> None:
        """Wait for the segment's remaining files to be hashed (started now if not yet): raises `IndexFormatError`
        naming a corrupted one."""
        name = record.name
        with self._guard:
            if name not in self._pending:
                return
            if name not in self._hashing:
                self._start([n for n in self._pending if n not in self._hashing])
            future = self._hashing[name]
        future.result()
        with self._guard:
            self._pending.pop(name, None)

    def _start(self, names: list[str]) -> None:
        """Hash ``names``' pending files side by side, in order, in daemon threads (called under the guard)."""
        jobs: queue.SimpleQueue = queue.SimpleQueue()
        for name in names:
            self._hashing[name] = Future()
            jobs.put((self.root / SEGMENTS / name, self._pending[name], self._hashing[name]))

        def work() -> None:
            while True:
                try:
                    folder, files, future = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    verify_files(folder, files, full=True)
                except BaseException as error:  # noqa: BLE001 - raised by every `ensure` of the segment
                    future.set_exception(error)
                else:
                    future.set_result(None)

        for _ in range(min(hash_threads(), len(names))):
            threading.Thread(target=work, name="tracinwe-verify", daemon=True).start()
