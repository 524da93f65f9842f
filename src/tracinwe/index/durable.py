"""Durable writes for the index: every file and directory reaches the disk before the manifest names it.

A commit is durable when its data files are fsynced, then the directory that
holds them (so their names survive a crash), then the manifest and the index
directory. Every index write goes through these helpers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (the names created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; nothing more can be done there
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file of ``folder`` (not recursive), then the folder itself."""
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_file():
            fsync_file(entry)
    fsync_dir(folder)


def rename_durably(tmp: Path, final: Path) -> None:
    """Atomically rename ``tmp`` (already fsynced) to ``final`` and fsync the parent directory."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary file, fsync it, rename it into place and fsync the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    rename_durably(tmp, path)


def write_json_atomic(path: Path, payload: dict) -> None:
    """`write_bytes_atomic` of ``payload`` as indented JSON."""
    write_bytes_atomic(path, json.dumps(payload, indent=2, sort_keys=False).encode())
