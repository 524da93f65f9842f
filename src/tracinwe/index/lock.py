"""One writer at a time: builds and appends hold an exclusive lock on ``INDEX/.lock``.

The lock is an ``fcntl.flock`` on a file inside the index folder, so it is
released by the kernel when its holder exits, even by ``kill -9``. Readers
(queries) take no lock: a commit only ever adds files and replaces the
manifest atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


@contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Hold the index's writer lock (waits for another writer to finish); creates ``root`` if needed."""
    import fcntl

    from tracinwe.io import fsync_dir

    root = Path(root)
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        fsync_dir(root.parent)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
