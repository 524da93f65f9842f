"""Atomic, durable file writes, used everywhere: a temporary file in the same folder, fsync, rename, fsync the folder.

Readers see the old file or the new one, never a mix, and after a power loss a
name that was committed points at data that reached the disk. The index
commits through these helpers too (data files, then their folders, then the
manifest and the index folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (the names created, renamed or removed in it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; nothing more can be done there
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file of ``folder`` (not recursive), then the folder itself."""
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_file():
            fsync_file(entry)
    fsync_dir(folder)


def rename_durably(tmp: str | Path, final: str | Path) -> None:
    """Atomically rename ``tmp`` (already fsynced) to ``final`` and fsync the parent directory."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None], suffix: str = "") -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        rename_durably(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: object, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=indent, default=_json_default))


def save_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` through a temporary file and an atomic rename."""
    return write_atomic(path, lambda f: np.save(f, array), ".npy")


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` (uncompressed) through a temporary file and an atomic rename."""
    return write_atomic(path, lambda f: np.savez(f, **arrays), ".npz")


def save_figure_atomic(figure, path: str | Path, **savefig_kwargs) -> Path:
    """A matplotlib figure saved as PNG through a temporary file and an atomic rename."""
    return write_atomic(path, lambda f: figure.savefig(f, format="png", **savefig_kwargs), ".png")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
