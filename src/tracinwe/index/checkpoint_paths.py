"""Where an index finds its checkpoints: recorded relative to the index folder, re-pointable when a run moves.

New indexes record each checkpoint folder relative to the index folder, so a run
folder and index moved together still open; older indexes hold absolute paths,
still read. ``checkpoints_from=DIR`` finds each checkpoint in ``DIR`` by its
folder name (the model fingerprint check still applies).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tracinwe.errors import CheckpointError
from tracinwe.index.manifest import CheckpointRecord

MOVED_HINT = "if the run folder moved, pass checkpoints_from=RUN_DIR (CLI: --checkpoints-from RUN_DIR)"


def recorded_path(checkpoint: Path | None, root: Path | None) -> str | None:
    """The path the manifest records: relative to the index folder when it can be, else absolute."""
    if checkpoint is None:
        return None
    absolute = Path(checkpoint).resolve()
    if root is None:
        return str(absolute)
    try:
        return os.path.relpath(absolute, Path(root).resolve())
    except ValueError:  # another drive (Windows): no relative path exists
        return str(absolute)


def checkpoint_folders(checkpoints: Sequence[CheckpointRecord], root: Path,
                       checkpoints_from: str | Path | None = None) -> list[Path]:
    """The recorded checkpoint folders (raises `CheckpointError` saying how to fix a missing one)."""
    recorded = [c.path for c in checkpoints]
    if any(p is None for p in recorded):
        raise CheckpointError("this index was built from in-memory models: open it with Index.open(path, tracin=tw)")
    if checkpoints_from is not None:
        base = Path(checkpoints_from)
        folders = [base / Path(p).name for p in recorded]
        for p, folder in zip(recorded, folders):
            if not folder.is_dir():
                raise CheckpointError(
                    f"checkpoint folder {Path(p).name!r} of the index is not in {str(base)!r}: pass the run folder that holds it"
                )
        return folders
    folders = [Path(p) if Path(p).is_absolute() else Path(os.path.normpath(Path(root) / p)) for p in recorded]
    for p, folder in zip(recorded, folders):
        if not folder.is_dir():
            raise CheckpointError(f"the index's checkpoint {p!r} is missing (looked at {str(folder)!r}): {MOVED_HINT}")
    return folders
