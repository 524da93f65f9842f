"""Load user data: CSV / TSV / JSON-lines / Parquet tables and HuggingFace datasets."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .dataset import TextDataset
from .errors import DataError

__all__ = ["load_table", "load_hf_dataset", "TABLE_SUFFIXES", "table_format", "encode_labels"]

TABLE_SUFFIXES: dict[str, str] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".jsonl": "jsonl", ".jsonlines": "jsonl", ".ndjson": "jsonl", ".json": "json",
    ".parquet": "parquet", ".pq": "parquet",
}
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open}
_INT_RE = re.compile(r"[+-]?\d+")
_FLAG = {"text": "--text-column", "label": "--label-column", "text pair": "--text-pair-column"}


def table_format(path: str | Path) -> str | None:
    """``csv``/``tsv``/``jsonl``/``json``/``parquet`` from the suffix (``.gz``/``.bz2`` allowed)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return TABLE_SUFFIXES.get(suffixes[-1]) if suffixes else None


def _open_text(path: Path) -> io.TextIOBase:
    opener = _COMPRESSED.get(path.suffix.lower())
    if opener is not None:
        return opener(path, "rt", encoding="utf-8-sig", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8-sig", newline="")


def _read_columns(path: Path, fmt: str) -> dict[str, list[Any]]:
    """Read a table into column-major lists; rows lacking a column get ``None``."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return {name: table.column(name).to_pylist() for name in table.column_names}
    records: list[dict[str, Any]]
    with _open_text(path) as fh:
        if fmt in ("csv", "tsv"):
            reader = csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t")
            names = list(reader.fieldnames or [])
            records = list(reader)
            return {n: [r.get(n) for r in records] for n in names}
        content = fh.read()
    records = _parse_json(content, path)
    names: list[str] = []
    for r in records:
        names.extend(k for k in r if k not in names)
    return {n: [r.get(n) for r in records] for n in names}


def _parse_json(content: str, path: Path) -> list[dict[str, Any]]:
    """JSON lines (one object a line), or one JSON array of objects."""
    stripped = content.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise DataError(f"{path.name} is not valid JSON ({e}); fix the file") from None
    else:
        records = []
        for lineno, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path.name} line {lineno} is not valid JSON ({e.msg}); "
                    "expected one JSON object per line"
                ) from None
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(f"{path.name} record {i} is a {type(r).__name__}, not a JSON object")
    return records


def _as_int(value: Any) -> int | None:
    """The value as a class index if it is an integer (or integer-like), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    return None


def encode_labels(raw: Sequence[Any], label_names: Sequence[str] | None, where: str,
                  ids: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Turn raw label values into class indices and label names.

    Strings map to ``label_names`` order when given, else to their sorted
    unique values; integers (also ``"3"``) are used as indices as they are.
    """

    def row(i: int) -> str:
        return f"row {i}" + (f" (id {ids[i]!r})" if ids is not None and ids[i] != str(i) else "")

    for i, v in enumerate(raw):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise DataError(f"{row(i)} of {where}: label is missing; fill it in or remove the row")
    names = list(label_names) if label_names is not None else None
    as_ints = [_as_int(v) for v in raw]
    by_name = names is not None and all(str(v).strip() in names for v in raw)
    if raw and not by_name and all(v is not None for v in as_ints):
        labels = [int(v) for v in as_ints]  # type: ignore[arg-type]
        if names is None:
            names = [str(i) for i in range(max(labels) + 1)]
        for i, lab in enumerate(labels):
            if not 0 <= lab < len(names):
                raise DataError(
                    f"{row(i)} of {where}: label {lab} is out of range 0..{len(names) - 1} "
                    f"for label names {names}; fix the row or the label names"
                )
        return labels, names
    values = [str(v).strip() for v in raw]
    if names is None:
        names = sorted(set(values))
    index = {n: i for i, n in enumerate(names)}
    labels = []
    for i, v in enumerate(values):
        if v not in index:
            raise DataError(
                f"{row(i)} of {where}: label {v!r} is not one of the allowed labels "
                f"({', '.join(names)}); fix the row or pass the full --label-names"
            )
        labels.append(index[v])
    return labels, names


def _column(columns: dict[str, list[Any]], name: str, role: str, where: str) -> list[Any]:
    if name not in columns:
        available = ", ".join(columns) or "(none)"
        raise DataError(
            f"column {name!r} not found in {where}; available: {available}. Pass {_FLAG[role]}"
        )
    return columns[name]


def _to_dataset(columns: dict[str, list[Any]], where: str, name: str, text_column: str,
                label_column: str, text_pair_column: str | None, label_names: Sequence[str] | None,
                id_column: str | None, extra_columns: Sequence[str] | None,
                class_names: Sequence[str] | None = None) -> TextDataset:
    texts = _column(columns, text_column, "text", where)
    raw_labels = _column(columns, label_column, "label", where)
    pairs = None
    if text_pair_column is not None:
        pairs = _column(columns, text_pair_column, "text pair", where)
    ids = None
    if id_column is not None:
        if id_column not in columns:
            raise DataError(f"id column {id_column!r} not found in {where}; available: "
                            f"{', '.join(columns)}")
        ids = [str(v) for v in columns[id_column]]
    extra = {}
    for col in extra_columns or ():
        if col not in columns:
            raise DataError(f"extra column {col!r} not found in {where}; available: "
                            f"{', '.join(columns)}")
        extra[col] = list(columns[col])
    names = label_names if label_names is not None else class_names
    labels, names = encode_labels(raw_labels, names, where, ids)
    return TextDataset(texts=list(texts), labels=labels, label_names=list(names),
                       text_pairs=None if pairs is None else list(pairs), ids=ids, name=name,
                       extra=extra).validate()


def load_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               text_pair_column: str | None = None, label_names: Sequence[str] | None = None,
               *, id_column: str | None = None, extra_columns: Sequence[str] | None = None,
               name: str | None = None) -> TextDataset:
    """Load a CSV, TSV, JSON-lines/JSON or Parquet file as a validated ``TextDataset``.

    Rows are kept as they are (no dedupe); ids default to the row number.
    """
    path = Path(path)
    fmt = table_format(path)
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {path.name}; use one of the suffixes "
            f"{', '.join(TABLE_SUFFIXES)} (optionally .gz/.bz2)"
        )
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found; check the path")
    try:
        columns = _read_columns(path, fmt)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path.name} as UTF-8 {fmt}: {e}; re-save it as UTF-8") from None
    return _to_dataset(columns, path.name, name or path.name, text_column, label_column,
                       text_pair_column, label_names, id_column, extra_columns)


def load_hf_dataset(name_or_path: str | Path, split: str = "train", text_column: str = "text",
                    label_column: str = "label", text_pair_column: str | None = None,
                    label_names: Sequence[str] | None = None, *, id_column: str | None = None,
                    extra_columns: Sequence[str] | None = None,
                    **load_kwargs: Any) -> TextDataset:
    """Load one split of a HuggingFace dataset: a ``save_to_disk`` folder or a hub name.

    Integer labels take their names from the ``ClassLabel`` feature when it has them.
    ``load_kwargs`` go to ``datasets.load_dataset`` (e.g. ``name=`` for a config).
    """
    try:
        import datasets
    except ImportError:
        raise DataError("loading HuggingFace datasets needs the datasets package; "
                        "run: pip install datasets") from None
    local = Path(name_or_path).is_dir()
    where = f"HF dataset {str(name_or_path)!r} (split {split!r})"
    try:
        if local:
            ds = datasets.load_from_disk(str(name_or_path))
        else:
            ds = datasets.load_dataset(str(name_or_path), split=split, **load_kwargs)
    except Exception as e:  # datasets raises many types (network, format, missing config)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        hint = ("is it a save_to_disk folder?" if local
                else "check the name, or pass a local file or folder when offline")
        raise DataError(f"could not load {where}: {type(e).__name__}: {first}; {hint}") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"split {split!r} not in {str(name_or_path)!r}; available splits: "
                            f"{', '.join(ds)}. Pass --split")
        ds = ds[split]
    class_names = None
    feature = ds.features.get(label_column)
    if isinstance(feature, datasets.ClassLabel) and feature.names:
        class_names = list(feature.names)
    columns = {c: ds[c] for c in ds.column_names}
    columns = {c: (v if isinstance(v, list) else list(v)) for c, v in columns.items()}
    name = f"{name_or_path}[{split}]"
    return _to_dataset(columns, where, name, text_column, label_column, text_pair_column,
                       label_names, id_column, extra_columns, class_names)
