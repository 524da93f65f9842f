"""One entry point that turns a user's data argument into a ``TextDataset``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .bundled import BUNDLED_DATASETS, BUNDLED_PREFIX, load_bundled
from .dataset import TextDataset
from .errors import DataError
from .files import TABLE_SUFFIXES, load_hf_dataset, load_table, table_format

__all__ = ["load_dataset_source", "describe_source_kind"]


def describe_source_kind(source: str) -> str:
    """``bundled``, ``file``, ``hf-disk`` or ``hf-hub``: how ``source`` would be loaded."""
    if source.startswith(BUNDLED_PREFIX):
        return "bundled"
    path = Path(source).expanduser()
    if path.is_file():
        return "file"
    if path.is_dir():
        return "hf-disk"
    return "hf-hub"


def _bundled(source: str, split: str | None) -> TextDataset:
    name = source[len(BUNDLED_PREFIX):]
    if name not in BUNDLED_DATASETS:
        known = ", ".join(BUNDLED_PREFIX + n for n in BUNDLED_DATASETS)
        raise DataError(f"unknown bundled dataset {source!r}; known: {known}")
    if split in (None, "", "train"):
        return load_bundled(name)
    if f"{name}-{split}" in BUNDLED_DATASETS:  # bundled:20newsgroups + split="test"
        return load_bundled(f"{name}-{split}")
    if name.endswith(f"-{split}"):
        return load_bundled(name)
    raise DataError(
        f"{source} has no {split!r} split; load it whole and use TextDataset.split(), "
        "or pick a bundled *-test set"
    )


def load_dataset_source(source: str | Path, split: str = "train", **columns: Any) -> TextDataset:
    """Load ``source``: ``bundled:NAME``, a table file, a saved HF dataset folder, or a hub name.

    ``columns`` (``text_column``, ``label_column``, ``text_pair_column``,
    ``label_names``, ``id_column``, ``extra_columns``) go to the file / HF
    loaders and are ignored for bundled corpora, whose layout is fixed.
    ``split`` selects the HF split; for bundled sets ``"test"`` picks the
    matching ``*-test`` corpus where there is one.
    """
    source = str(source)
    columns = {k: v for k, v in columns.items() if v is not None}
    kind = describe_source_kind(source)
    if kind == "bundled":
        return _bundled(source, split)
    path = Path(source).expanduser()
    if kind == "file":
        if table_format(path) is None:
            raise DataError(
                f"cannot tell the format of {path.name}; supported suffixes: "
                f"{', '.join(TABLE_SUFFIXES)} (optionally .gz/.bz2)"
            )
        return load_table(path, **columns)
    if kind == "hf-disk":
        return load_hf_dataset(path, split=split, **columns)
    if table_format(path) is not None or source.startswith((".", "/", "~")):
        raise DataError(f"data file {source!r} not found; check the path")
    return load_hf_dataset(source, split=split, **columns)
