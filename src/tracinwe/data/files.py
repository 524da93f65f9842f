"""Load user data: CSV / TSV / JSON-lines / Parquet tables and HuggingFace datasets."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
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


def _lines(fh: Iterable[str], path: Path) -> Iterator[str]:
    """The lines of ``fh``; a truncated or corrupt compressed file is a one-line `DataError`."""
    n = 0
    try:
        for line in fh:
            n += 1
            yield line
    except EOFError:
        raise DataError(f"{path.name} is truncated at line {n + 1} (the compressed data ends early); "
                        "re-download or re-compress it") from None
    except OSError as e:  # gzip.BadGzipFile, bz2 "Invalid data stream", zlib errors
        raise DataError(f"{path.name} cannot be decompressed at line {n + 1} ({e}); "
                        "re-download or re-compress it") from None


def _read_columns(path: Path, fmt: str) -> tuple[dict[str, list[Any]], list[str]]:
    """A table as column-major lists (rows lacking a column get ``None``) and where each row is.

    Rows count from 1; CSV/TSV and JSON-lines rows also name their line in the file
    (header counted), as editors number them.
    """
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return ({name: table.column(name).to_pylist() for name in table.column_names},
                [f"row {i}" for i in range(1, table.num_rows + 1)])
    with _open_text(path) as fh:
        if fmt in ("csv", "tsv"):
            return _read_csv(_lines(fh, path), "," if fmt == "csv" else "\t", path)
        lines = list(_lines(fh, path))
    records, rows = _parse_json(lines, path)
    names: list[str] = []
    for r in records:
        names.extend(k for k in r if k not in names)
    return {n: [r.get(n) for r in records] for n in names}, rows


def _read_csv(lines: Iterable[str], delimiter: str, path: Path) -> tuple[dict[str, list[Any]], list[str]]:
    """CSV/TSV with a header line; blank lines are skipped (as ``csv.DictReader`` does)."""
    reader = csv.reader(lines, delimiter=delimiter)
    names = next(reader, None)
    if names is None:
        return {}, []
    if not names:
        raise DataError(f"line 1 of {path.name} is blank; the first line must name the columns (e.g. text,label)")
    records: list[list[str]] = []
    rows: list[str] = []
    start = reader.line_num + 1
    for record in reader:
        if record:
            records.append(record)
            rows.append(f"row {len(records)} (line {start})")
        start = reader.line_num + 1
    columns = {n: [r[j] if j < len(r) else None for r in records] for j, n in enumerate(names)}
    return columns, rows


def _parse_json(lines: list[str], path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """JSON lines (one object a line), or one JSON array of objects; and where each record is."""
    content = "".join(lines)
    stripped = content.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise DataError(f"{path.name} is not valid JSON ({e}); fix the file") from None
        if not isinstance(records, list):
            raise DataError(f"{path.name} is not a JSON array of objects; fix the file")
        rows = [f"record {i}" for i in range(1, len(records) + 1)]
    else:
        records, rows = [], []
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
            rows.append(f"row {len(records)} (line {lineno})")
    for r, where in zip(records, rows):
        if not isinstance(r, dict):
            raise DataError(f"{where} of {path.name} is a {type(r).__name__}, not a JSON object")
    return records, rows


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
                  ids: Sequence[str] | None = None,
                  rows: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Turn raw label values into class indices and label names.

    Strings map to ``label_names`` order when given, else to their sorted
    unique values; integers (also ``"3"``) are used as indices as they are.
    ``rows`` names each row in messages (e.g. ``"row 2 (line 3)"``); default ``"row i"``.
    """

    def row(i: int) -> str:
        name = rows[i] if rows is not None else f"row {i}"
        return name + (f" (id {ids[i]!r})" if ids is not None and ids[i] != str(i) else "")

    for i, v in enumerate(raw):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise DataError(f"{row(i)} of {where}: label is missing; fill it in or remove the row")
        if isinstance(v, float) and not math.isfinite(v):
            raise DataError(f"{row(i)} of {where}: label is {v} (a number that is not a class); "
                            "write the class name or index, or remove the row")
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
                f"({', '.join(names)}); fix the row or add the label to label_names"
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
                class_names: Sequence[str] | None = None, rows: Sequence[str] | None = None) -> TextDataset:
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
    labels, names = encode_labels(raw_labels, names, where, ids, rows)
    return TextDataset(texts=list(texts), labels=labels, label_names=list(names),
                       text_pairs=None if pairs is None else list(pairs), ids=ids, name=name,
                       extra=extra).validate(rows)


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
        columns, rows = _read_columns(path, fmt)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path.name} as UTF-8 {fmt}: {e}; re-save it as UTF-8") from None
    if not columns:
        raise DataError(f"{path.name} is empty; write a header line (e.g. text,label) and one row per example"
                        if fmt in ("csv", "tsv") else f"{path.name} is empty; write one record per example")
    if not rows:
        raise DataError(f"{path.name} has no rows" + (" (only the header line)" if fmt in ("csv", "tsv") else "")
                        + "; add one row per example")
    return _to_dataset(columns, path.name, name or path.name, text_column, label_column,
                       text_pair_column, label_names, id_column, extra_columns, rows=rows)


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
